"""A Prometheus scrape of /metrics on a 16-printer farm: its time and the web service's CPU per scrape.

    .venv/bin/python -m benchmarks.metrics [--printers 16] [--delay 0.05] [--idle-seconds 20]

The real web service (`python -m octobrixd.web`) with `[frontdoor] metrics = true`, started as
benchmarks/overview.py starts it (the same loopback stand-ins answering like OctoPrint 1.11 after
--delay, the same `systemctl` stand-in), scraped with the metrics token as Prometheus sends it. Each
sample waits past the overview's 2 s cache, so every scrape asks every OctoPrint; the service's CPU
time (user + system, from /proc) is read before and after each scrape. The baseline, in the same
run: every OctoPrint's /api/job and /api/printer asked one after the other. Then nobody scrapes for
--idle-seconds: the requests the OctoPrints receive meanwhile (none).
"""

from __future__ import annotations

import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from benchmarks.overview import PORT, RUNS, asked_in_turn, farm_arguments, farm_behaviours, start_service
from octobrixd.frontdoor.auth import token_file_text
from tests.octoprint_standin import octoprints

TOKEN = "bench-metrics-token"  # noqa: S105 - the benchmark's own
HEAD = "[frontdoor]\nmetrics = true\n\n"


def cpu_seconds(handle: psutil.Process) -> float:
    times = handle.cpu_times()
    return float(times.user + times.system)


def timed_scrape(handle: psutil.Process, printers: int) -> tuple[float, float]:
    """(seconds, CPU seconds of the service) for one scrape; checks every printer answered it."""
    request = urllib.request.Request(f"http://127.0.0.1:{PORT}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    cpu_before = cpu_seconds(handle)
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - http on loopback
        text = response.read().decode()
    took = time.perf_counter() - started
    cpu = cpu_seconds(handle) - cpu_before
    up = sum(1 for line in text.splitlines() if line.startswith("octobrix_printer_up{") and line.endswith(" 1.0"))
    if up != printers:
        raise RuntimeError(f"only {up} of {printers} printers answered the scrape")
    return took, cpu


def main() -> None:
    args = farm_arguments(idle_seconds=20.0)
    behaviours = farm_behaviours(args.printers, args.delay)
    with tempfile.TemporaryDirectory(prefix="octobrix-bench-") as scratch, octoprints(behaviours) as ports:
        work = Path(scratch)
        (work / "metrics.json").write_text(token_file_text(TOKEN))
        service = start_service(work, ports, HEAD, ("--metrics-token", str(work / "metrics.json")))
        try:
            handle = psutil.Process(service.pid)
            timed_scrape(handle, args.printers)  # the first one imports and warms up
            samples, cpus = [], []
            for _ in range(RUNS):
                time.sleep(2.1)  # past the 2 s cache: every sample asks every OctoPrint
                took, cpu = timed_scrape(handle, args.printers)
                samples.append(took)
                cpus.append(cpu)
            cached, _ = timed_scrape(handle, args.printers)  # a second scraper within the 2 s
            theirs = asked_in_turn(ports)
            time.sleep(3)  # the last scrape's threads are done
            hits_before = sum(b.hits for b in behaviours)
            time.sleep(args.idle_seconds)
            idle_hits = sum(b.hits for b in behaviours) - hits_before
            rss = handle.memory_info().rss / 1_048_576
        finally:
            service.terminate()
            service.wait()
    ours = statistics.median(samples)
    print(
        f"GET /metrics, {args.printers} printers answering in {args.delay * 1000:.0f} ms each: {ours:.3f} s "
        f"(median of {RUNS}, max {max(samples):.3f}; target <= 0.5); asking each in turn: {theirs:.3f} s "
        f"(ratio {theirs / ours:.1f}); a second scraper within 2 s: {cached * 1000:.1f} ms"
    )
    print(
        f"web service CPU per scrape: {statistics.median(cpus) * 1000:.0f} ms (median, max {max(cpus) * 1000:.0f}); "
        f"RSS after the scrapes {rss:.1f} MiB; requests to OctoPrints while nobody scraped for "
        f"{args.idle_seconds:.0f} s: {idle_hits} (target: 0)"
    )


if __name__ == "__main__":
    main()
