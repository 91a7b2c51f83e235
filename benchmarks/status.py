"""`octobrixctl status` wall time with 16 printers (target: at most 0.3 s), start-up and work apart.

    sudo .venv/bin/python -m benchmarks.status [--printers 16]

A real systemd container with a network of its own (so its 16 OctoPrints may use any port), octobrix
installed offline by packaging/install.sh from the lab's wheelhouse; every printer is a running
OctoPrint on the virtual printer, Operational, so status really asks systemd and every OctoPrint.
Measured in the same run, each a median of RUNS, all with octobrix's own Python:

- floor:     `python -c pass`, the interpreter alone;
- start-up:  importing what `octobrixctl status` imports (octobrixd.cli and octobrixd.cli.status);
- eager:     the baseline: importing what octobrixctl imported at every start before commands were
             loaded lazily (apply, discover, doctor, kmod, status, the renderers);
- status:    `octobrixctl status`; its work is status minus start-up. /etc/octobrix.toml is unchanged
             since it applied, so status reads the applied farm's view and validates nothing;
- validating: the baseline: `octobrixctl status --config` a root-owned copy of that file, which
             status has no view of: it validates it (pydantic) as it did on every run before views;
- per-unit:  the obvious way to ask systemd, one `systemctl show` per unit;
- systemd:   one `systemctl show` of every unit, as status asks;
- octoprint: every OctoPrint's /api/job asked in parallel by a bare script, as status asks them:
             the OctoPrints' own share of the work, which octobrix cannot make faster;
- urllib:    the baseline: the same script asking through urllib, as status did before loopback_http.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from benchmarks.offline_farm import offline_farm, virtual_printers
from tests.lab.harness.container import Container

RUNS = 9
# A copy of the farm's config, which status has no applied view of.
COPY = "/root/octobrix-copy.toml"
TARGET_SECONDS = 0.3
PYTHON = "/opt/octobrix/bin/python3"
EAGER = (
    "import octobrixd.apply.plan, octobrixd.cli.discover, octobrixd.cli.doctor, octobrixd.cli.kmod,"
    " octobrixd.cli.status, octobrixd.render.tree"
)


# Asks every OctoPrint for its job at once, with the keys octobrix made: status's API part, alone.
# ASK is how one request is made: octobrix's loopback_http, or urllib (the baseline).
ASK_ALL = """
import glob, json
from concurrent.futures import ThreadPoolExecutor
{imports}
def ask(path):
    name = path.rsplit("/", 1)[1].removesuffix(".json")
    key = json.load(open(path))["api_key"]
    port = 5100 + int(name[1:])
    return {ask}
paths = sorted(glob.glob("/var/lib/octobrix/.secrets/p*.json"))
with ThreadPoolExecutor(len(paths)) as pool:
    list(pool.map(ask, paths))
