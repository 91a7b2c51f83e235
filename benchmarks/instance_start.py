"""An instance's start to HTTP answering, against a plain `octoprint serve` of the same OctoPrint.

    sudo .venv/bin/python -m benchmarks.instance_start [--runs 3]

A farm without internet (benchmarks/offline_farm.py: a container with only its own loopback,
octobrix installed from the wheelhouse) with one virtual printer. Measured in the same container,
each from the start command to the first HTTP answer on its port (any status: OctoPrint's own
start-up placeholder is not HTTP), median of --runs after one warm-up start each:

- octobrix:  `systemctl start octoprint@p00` (the instance as octobrix seeds it);
- plain:     the same venv's `octoprint serve` on a basedir of its own, as the same unprivileged
             user, started by systemd-run: OctoPrint with its own defaults;
- no check:  the instance again with OctoPrint's online check (server.onlineCheck.enabled, which
             octobrix seeds on) turned off in its config.yaml: the check's share of the start.
"""

from __future__ import annotations

import argparse
import statistics

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


# Turns the instance's online check off in its config.yaml, with the venv's own PyYAML.
CHECK_OFF = """
import sys, yaml
path = sys.argv[1]
settings = yaml.safe_load(open(path))
settings["server"]["onlineCheck"]["enabled"] = False
open(path, "w").write(yaml.safe_dump(settings))
"""


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
        box.systemctl("stop", UNIT)
        box.run([f"{VENV}/bin/python", "-c", CHECK_OFF, "/var/lib/octobrix/p00/basedir/config.yaml"])
        unchecked = []
        for _ in range(runs):
            box.systemctl("stop", UNIT)
            unchecked.append(timed_start(box, PORT, ["systemctl", "start", UNIT]))
        return ours, plain, unchecked


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    ours, plain, unchecked = measure(args.runs)
    mine, theirs, off = statistics.median(ours), statistics.median(plain), statistics.median(unchecked)
    print(f"start to HTTP answering, offline farm (median of {args.runs}, same container):")
    print(f"  octobrix instance        {mine:6.2f} s  {ours}")
    print(f"  plain `octoprint serve`  {theirs:6.2f} s  {plain}")
    print(f"  instance, no online check {off:5.2f} s  {unchecked}  (the check's share: {mine - off:5.2f} s)")
    verdict = "met" if mine <= theirs * 1.1 else "MISSED"
    print(f"  ratio {mine / theirs:4.2f} (target: at most plain OctoPrint's, 10 % for noise: {verdict})")


if __name__ == "__main__":
    main()
