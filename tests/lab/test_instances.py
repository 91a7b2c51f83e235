"""Printer instances for real: octobrix installed by its own installer into a systemd container,
two OctoPrints (the virtual printer and a simulated Marlin on a pty), each isolated from the other.

The container has no udev and no USB, so the second printer is a pty that a small simulator
inside the container serves at /dev/octobrix/bench (see harness/farm.py).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from octobrixd.config.model import default_door_port
from tests.lab.harness import installs
from tests.lab.harness.container import Container
from tests.lab.harness.farm import pty_farm, simulator_log
from tests.lab.harness.guest_probe import octoprint_pid
from tests.lab.harness.waiting import wait_until

pytestmark = pytest.mark.lab

CONFIG = """\
[printers.demo]
virtual = true
port = 5000

[printers.bench]
serial = "PRN0001"
port = 5001
baudrate = 250000
"""
PORTS = {"demo": 5000, "bench": 5001}


api = installs.OctoPrints(PORTS).api


def wait_operational(box: Container, name: str) -> dict[str, Any]:
    return installs.wait_operational(box, name, PORTS[name])


@pytest.fixture(scope="module")
def farm(lab_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    workdir = Path(tmp_path_factory.mktemp("farm", numbered=True))
    # Its OctoPrints listen on 5000 and 5001 of the shared network, like test_install's demo printer.
    with pty_farm(workdir, CONFIG, {"bench": 0.0}) as box:
        yield box


def test_install_starts_both_instances_and_says_where(farm: Container) -> None:
    for name in ("demo", "bench"):
        assert farm.wait_active(f"octoprint@{name}.service", timeout=60) == "active", farm.journal(
            f"octoprint@{name}.service"
        )
    assert farm.is_active("octobrixd.service") == "active", farm.journal("octobrixd.service")


def test_each_instance_reaches_operational_on_its_own_printer(farm: Container) -> None:
    demo = wait_operational(farm, "demo")
    bench = wait_operational(farm, "bench")
    assert demo["current"]["port"] == "VIRTUAL"
    assert bench["current"]["port"] == "/dev/octobrix/bench"
    assert bench["current"]["baudrate"] == 250000
    # The simulated board really was talked to, by the bench instance.
    # /run is the container's own tmpfs: read it from inside.
    assert "M115" in farm.run(["cat", simulator_log("bench")]).stdout
    # Neither is offered the other's printer.
    assert "/dev/octobrix/bench" not in demo["options"]["ports"]
    assert "VIRTUAL" not in bench["options"]["ports"]


def test_no_setup_wizard_and_pip_is_available(farm: Container) -> None:
    for name in ("demo", "bench"):
        wait_operational(farm, name)
        pending = installs.pending_wizards(farm, name, PORTS[name])
        assert pending == [], f"{name} would show the setup wizard for {pending}"
        plugins = api(farm, name, "/plugin/pluginmanager/plugins")
        assert plugins["pip"]["available"] is True, plugins["pip"]


def test_status_shows_both_in_text_and_json(farm: Container) -> None:
    wait_operational(farm, "demo")
    wait_operational(farm, "bench")
    body = json.loads(farm.run(["octobrixctl", "status", "--json"]).stdout)
    rows = {row["name"]: row for row in body["printers"]}
    for name in ("demo", "bench"):
        assert rows[name]["state"] == "active"
        assert rows[name]["printer_state"] == "Operational"
        assert rows[name]["pid"] and rows[name]["memory_bytes"] > 10_000_000
    assert rows["demo"]["device"] == "virtual" and rows["bench"]["device"] == "plugged"
    text = farm.run(["octobrixctl", "status"]).stdout.splitlines()
    line = next(row for row in text if row.startswith("bench "))
    # The front door is on by default: bench's own origin there (its door port), not the direct port.
    door = f":{default_door_port(PORTS['bench'])}/"
    assert "active (running)" in line and "Operational" in line and line.split()[-1].endswith(door), line


def in_instance(box: Container, name: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run argv in instance NAME's own context: its namespaces (ProtectSystem and all) and its user."""
    pid = octoprint_pid(box, name)
    uid = box.run(["id", "-u", f"octobrix-{name}"]).stdout.strip()
    gid = box.run(["id", "-g", f"octobrix-{name}"]).stdout.strip()
    return box.run(
        ["nsenter", "-t", str(pid), "-m", "--", "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
         "--no-new-privs", *argv],
        check=False,
    )  # fmt: skip


