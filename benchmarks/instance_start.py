"""An instance's start to HTTP answering, against a plain `octoprint serve` of the same OctoPrint.

    sudo .venv/bin/python -m benchmarks.instance_start [--runs 3]

A farm without internet (benchmarks/offline_farm.py: a container with only its own loopback,
octobrix installed from the wheelhouse) with one virtual printer. Measured in the same container,
each from the start command to the first HTTP answer on its port (any status: OctoPrint's own
start-up placeholder is not HTTP), median of --runs after one warm-up start each:

- octobrix:  `systemctl start octoprint@p00` (the instance as octobrix seeds it);
- plain:     the same venv's `octoprint serve` on a basedir of its own, as the same unprivileged
             user, started by systemd-run: OctoPrint with its own defaults;
- checked at start: the instance as octobrix seeded it before: OctoPrint's online check on in its
             config.yaml and without octobrix's plugin that turns it on after start-up, so OctoPrint
             checks (and, offline, waits ~6 s) before its server starts.

The octobrix instance must still check: its log says the check found the farm offline soon after
the start (asserted).
"""

from __future__ import annotations

import argparse
import statistics
import time

from benchmarks.offline_farm import offline_farm, virtual_printers
from tests.lab.harness.container import Container

UNIT = "octoprint@p00.service"
PORT = 5100
PLAIN_PORT = 5300
PLAIN_UNIT = "bench-plain-octoprint"
PLAIN_BASEDIR = "/var/lib/bench-plain-octoprint"
VENV = "/var/lib/octobrix/p00/venv"
USER = "octobrix-p00"
# Runs inside the container: start, then poll the port until an HTTP answer; prints the seconds.
TIMER = """
import http.client, subprocess, sys, time
port, command = int(sys.argv[1]), sys.argv[2:]
started = time.monotonic()
subprocess.run(command, check=True)
while time.monotonic() - started < 300:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/")
        connection.getresponse()
        break
    except (OSError, http.client.HTTPException):
        time.sleep(0.05)
print(f"{time.monotonic() - started:.3f}")
"""


def timed_start(box: Container, port: int, command: list[str]) -> float:
    # Starts counted by StartLimitBurst= would soon refuse the next one: the counter starts afresh.
    box.systemctl("reset-failed", UNIT, check=False)
    out = box.run(["/usr/bin/python3", "-c", TIMER, str(port), *command], timeout=360).stdout
    return float(out.strip().splitlines()[-1])


def plain_command() -> list[str]:
    return [
        "systemd-run", f"--unit={PLAIN_UNIT}", f"--uid={USER}", f"--gid={USER}", f"--setenv=HOME={PLAIN_BASEDIR}",
        f"{VENV}/bin/octoprint", "serve", "--basedir", PLAIN_BASEDIR, "--host", "127.0.0.1", "--port", str(PLAIN_PORT),
    ]  # fmt: skip


# Turns the instance's online check on in its config.yaml, with the venv's own PyYAML.
CHECK_AT_START = """
import sys, yaml
path = sys.argv[1]
settings = yaml.safe_load(open(path))
settings["server"]["onlineCheck"]["enabled"] = True
open(path, "w").write(yaml.safe_dump(settings))
"""
BASEDIR = "/var/lib/octobrix/p00/basedir"
PLUGIN = f"{BASEDIR}/plugins/octobrix_online_check.py"
# OctoPrint's own line when its check finds no internet (octoprint.util.connectivity).
OFFLINE_LINE = "Connectivity changed from online to offline"


def assert_checked_offline(box: Container, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = box.run(["cat", f"{BASEDIR}/logs/octoprint.log"], check=False).stdout
        if OFFLINE_LINE in log:
            return
        time.sleep(1)
    raise AssertionError(f"the instance's online check did not run after its start: no {OFFLINE_LINE!r} in its log")


def measure(runs: int) -> tuple[list[float], list[float], list[float]]:
    with offline_farm(virtual_printers(1)) as box:
        box.run(["install", "-d", "-o", USER, "-g", USER, "-m", "0700", PLAIN_BASEDIR])
        ours, plain = [], []
        for attempt in range(runs + 1):
            box.systemctl("stop", UNIT)
            took = timed_start(box, PORT, ["systemctl", "start", UNIT])
            box.systemctl("stop", PLAIN_UNIT, check=False)
            plain_took = timed_start(box, PLAIN_PORT, plain_command())
            box.systemctl("stop", PLAIN_UNIT, check=False)
            if attempt:  # the first of each is a warm-up (a plain basedir's first start sets it up)
                ours.append(took)
                plain.append(plain_took)
        assert_checked_offline(box)
        box.systemctl("stop", UNIT)
        box.run(["rm", PLUGIN])
        box.run([f"{VENV}/bin/python", "-c", CHECK_AT_START, f"{BASEDIR}/config.yaml"])
        checked = []
        for _ in range(runs):
            box.systemctl("stop", UNIT)
            checked.append(timed_start(box, PORT, ["systemctl", "start", UNIT]))
        return ours, plain, checked


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    ours, plain, checked = measure(args.runs)
    mine, theirs, before = statistics.median(ours), statistics.median(plain), statistics.median(checked)
    print(f"start to HTTP answering, offline farm (median of {args.runs}, same container):")
    print(f"  octobrix instance        {mine:6.2f} s  {ours}")
    print(f"  plain `octoprint serve`  {theirs:6.2f} s  {plain}")
    print(
        f"  checked before start     {before:6.2f} s  {checked}  "
        f"(as octobrix seeded it before: {before - mine:5.2f} s more)"
    )
    verdict = "met" if mine <= theirs * 1.1 else "MISSED"
    print(f"  ratio {mine / theirs:4.2f} (target: at most plain OctoPrint's, 10 % for noise: {verdict})")


if __name__ == "__main__":
    main()
