"""OctoPrint 2.0 and OctoPrint's own update button, for real: one container, octobrix installed by
its own installer from this checkout, two OctoPrints from PyPI (through the lab's wheelhouse, the
config's `wheels`): one pinned to 2.0.0rc3 on a simulated Marlin (a pty, see harness/farm.py), one
on 1.11 with the virtual printer, which last moves to 2.0 with its settings and uploads.

- 2.0 is seeded in its own keys (printerConnection.*, plugins.serial_connector.*,
  server.pluginBlocklist), so it is Operational, a second apply has nothing to do, and a changed
  baudrate reaches 2.0's setting.
- OctoPrint's Software Update never changes the OctoPrint version: its check for OctoPrint reports
  no update, names `octobrixctl upgrade`, and a forced update through its API does nothing.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab.harness import installs
from tests.lab.harness.container import Container
from tests.lab.harness.farm import pty_farm, simulator_log
from tests.lab.harness.guest_probe import octoprint_pid
from tests.lab.harness.waiting import wait_until
from tests.lab.harness.wheelhouse import OCTOPRINT, OCTOPRINT_2, fill_wheels
from tests.lab.test_plugins import PLUGIN_DIST, WHEEL_NAME, build_plugin_wheel, serving

pytestmark = pytest.mark.lab

FRONT_DOOR = 8610
PORTS = {"op20": 5610, "op111": 5611}
WHEEL_PORT = 5615  # the loopback server that hands op111's Plugin Manager a plugin
RC = OCTOPRINT_2.removeprefix("octoprint==")
WHEELS = "/var/cache/lab-wheels"
CONFIG = f"""\
[octobrix]
octoprint = "{OCTOPRINT}"
wheels = "{WHEELS}"

[frontdoor]
port = {FRONT_DOOR}

[printers.op20]
serial = "PRN2000"
port = {PORTS["op20"]}
baudrate = 250000
octoprint = "{OCTOPRINT_2}"

[printers.op111]
virtual = true
port = {PORTS["op111"]}
"""


api = installs.OctoPrints(PORTS).api
ctl = installs.ctl_ok


def settings_file(box: Container, name: str) -> dict[str, Any]:
    return dict(yaml.safe_load(box.read_file(f"/var/lib/octobrix/{name}/basedir/config.yaml")))


def update_log_written(box: Container, name: str) -> str:
    """The inode and modification time of name's Software Update log, "" while there is none: its
    updater writes a new file over it each time it has handled an update request."""
    log = f"/var/lib/octobrix/{name}/basedir/data/softwareupdate/updatelog.yaml"
    return box.run(["stat", "-c", "%i %y", log], check=False).stdout.strip()


@pytest.fixture(scope="module")
def farm(lab_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    workdir = Path(tmp_path_factory.mktemp("versions", numbered=True))
    with pty_farm(
        workdir,
        CONFIG,
        {"op20": 0.0},
        ports=[*PORTS.values(), WHEEL_PORT],
        front_door_port=FRONT_DOOR,
        before_install=lambda box: fill_wheels(box, WHEELS),
    ) as box:
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
    wait_until(
        "op20's OctoPrint to be Operational at 115200 baud",
        lambda: installs.wait_operational(farm, "op20", PORTS["op20"]),
        timeout=180,
        until=lambda state: state["current"]["baudrate"] == 115200,
    )
    parameters = settings_file(farm, "op20")["printerConnection"]["preferred"]["parameters"]
    assert parameters == {"port": "/dev/octobrix/op20", "baudrate": 115200}
    assert "serial" not in settings_file(farm, "op20")
    assert "Nothing to do" in ctl(farm, "apply")


def test_octoprints_update_button_leaves_the_version_to_octobrix(farm: Container) -> None:
    installs.wait_operational(farm, "op111", PORTS["op111"])
    before = api(farm, "op111", "/api/version")["server"]
    pid = octoprint_pid(farm, "op111")
    # Only the OctoPrint target: the plugins' checks would ask GitHub.
    check = api(farm, "op111", "/plugin/softwareupdate/check?targets=octoprint&force=true")
    octoprint = check["information"]["octoprint"]
    assert octoprint["updateAvailable"] is False and octoprint["updatePossible"] is False, octoprint
    assert "sudo octobrixctl upgrade op111" in octoprint["displayName"], octoprint
    assert octoprint["information"]["local"]["name"] == before, "it shows the version that runs"
    assert check["status"] == "current", check

    # Even an admin forcing it through the API changes nothing: the check is never run.
    written = update_log_written(farm, "op111")
    api(farm, "op111", "/plugin/softwareupdate/update", {"targets": ["octoprint"], "force": True})
    # Its updater runs in a thread after the answer, and writes its update log when it is done,
    # even with nothing updated: from then on, whatever it did is in the log.
    wait_until(
        "OctoPrint's Software Update to finish the forced update (its update log written anew)",
        lambda: update_log_written(farm, "op111") not in (written, ""),
        timeout=60,
        every=0.5,
        detail=lambda: farm.run(["tail", "-n", "30", "/var/lib/octobrix/op111/basedir/logs/octoprint.log"]).stdout,
    )
    log = api(farm, "op111", "/plugin/softwareupdate/updatelog")["updatelog"]
    assert not [entry for entry in log if entry.get("target") == "octoprint"], log
    assert octoprint_pid(farm, "op111") == pid, "OctoPrint did not restart"
    assert api(farm, "op111", "/api/version")["server"] == before
    assert "Nothing to do" in ctl(farm, "apply"), "the Software Update plugin keeps octobrix's keys as they are"


def test_pip_inside_an_instance_cannot_change_its_octoprint(farm: Container) -> None:
    """What OctoPrint's Plugin Manager and Software Update run (pip, in the instance's venv, with its
    unit's environment) fails when it would move OctoPrint, e.g. a plugin needing a newer one."""
    environment = farm.run(["systemctl", "show", "-P", "Environment", "octoprint@op111.service"], check=True).stdout
    constraint = next(pair for pair in environment.split() if pair.startswith("PIP_CONSTRAINT="))
    venv = "/var/lib/octobrix/op111/venv"
    pip = ["runuser", "-u", "octobrix-op111", "--", "env", constraint, f"{venv}/bin/python", "-m", "pip"]
    tried = farm.run([*pip, "install", "--no-index", "--find-links", WHEELS, OCTOPRINT_2], check=False, timeout=300)
    assert tried.returncode != 0, tried.stdout
    assert "constraint" in (tried.stdout + tried.stderr).lower(), tried.stdout + tried.stderr
    assert api(farm, "op111", "/api/version")["server"] == OCTOPRINT.removeprefix("octoprint==")
    assert farm.run(["ls", f"{venv}/lib/python3.11/site-packages"], check=True).stdout.count(
        "octoprint-1.11.8.dist-info"
    )


