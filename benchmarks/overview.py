"""The farm overview's data for 16 printers, and the web service's idle footprint.

    .venv/bin/python -m benchmarks.overview [--printers 16] [--delay 0.05] [--idle-seconds 60]

The real web service (`python -m octobrixd.web`, the one octobrix-web.service runs) on 127.0.0.1:8811,
logged in like a browser; its GET /api/farm is timed from request to complete answer. Every printer is
a loopback stand-in answering /api/job and /api/printer like OctoPrint 1.11 (tests/octoprint_standin.py)
after a realistic delay (--delay; an OctoPrint on a small PC answers these in tens of milliseconds), and
`systemctl` is a stand-in script on PATH printing the units' properties as `systemctl show` does (there
is no systemd on the machine the benchmarks run on; its cost is one process start, like the real one's).
The baseline, in the same run: every OctoPrint's /api/job and /api/printer asked one after the other.

Then the service is left alone for --idle-seconds with no browser open: its RSS, its CPU time, and the
requests the OctoPrints received meanwhile (none: nothing is asked while nobody looks).
"""

from __future__ import annotations

import argparse
import contextlib
import http.cookiejar
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil

from octobrixd.config.model import parse_config
from octobrixd.frontdoor.auth import make_login
from octobrixd.web.overview import ask_in_turn
from tests.octoprint_standin import KEY, Behaviour, job_body, octoprints, printer_body

PORT = 8811
RUNS = 9
# Prints what `systemctl show --property=... -- UNIT...` prints for running units.
FAKE_SYSTEMCTL = """#!/bin/sh
now=$(cut -d' ' -f1 /proc/uptime | tr -d .)0000
for unit in "$@"; do
  case "$unit" in -*) continue ;; esac
  printf 'Id=%s\\nLoadState=loaded\\nActiveState=active\\nSubState=running\\nMainPID=4242\\n' "$unit"
  printf 'ActiveEnterTimestampMonotonic=1\\nMemoryCurrent=94371840\\nCPUUsageNSec=1000000000\\n\\n'
done
"""


def farm_toml(ports: list[int], head: str = "") -> str:
    return head + "".join(f"[printers.p{i:02d}]\nvirtual = true\nport = {port}\n\n" for i, port in enumerate(ports))


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the web service exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the web service did not answer on {port}")


def timed_farm(opener: urllib.request.OpenerDirector, printers: int) -> float:
    started = time.perf_counter()
    body = json.loads(opener.open(f"http://127.0.0.1:{PORT}/api/farm", timeout=30).read())
    took = time.perf_counter() - started
    asked = sum(card["asked"] for card in body["printers"])
    if asked != printers:
        raise RuntimeError(f"only {asked} of {printers} printers were asked: {body['summary']}")
    return took


def logged_in() -> urllib.request.OpenerDirector:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    form = urllib.parse.urlencode({"username": "farm", "password": "bench-password", "next": "/"}).encode()
    opener.open(f"http://127.0.0.1:{PORT}/login", data=form, timeout=10).read()
    return opener


def start_service(work: Path, ports: list[int], head: str = "", extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """The web service for a farm of `ports` (config text `head` first), with extra arguments."""
    (work / "bin").mkdir()
    (work / "bin/systemctl").write_text(FAKE_SYSTEMCTL)
    (work / "bin/systemctl").chmod(0o755)
    (work / "farm.toml").write_text(farm_toml(ports, head))
    (work / "login.json").write_text(make_login("farm", "bench-password").to_json())
    (work / "keys.json").write_text(json.dumps({f"p{i:02d}": KEY for i in range(len(ports))}))
    env = dict(os.environ, PATH=f"{work / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    files = ["--config", work / "farm.toml", "--login", work / "login.json", "--keys", work / "keys.json"]
    argv = [sys.executable, "-m", "octobrixd.web", *map(str, files), "--port", str(PORT), "--root", str(work), *extra]
    service = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
    wait_listening(service, PORT)
    return service


def farm_arguments(idle_seconds: float) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--printers", type=int, default=16)
    parser.add_argument("--delay", type=float, default=0.05, help="each stand-in OctoPrint's answer time, seconds")
    parser.add_argument("--idle-seconds", type=float, default=idle_seconds)
    return parser.parse_args()


def farm_behaviours(printers: int, delay: float) -> list[Behaviour]:
    """Every third stand-in prints, the others are idle; each answers after `delay`."""
    return [
        Behaviour(
            job=job_body("Printing", f"part{i}.gcode", 10.0 + i, 3600) if i % 3 == 0 else job_body(),
            printer=printer_body(printing=i % 3 == 0),
            delay=delay,
        )
        for i in range(printers)
    ]


def asked_in_turn(ports: list[int]) -> float:
    """The baseline: the median time of asking every stand-in OctoPrint one after the other."""
    config = parse_config(farm_toml(ports), "farm.toml")
    baseline = []
    for _ in range(RUNS):
        started = time.perf_counter()
        ask_in_turn(config, lambda _n: KEY)
        baseline.append(time.perf_counter() - started)
    return statistics.median(baseline)


def main() -> None:
    args = farm_arguments(idle_seconds=60.0)
    behaviours = farm_behaviours(args.printers, args.delay)
    with tempfile.TemporaryDirectory(prefix="octobrix-bench-") as scratch, octoprints(behaviours) as ports:
        service = start_service(Path(scratch), ports)
        try:
            opener = logged_in()
            samples = []
            for _ in range(RUNS):
                time.sleep(2.1)  # past the 2 s cache: every sample asks every OctoPrint
                samples.append(timed_farm(opener, args.printers))
            cached = timed_farm(opener, args.printers)  # a second tab within the 2 s
            theirs = asked_in_turn(ports)

            handle = psutil.Process(service.pid)
            time.sleep(3)  # the last answer's threads are done
            hits_before = sum(b.hits for b in behaviours)
            cpu_before = handle.cpu_times()
            wakeups_before = handle.num_ctx_switches().voluntary
            time.sleep(args.idle_seconds)
            cpu_after = handle.cpu_times()
            idle_cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
            wakeups = handle.num_ctx_switches().voluntary - wakeups_before
            idle_hits = sum(b.hits for b in behaviours) - hits_before
            rss = handle.memory_info().rss / 1_048_576
        finally:
            service.terminate()
            service.wait()
    ours = statistics.median(samples)
    print(
        f"GET /api/farm, {args.printers} printers answering in {args.delay * 1000:.0f} ms each: {ours:.3f} s "
        f"(median of {RUNS}, max {max(samples):.3f}; target <= 0.3); asking each in turn: {theirs:.3f} s "
        f"(ratio {theirs / ours:.1f}); a second tab within 2 s: {cached * 1000:.1f} ms"
    )
    print(
        f"web service with no browser open for {args.idle_seconds:.0f} s: RSS {rss:.1f} MiB (target <= 40), "
        f"CPU {idle_cpu:.3f} s and {wakeups} wake-ups of its main thread (target: none), "
        f"requests to OctoPrints meanwhile: {idle_hits} (target: 0)"
    )


if __name__ == "__main__":
    main()
