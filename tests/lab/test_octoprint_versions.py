"""OctoPrint 2.0 and OctoPrint's own update button, for real: one container, octobrix installed by
its own installer from this checkout, two OctoPrints from PyPI: one pinned to 2.0.0rc3 on a simulated
Marlin (a pty, see harness/farm.py), one on 1.11 with the virtual printer.

- 2.0 is seeded in its own keys (printerConnection.*, plugins.serial_connector.*,
  server.pluginBlocklist), so it is Operational, a second apply has nothing to do, and a changed
  baudrate reaches 2.0's setting.
- OctoPrint's Software Update never changes the OctoPrint version: its check for OctoPrint reports
  no update, names `octobrixctl upgrade`, and a forced update through its API does nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab.harness import installs
from tests.lab.harness.container import Container
from tests.lab.harness.farm import pty_farm, simulator_log

pytestmark = pytest.mark.lab

FRONT_DOOR = 8610
PORTS = {"op20": 5610, "op111": 5611}
RC = "2.0.0rc3"
CONFIG = f"""\
[frontdoor]
port = {FRONT_DOOR}

[printers.op20]
serial = "PRN2000"
port = {PORTS["op20"]}
baudrate = 250000
octoprint = "octoprint=={RC}"

[printers.op111]
virtual = true
port = {PORTS["op111"]}
"""


def api(box: Container, name: str, path: str, body: dict[str, Any] | None = None) -> Any:
    return installs.api(box, PORTS[name], name, path, body)


def settings_file(box: Container, name: str) -> dict[str, Any]:
    return dict(yaml.safe_load(box.read_file(f"/var/lib/octobrix/{name}/basedir/config.yaml")))


def ctl(box: Container, *args: str) -> str:
    done = box.run(["octobrixctl", *args], check=False, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def main_pid(box: Container, name: str) -> str:
    return box.run(["systemctl", "show", "-P", "MainPID", f"octoprint@{name}.service"], check=True).stdout.strip()


@pytest.fixture(scope="module")
def farm(lab_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    workdir = Path(tmp_path_factory.mktemp("versions", numbered=True))
    with pty_farm(workdir, CONFIG, {"op20": 0.0}, ports=PORTS.values(), front_door_port=FRONT_DOOR) as box:
        yield box


def test_octoprint_2_is_operational_on_its_printer(farm: Container) -> None:
    state = installs.wait_operational(farm, "op20", PORTS["op20"])
    assert api(farm, "op20", "/api/version")["server"] == RC
    assert state["current"]["port"] == "/dev/octobrix/op20" and state["current"]["baudrate"] == 250000, state
    assert "M115" in farm.run(["cat", simulator_log("op20")]).stdout, "the simulated board was talked to"


def test_octoprint_2_config_holds_2_0_keys_only(farm: Container) -> None:
    installs.wait_operational(farm, "op20", PORTS["op20"])
    settings = settings_file(farm, "op20")
    assert "serial" not in settings, settings
    assert "pluginBlacklist" not in settings["server"] and settings["server"]["pluginBlocklist"] == {"enabled": True}
    assert "trustRemoteUser" not in settings["accessControl"], settings["accessControl"]
    connection = settings["printerConnection"]
    assert connection["autoconnect"] is True
    assert connection["preferred"]["connector"] == "serial"
    assert connection["preferred"]["parameters"] == {"port": "/dev/octobrix/op20", "baudrate": 250000}
    assert settings["plugins"]["serial_connector"]["additionalPorts"] == ["/dev/octobrix/op20"]


def test_second_apply_has_nothing_to_do(farm: Container) -> None:
    installs.wait_operational(farm, "op20", PORTS["op20"])
    assert "Nothing to do" in ctl(farm, "apply")


def test_changed_baudrate_reaches_octoprint_2(farm: Container) -> None:
    installs.wait_operational(farm, "op20", PORTS["op20"])
    farm.write_file("/etc/octobrix.toml", CONFIG.replace("baudrate = 250000", "baudrate = 115200"))
    # octobrixd applies an edited config by itself; apply does it now if octobrixd has not yet.
    ctl(farm, "apply")
    deadline = time.monotonic() + 180
    state = installs.wait_operational(farm, "op20", PORTS["op20"])
    while state["current"]["baudrate"] != 115200 and time.monotonic() < deadline:
        time.sleep(2)
        state = installs.wait_operational(farm, "op20", PORTS["op20"])
    assert state["current"]["baudrate"] == 115200, state
    parameters = settings_file(farm, "op20")["printerConnection"]["preferred"]["parameters"]
    assert parameters == {"port": "/dev/octobrix/op20", "baudrate": 115200}
    assert "serial" not in settings_file(farm, "op20")
    assert "Nothing to do" in ctl(farm, "apply")


def test_octoprints_update_button_leaves_the_version_to_octobrix(farm: Container) -> None:
    installs.wait_operational(farm, "op111", PORTS["op111"])
    before = api(farm, "op111", "/api/version")["server"]
    pid = main_pid(farm, "op111")
    # Only the OctoPrint target: the plugins' checks would ask GitHub.
    check = api(farm, "op111", "/plugin/softwareupdate/check?targets=octoprint&force=true")
    octoprint = check["information"]["octoprint"]
    assert octoprint["updateAvailable"] is False and octoprint["updatePossible"] is False, octoprint
    assert "sudo octobrixctl upgrade op111" in octoprint["displayName"], octoprint
    assert octoprint["information"]["local"]["name"] == before, "it shows the version that runs"
    assert check["status"] == "current", check

    # Even an admin forcing it through the API changes nothing: the check is never run.
    api(farm, "op111", "/plugin/softwareupdate/update", {"targets": ["octoprint"], "force": True})
    time.sleep(5)
    log = api(farm, "op111", "/plugin/softwareupdate/updatelog")["updatelog"]
    assert not [entry for entry in log if entry.get("target") == "octoprint"], log
    assert main_pid(farm, "op111") == pid, "OctoPrint did not restart"
    assert api(farm, "op111", "/api/version")["server"] == before
    assert "Nothing to do" in ctl(farm, "apply"), "the Software Update plugin keeps octobrix's keys as they are"
