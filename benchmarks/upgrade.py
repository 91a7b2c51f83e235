"""How long `octobrixctl upgrade` of one printer takes from the command until the printer is healthy
again (OctoPrint answers as the new version, Operational), and `rollback`, against the usual way in
the same run: `pip install -U octoprint` in the running venv plus a restart. In a lab container with
octobrix installed from this checkout, one virtual printer on port 5602, OctoPrint 1.11.7 -> 1.11.8
from a wheels folder (so the network's speed does not count).

    sudo .venv/bin/python -m benchmarks.upgrade

The first upgrade fills uv's cache with 1.11.8; the second (after a rollback) is the warm one.
"""

from __future__ import annotations

import http.client
import shutil
import tempfile
import time
from pathlib import Path

from tests.lab.harness.container import Container
from tests.lab.harness.farm import pty_farm
from tests.lab.harness.installs import api, wait_operational
from tests.lab.harness.wheelhouse import fill_wheels

NAME = "bench"
PORT = 5602
FRONT_DOOR = 8600
WHEELS = "/srv/wheels"
OLD, NEW = "1.11.7", "1.11.8"
CONFIG = f"""\
[octobrix]
wheels = "{WHEELS}"

[frontdoor]
port = {FRONT_DOOR}

[printers.{NAME}]
virtual = true
port = {PORT}
octoprint = "octoprint=={OLD}"
"""


def timed(box: Container, *argv: str, env: dict[str, str] | None = None) -> float:
    started = time.monotonic()
    result = box.run(list(argv), check=False, timeout=1800, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}")
    return time.monotonic() - started


def healthy(box: Container, version: str, started: float) -> float:
    """Seconds from started until the printer answers as version and is Operational."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if api(box, PORT, NAME, "/api/server")["version"] == version:
                wait_operational(box, NAME, PORT)
                return time.monotonic() - started
        # Refused, reset, OctoPrint's start-up placeholder (not HTTP), not JSON yet.
        except (OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"{NAME} never answered as OctoPrint {version}")


def pip_upgrade_in_place(box: Container) -> float:
    """What OctoPrint's own updater (or a user) does: pip in the running venv, as the instance's user."""
    uid = box.run(["id", "-u", f"octobrix-{NAME}"]).stdout.strip()
    gid = box.run(["id", "-g", f"octobrix-{NAME}"]).stdout.strip()
    started = time.monotonic()
    timed(box, "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
          f"/var/lib/octobrix/{NAME}/venv/bin/python", "-m", "pip", "--disable-pip-version-check", "install",
          "--quiet", "--no-index", "--find-links", WHEELS, "-U", f"octoprint=={NEW}",
          env={"HOME": f"/var/lib/octobrix/{NAME}"})  # fmt: skip
    box.systemctl("restart", f"octoprint@{NAME}.service")
    return healthy(box, NEW, started)


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="octobrix-bench-upgrade-"))
    try:
        with pty_farm(
            scratch, CONFIG, {}, ports=[PORT], front_door_port=FRONT_DOOR,
            before_install=lambda box: fill_wheels(box, WHEELS, OLD),
        ) as box:  # fmt: skip
            wait_operational(box, NAME, PORT)
            first = timed(box, "octobrixctl", "upgrade", NAME)
            healthy(box, NEW, time.monotonic())
            rollback = timed(box, "octobrixctl", "rollback", NAME)
            started = time.monotonic()
            timed(box, "octobrixctl", "upgrade", NAME)  # the warm one
            warm = healthy(box, NEW, started)
            started = time.monotonic()
            rollback_started = timed(box, "octobrixctl", "rollback", NAME, "--no-wait")
            rollback_healthy = healthy(box, OLD, started)
            baseline = pip_upgrade_in_place(box)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"one printer (virtual), OctoPrint {OLD} -> {NEW} from a wheels folder, lab container")
    print(f"{'pip install -U octoprint in place + restart (baseline)':<58} {baseline:6.1f} s")
    print(f"{'octobrixctl upgrade, warm cache: command -> healthy':<58} {warm:6.1f} s  ({warm / baseline:.2f}x)")
    print(f"{'octobrixctl upgrade, first (cache without the new wheel)':<58} {first:6.1f} s")
    print(f"{'octobrixctl rollback (waits until healthy)':<58} {rollback:6.1f} s  ({rollback / baseline:.2f}x)")
    print(f"{'octobrixctl rollback --no-wait: old OctoPrint started':<58} {rollback_started:6.1f} s")
    print(f"{'rollback --no-wait until Operational again':<58} {rollback_healthy:6.1f} s")


if __name__ == "__main__":
    main()