def test_plugin_manager_installs_still_work_under_the_pin(farm: Container, tmp_path: Path) -> None:
    installs.wait_operational(farm, "op111", PORTS["op111"])
    build_plugin_wheel(tmp_path)
    site = "/var/lib/octobrix/op111/venv/lib/python3.11/site-packages"
    with serving(tmp_path, WHEEL_PORT) as base:
        body = {"command": "install", "url": f"{base}/{WHEEL_NAME}"}
        assert api(farm, "op111", "/api/plugin/pluginmanager", body) == {"in_progress": True}
        log = "/var/lib/octobrix/op111/basedir/logs/plugin_pluginmanager_console.log"
        wait_until(
            "the Plugin Manager to install octoprint_labplug into op111's venv",
            lambda: "octoprint_labplug" in farm.run(["ls", site], check=True).stdout,
            timeout=180,
            detail=lambda: farm.run(["tail", "-n", "30", log]).stdout,
        )


def upload(box: Container, name: str, filename: str, content: bytes) -> None:
    secrets = json.loads(box.read_file(f"/var/lib/octobrix/.secrets/{name}.json"))
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORTS[name]}/api/files/local",
        data=body,
        headers={"X-Api-Key": secrets["api_key"], "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 201


def test_a_printer_moved_from_1_11_to_2_0_keeps_its_settings_and_uploads(farm: Container) -> None:
    installs.wait_operational(farm, "op111", PORTS["op111"])
    api(farm, "op111", "/api/settings", {"appearance": {"color": "red"}, "serial": {"timeoutCommunication": 45}})
    upload(farm, "op111", "cube.gcode", b"G28\nG1 X10 Y10\n")
    moved = CONFIG.replace(
        f"virtual = true\nport = {PORTS['op111']}\n",
        f'virtual = true\nport = {PORTS["op111"]}\noctoprint = "{OCTOPRINT_2}"\n',
    )
    assert moved != CONFIG
    farm.write_file("/etc/octobrix.toml", moved)
    ctl(farm, "apply")  # or octobrixd did it already
    wait_until(
        f"op111's OctoPrint to run {RC}",
        lambda: installs.wait_operational(farm, "op111", PORTS["op111"]) and api(farm, "op111", "/api/version"),
        timeout=300,
        until=lambda version: version["server"] == RC,
    )
    state = installs.wait_operational(farm, "op111", PORTS["op111"])
    assert api(farm, "op111", "/api/version")["server"] == RC and state["current"]["port"] == "VIRTUAL", state
    files = [entry["name"] for entry in api(farm, "op111", "/api/files/local")["files"]]
    assert "cube.gcode" in files, files
    assert api(farm, "op111", "/api/settings")["appearance"]["color"] == "red"
    settings = settings_file(farm, "op111")
    # 2.0 moved the user's serial settings into its serial connector; octobrix's keys are 2.0's.
    assert "serial" not in settings and "pluginBlacklist" not in settings["server"], settings
    assert settings["plugins"]["serial_connector"]["timeout"]["communication"] == 45, settings["plugins"]
    assert settings["printerConnection"]["preferred"]["parameters"]["port"] == "VIRTUAL"
    carried = json.loads(farm.read_file("/var/lib/octobrix/op111/carried-plugins.json"))
    assert [c["name"] for c in carried["carried"]] == [PLUGIN_DIST], carried
    assert "Nothing to do" in ctl(farm, "apply")