def test_instances_are_isolated(farm: Container) -> None:
    wait_operational(farm, "demo")
    # The check can succeed: demo reads its own settings...
    own = in_instance(farm, "demo", "cat", "/var/lib/octobrix/demo/basedir/config.yaml")
    assert own.returncode == 0 and "VIRTUAL" in own.stdout
    # ...but not bench's settings, API key or device.
    for path in (
        "/var/lib/octobrix/bench/basedir/config.yaml",
        "/var/lib/octobrix/bench/basedir/data/appkeys/keys.yaml",
        "/var/lib/octobrix/.secrets/bench.json",
    ):
        other = in_instance(farm, "demo", "cat", path)
        assert other.returncode != 0 and "Permission denied" in other.stderr, path
    device = in_instance(farm, "demo", "python3", "-c", "open('/dev/octobrix/bench', 'rb')")
    assert device.returncode != 0 and "PermissionError" in device.stderr
    restart = in_instance(farm, "demo", "systemctl", "restart", "octoprint@bench.service")
    assert restart.returncode != 0


def test_octoprints_own_restart_restarts_only_that_instance(farm: Container) -> None:
    wait_operational(farm, "demo")
    demo_pid, bench_pid = octoprint_pid(farm, "demo"), octoprint_pid(farm, "bench")
    # What "System > Restart OctoPrint" in its web page does. OctoPrint may be gone before it answers.
    with contextlib.suppress(http.client.RemoteDisconnected, ConnectionError):
        api(farm, "demo", "/api/system/commands/core/restart", {})
    wait_until(
        "demo's OctoPrint to run as a new process",
        lambda: octoprint_pid(farm, "demo") not in (demo_pid, 0),
        timeout=120,
        every=1,
        detail=lambda: farm.journal("octoprint@demo.service", 40),
    )
    wait_operational(farm, "demo")
    assert octoprint_pid(farm, "bench") == bench_pid


def test_a_users_setting_survives_apply_and_restart(farm: Container) -> None:
    wait_operational(farm, "bench")
    api(farm, "bench", "/api/settings", {"appearance": {"color": "red"}})
    # A config change that touches bench restarts only bench. octobrixd may already have applied
    # the edit by the time `apply` runs (it follows the file); either way the PIDs tell.
    demo_pid, bench_pid = octoprint_pid(farm, "demo"), octoprint_pid(farm, "bench")
    farm.write_file("/etc/octobrix.toml", CONFIG.replace("baudrate = 250000", "baudrate = 115200"))
    farm.run(["octobrixctl", "apply"])
    assert farm.wait_active("octoprint@bench.service") == "active"
    assert octoprint_pid(farm, "bench") != bench_pid
    assert octoprint_pid(farm, "demo") == demo_pid
    bench = wait_operational(farm, "bench")
    assert bench["current"]["baudrate"] == 115200
    assert api(farm, "bench", "/api/settings")["appearance"]["color"] == "red"
    farm.systemctl("restart", "octoprint@bench.service")
    wait_operational(farm, "bench")
    assert api(farm, "bench", "/api/settings")["appearance"]["color"] == "red"


# Every unit octobrix runs, the streamers as their templates (this farm has no camera).
HARDENED_UNITS = (
    "octoprint@demo.service",
    "octoprint@bench.service",
    "ustreamer@any.service",
    "mjpg-streamer@any.service",
    "octobrixd.service",
    "octobrix-config.service",
    "octobrix-failed@demo.service",
)


def test_every_unit_scores_at_most_5_in_systemd_analyze_security(farm: Container) -> None:
    figures: dict[str, float] = {}
    for unit in HARDENED_UNITS:
        result = farm.run(["systemd-analyze", "security", "--no-pager", unit], check=False)
        summary = next(line for line in result.stdout.splitlines() if "Overall exposure level" in line)
        figures[unit] = float(summary.split(":")[1].split()[0])
    print("\nsystemd-analyze security: " + ", ".join(f"{unit} {value}" for unit, value in figures.items()))
    assert all(value <= 5.0 for value in figures.values()), figures
    # The instances and streamers, which run code from the internet and talk to the network, score lowest.
    assert max(figures[u] for u in HARDENED_UNITS[:4]) <= 2.0, figures