"""
ASK_BARE = ASK_ALL.format(imports="from octobrixd.instances.api import request", ask='request(port, key, "/api/job")')
ASK_URLLIB = ASK_ALL.format(
    imports="import urllib.request",
    ask='urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/api/job", '
    'headers={"X-Api-Key": key}), timeout=5).read()',
)


# CPU seconds of one `octobrixctl status` (its own and its children's, systemctl included), median of
# RUNS, measured inside the container: unlike wall time it hardly moves with the machine's load.
CPU_OF_STATUS = f"""
import resource, statistics, subprocess
samples = []
for _ in range({RUNS}):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["octobrixctl", "status"], stdout=subprocess.DEVNULL, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    samples.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
print(statistics.median(samples))
"""


def load_average() -> float:
    return os.getloadavg()[0]


def median_seconds(box: Container, argv: list[str]) -> float:
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter()
        box.run(argv)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def wait_operational(box: Container, printers: int, timeout: float = 1200) -> None:
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = box.run(["octobrixctl", "status"], check=False).stdout
        if out.count("Operational") == printers:
            return
        time.sleep(5)
    raise RuntimeError(f"not every printer became Operational:\n{out}")


def settle(limit: float, timeout: float = 900) -> None:
    """Wait for the farm's start to be over: sixteen OctoPrints starting keep two cores busy for minutes,
    and status is run on a farm that is up, not on one that is starting."""
    deadline = time.monotonic() + timeout
    while load_average() > limit and time.monotonic() < deadline:
        time.sleep(10)


def measure(printers: int) -> dict[str, float]:
    with offline_farm(virtual_printers(printers)) as box:
        wait_operational(box, printers)
        settle(limit=(os.cpu_count() or 1) / 2)
        # nsenter's own cost is in every figure alike: the floor shows it.
        figures = {
            "load before": load_average(),
            "floor": median_seconds(box, [PYTHON, "-c", "pass"]),
            "start-up": median_seconds(box, [PYTHON, "-c", "import octobrixd.cli.main, octobrixd.cli.status"]),
            "eager": median_seconds(box, [PYTHON, "-c", EAGER]),
            "status": median_seconds(box, ["octobrixctl", "status"]),
        }
        box.run(["cp", "-p", "/etc/octobrix.toml", COPY])
        figures["validating"] = median_seconds(box, ["octobrixctl", "status", "--config", COPY])
        units = " ".join(f"octoprint@p{i:02d}.service" for i in range(printers))
        script = f"for unit in {units}; do systemctl show $unit >/dev/null; done"
        figures["per-unit"] = median_seconds(box, ["sh", "-c", script])
        figures["systemd"] = median_seconds(box, ["sh", "-c", f"systemctl show {units} >/dev/null"])
        figures["octoprint"] = median_seconds(box, [PYTHON, "-c", ASK_BARE])
        figures["urllib"] = median_seconds(box, [PYTHON, "-c", ASK_URLLIB])
        figures["cpu"] = float(box.run([PYTHON, "-c", CPU_OF_STATUS]).stdout)
        figures["load after"] = load_average()
        return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--printers", type=int, default=16)
    args = parser.parse_args()
    f = measure(args.printers)
    work = f["status"] - f["start-up"]
    print(f"octobrixctl status, {args.printers} running printers (median of {RUNS}, same container):")
    verdict = "met" if f["status"] <= TARGET_SECONDS else "MISSED"
    print(f"  status            {f['status']:5.3f} s  (target <= {TARGET_SECONDS} s: {verdict})")
    print(
        f"  validating        {f['validating']:5.3f} s  (before: the config validated at every run; "
        f"{f['validating'] / f['status']:4.1f}x status)"
    )
    print(f"  its CPU time      {f['cpu']:5.3f} s  (status and its systemctl, user + system; load-independent)")
    print(f"  python -c pass    {f['floor']:5.3f} s  (the floor)")
    print(f"  start-up          {f['start-up']:5.3f} s  ({f['start-up'] - f['floor']:5.3f} s above the floor)")
    print(f"  work              {work:5.3f} s  (status minus start-up)")
    print(
        f"  eager imports     {f['eager']:5.3f} s  (before: every command's modules at start; "
        f"start-up now {(f['eager'] - f['floor']) / max(f['start-up'] - f['floor'], 1e-3):4.1f}x less above the floor)"
    )
    print(f"    of which systemd  {f['systemd']:5.3f} s  (one `systemctl show` of all {args.printers} units)")
    print(f"    of which OctoPrint {f['octoprint']:5.3f} s  (a bare script asking every /api/job at once)")
    print(
        f"  the same by urllib {f['urllib']:5.3f} s  (before loopback_http; "
        f"{f['urllib'] / f['octoprint']:4.1f}x the bare socket's)"
    )
    print(
        f"  systemctl show x{args.printers} {f['per-unit']:5.3f} s  (one call per unit, the obvious way; "
        f"ratio to status's one call {f['per-unit'] / f['systemd']:4.1f})"
    )
    cores = os.cpu_count() or 1
    print(f"  load average      {f['load before']:.1f} before, {f['load after']:.1f} after, on {cores} cores")
    if max(f["load before"], f["load after"]) > cores:
        print("  (a busy machine: wall times are not comparable with the target; the CPU time is)")


if __name__ == "__main__":
    main()
