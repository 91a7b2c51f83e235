"""`octobrixctl import` for real: an octoprint_deploy farm built in a systemd container the way its
scripts build it (prepare.sh's shared venv ~pi/OctoPrint with a real OctoPrint, instance.sh's
basedirs, units, instances file and udev rules, cameras.sh's camera files), with both old OctoPrints
running; then octobrix installed beside it and the farm imported. Beside them a plain ~/.octoprint and
a KIAUH farm (its two OctoPrints, each on its Klipper's klippy.serial), imported after it. Ports
5650-5659, front door 8650.
"""

from __future__ import annotations

import functools
import http.client
import json
import re
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import import_trees
from tests.lab.harness import installs
from tests.lab.harness.container import Container, booted
from tests.lab.harness.farm import start_pty_printer
from tests.lab.harness.installed import farm_base, install_checkout
from tests.lab.harness.waiting import wait_until
from tests.lab.harness.wheelhouse import OCTOPRINT, wheelhouse

pytestmark = pytest.mark.lab

FRONT_DOOR = 8650
# name: (port, its udev rule as instance.sh writes it, a setting the user changed)
OLD = {
    "ender": (5650, 'SUBSYSTEM=="tty", ATTRS{serial}=="PRN0001", SYMLINK+="octo_ender"', "red"),
    "prusa": (5651, 'KERNELS=="1-1.2",SUBSYSTEM=="tty",SYMLINK+="octo_prusa"', "blue"),
}
CAMERA_PORT = 5652
PLAIN, PLAIN_PORT = "octoprint", 5653
OLD_KEY = "OLDKEY{}"
OLD_FILES = ["/home/pi", "/etc/octoprint_deploy", "/etc/octoprint_instances", "/etc/octoprint_cameras",
             "/etc/cam_ender.env", "/etc/udev/rules.d/99-octoprint.rules", "/etc/systemd/system/ender.service",
             "/etc/systemd/system/prusa.service", "/etc/systemd/system/cam_ender.service",
             "/etc/systemd/system/octoprint.service"]  # fmt: skip
EXEC = "/home/pi/OctoPrint/bin/octoprint"
# What the old OctoPrints themselves write while they run and as they stop: not the import's doing.
OWN_LOGS = re.compile(r"^/home/(pi|biqu)/\.[a-z_]+/logs/")
# KIAUH's layout as its scripts make it (octobrixd/importers/kiauh.py cites them), for the user who
# ran KIAUH: voron installed by the bash KIAUH (venv ~/OctoPrint_voron/venv, Klipper's data in
# ~/voron_data), trident added later by KIAUH 6 (venv ~/OctoPrint_trident, ~/printer_trident_data).
# KIAUH gives ports from 5000 up; here the next free ones of this module's range.
# suffix: (port, venv, Klipper's data folder, a setting the user changed)
KIAUH_USER = "biqu"
KIAUH = {
    "voron": (5654, "/home/biqu/OctoPrint_voron/venv", "/home/biqu/voron_data", "orange"),
    "trident": (5655, "/home/biqu/OctoPrint_trident", "/home/biqu/printer_trident_data", "violet"),
}
KIAUH_FILES = ["/home/biqu", "/etc/sudoers.d/octoprint-shutdown", *(f"/etc/systemd/system/octoprint-{s}.service"
               for s in KIAUH)]  # fmt: skip


def as_pi(box: Container, *argv: str, stdin: str | None = None, user: str = "pi") -> None:
    result = box.run(["runuser", "-u", user, "--", *argv], input=stdin, timeout=600, check=False)
    assert result.returncode == 0, f"{argv}: {result.stdout}\n{result.stderr}"


def unit(name: str, port: int) -> str:
    # octoprint_generic.service as instance.sh fills it in.
    return (
        "[Unit]\nDescription=The snappy web interface for your 3D printer\nAfter=network-online.target\n"
        "Wants=network-online.target\n\n[Service]\n"
        f'Environment="PORT={port}"\nEnvironment="BASEDIR=/home/pi/.{name}"\n'
        f'Environment="CONFIGFILE=/home/pi/.{name}/config.yaml"\nUser=pi\n'
        f"ExecStart={EXEC} serve --config=${{CONFIGFILE}} --basedir=${{BASEDIR}} --port=${{PORT}}\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


def old_api(port: int, name: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"X-Api-Key": OLD_KEY.format(name), "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
    return json.loads(text) if text.strip() else None


def build_octoprint_deploy_farm(box: Container) -> None:
    box.copy_in(wheelhouse(), "/opt/wheels")
    box.run(["useradd", "-m", "-s", "/bin/bash", "pi"], check=True)
    as_pi(box, "python3", "-m", "venv", "/home/pi/OctoPrint")
    as_pi(
        box, "/home/pi/OctoPrint/bin/pip", "install", "--quiet", "--no-index", "--find-links", "/opt/wheels", OCTOPRINT
    )
    box.write_file("/etc/octoprint_deploy", f"octoexec: {EXEC}\noctopip: /home/pi/OctoPrint/bin/pip\nhaproxy: true\n"
                   "streamer: ustreamer\n")  # fmt: skip
    instances = rules = ""
    for name, (port, rule, colour) in OLD.items():
        base = f"/home/pi/.{name}"
        as_pi(box, "mkdir", base)
        as_pi(box, EXEC, "--basedir", base, "config", "set", "appearance.name", name)
        as_pi(box, EXEC, "--basedir", base, "config", "set", "appearance.color", colour)
        as_pi(box, EXEC, "--basedir", base, "config", "set", "serial.port", f"/dev/octo_{name}")
        as_pi(box, EXEC, "--basedir", base, "user", "add", "maker", "--admin", stdin="old-secret\nold-secret\n")
        # What OctoPrint's Application Keys page saves, so the test and import can ask the old one.
        as_pi(box, "mkdir", "-p", f"{base}/data/appkeys", f"{base}/uploads", f"{base}/timelapse")
        as_pi(box, "sh", "-c", f"printf 'maker:\\n- api_key: {OLD_KEY.format(name)}\\n  app_id: slicer\\n' "
              f"> {base}/data/appkeys/keys.yaml && printf 'G28\\n; {name}\\n' > {base}/uploads/{name}.gcode "
              f"&& head -c 4096 /dev/zero > {base}/timelapse/{name}_1.mp4")  # fmt: skip
        box.write_file(f"/etc/systemd/system/{name}.service", unit(name, port))
        instances += f"instance:{name} port:{port} udev:true\n"
        rules += rule + "\n"
    rules += 'SUBSYSTEM=="video4linux", ATTRS{serial}=="CAM0001", ATTR{index}=="0", SYMLINK+="cam_ender"\n'
    box.write_file("/etc/octoprint_instances", instances)
    box.write_file("/etc/udev/rules.d/99-octoprint.rules", rules)
    box.write_file("/etc/octoprint_cameras", f"camera:cam_ender port:{CAMERA_PORT} udev:true\n")
    box.write_file("/etc/cam_ender.env", f"DEVICE=/dev/cam_ender\nRES=640x480\nFRAMERATE=10\nPORT={CAMERA_PORT}\n"
                   "WIDTH=640\nHEIGHT=480\n")  # fmt: skip
    box.write_file("/etc/systemd/system/cam_ender.service", "[Unit]\nDescription=the ustreamer daemon\n\n[Service]\n"
                   "EnvironmentFile=/etc/cam_ender.env\nUser=pi\nExecStart=/home/pi/ustreamer/ustreamer -d ${DEVICE} "
                   "-s 0.0.0.0 -m MJPEG -r ${RES} -f ${FRAMERATE} -p ${PORT}\n\n[Install]\n"
                   "WantedBy=multi-user.target\n")  # fmt: skip
    build_plain_octoprint(box)
    build_kiauh_farm(box)
    box.systemctl("daemon-reload")
    kiauh_units = [f"octoprint-{suffix}.service" for suffix in KIAUH]
    box.systemctl("enable", "--now", "ender.service", "prusa.service", "octoprint.service", *kiauh_units)
    box.systemctl("enable", "cam_ender.service")  # no camera here: enabled, not started
    olds = [*((n, p) for n, (p, _r, _c) in OLD.items()), (PLAIN, PLAIN_PORT), *((s, v[0]) for s, v in KIAUH.items())]
    for name, port in olds:
        wait_until(f"old {name} answering", functools.partial(_answers, port, name), timeout=180)
    use_kiauh_farm(box)


def build_plain_octoprint(box: Container) -> None:
    """A plain OctoPrint beside them: ~pi/.octoprint and octoprint.service, as OctoPi has them."""
    base = "/home/pi/.octoprint"
    as_pi(box, "mkdir", base)
    as_pi(box, EXEC, "--basedir", base, "config", "set", "appearance.color", "green")
    as_pi(box, EXEC, "--basedir", base, "config", "set", "serial.port", "/dev/ttyUSB0")
    as_pi(box, EXEC, "--basedir", base, "user", "add", "pi", "--admin", stdin="pi-secret\npi-secret\n")
    as_pi(box, "mkdir", "-p", f"{base}/data/appkeys", f"{base}/uploads")
    as_pi(box, "sh", "-c", f"printf 'pi:\\n- api_key: {OLD_KEY.format(PLAIN)}\\n  app_id: slicer\\n' "
          f"> {base}/data/appkeys/keys.yaml && printf 'G28\\n' > {base}/uploads/benchy.gcode")  # fmt: skip
    box.write_file("/etc/systemd/system/octoprint.service", "[Unit]\nDescription=OctoPrint\n\n[Service]\nUser=pi\n"
                   f"ExecStart={EXEC} serve --host=0.0.0.0 --port={PLAIN_PORT}\n\n[Install]\n"
                   "WantedBy=multi-user.target\n")  # fmt: skip


def build_kiauh_farm(box: Container) -> None:
    box.run(["useradd", "-m", "-s", "/bin/bash", KIAUH_USER], check=True)
    box.write_file("/etc/sudoers.d/octoprint-shutdown", f"{KIAUH_USER} ALL=NOPASSWD: /sbin/shutdown\n")
    for suffix, (port, venv, data, _colour) in KIAUH.items():
        # The bash KIAUH pip-installs OctoPrint into one venv, copies it per instance and corrects the
        # path in its bin/octoprint; the venv copied here is octoprint_deploy's above (the same OctoPrint
        # from the same wheels), which saves a second install. KIAUH 6 installs into each venv anew.
        box.run(["mkdir", "-p", str(Path(venv).parent)], check=True)
        box.run(["cp", "-a", "/home/pi/OctoPrint", venv], check=True)
        box.run(["sed", "-i", f"1s|/home/pi/OctoPrint/|{venv}/|", f"{venv}/bin/octoprint"], check=True)
        base = f"/home/{KIAUH_USER}/.octoprint_{suffix}"
        box.write_file(f"{base}/config.yaml", import_trees.kiauh_config_yaml(KIAUH_USER, suffix,
                       kiauh6=not venv.endswith("/venv")))  # fmt: skip
        box.write_file(f"/etc/systemd/system/octoprint-{suffix}.service",
                       import_trees.kiauh_unit(KIAUH_USER, suffix, port, venv))  # fmt: skip
        # What OctoPrint's Application Keys page saves, so the test and import can ask the old one.
        box.write_file(f"{base}/data/appkeys/keys.yaml",
                       f"{KIAUH_USER}:\n- api_key: {OLD_KEY.format(suffix)}\n  app_id: slicer\n")  # fmt: skip
        # Klipper's data folder as KIAUH makes it; comms/klippy.serial appears when Klipper runs.
        box.run(["mkdir", "-p", *(f"{data}/{sub}" for sub in ("config", "logs", "gcodes", "comms", "systemd"))])
        box.run(["chown", "-R", f"{KIAUH_USER}:", f"/home/{KIAUH_USER}"], check=True)
        exe = f"{venv}/bin/octoprint"
        # The first-run wizard's admin, and a second user.
        as_pi(box, exe, "--basedir", base, "user", "add", KIAUH_USER, "--admin", stdin="k-secret\nk-secret\n",
              user=KIAUH_USER)  # fmt: skip
        as_pi(box, exe, "--basedir", base, "user", "add", "friend", stdin="f-secret\nf-secret\n", user=KIAUH_USER)
        # Stands in for Klipper, which cannot run without its board: a pty at klippy.serial, its user's,
        # answering as Marlin does (Klipper's pty answers OctoPrint the same way).
        start_pty_printer(box, f"klipper-{suffix}", f"{data}/comms/klippy.serial", user=KIAUH_USER)


def use_kiauh_farm(box: Container) -> None:
    """What a KIAUH user does in the running OctoPrints: connect to Klipper, change a setting, upload."""
    for suffix, (port, _venv, data, colour) in KIAUH.items():
        klippy = f"{data}/comms/klippy.serial"
        old_api(port, suffix, "/api/connection", {"command": "connect", "port": klippy, "baudrate": 250000})
        old_api(port, suffix, "/api/settings", {"appearance": {"color": colour}})
        installs.upload_gcode(box, port, suffix, f"{suffix}.gcode", f"G28\n; {suffix}\n", print_it=False,
                              api_key=OLD_KEY.format(suffix))  # fmt: skip
    for suffix, (port, *_rest) in KIAUH.items():
        wait_until(f"old {suffix} Operational on its klippy.serial",
                   functools.partial(_state_is, port, suffix, "Operational"), timeout=120)  # fmt: skip


def _state_is(port: int, name: str, state: str) -> bool:
    return bool(old_api(port, name, "/api/connection")["current"]["state"] == state)


def _answers(port: int, name: str) -> bool:
    try:
        return bool(old_api(port, name, "/api/version"))
    # Refused, reset, OctoPrint's start-up placeholder (not HTTP), not JSON yet.
    except (OSError, http.client.HTTPException, ValueError):
        return False


@pytest.fixture(scope="module")
def farm(lab_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    workdir = Path(tmp_path_factory.mktemp("import", numbered=True))
    with (
        installs.holding_printer_ports(range(5650, 5660), front_door_port=FRONT_DOOR),
        booted(workdir / "ct", boot_timeout=120, base=farm_base) as box,
    ):
        build_octoprint_deploy_farm(box)
        box.write_file("/etc/octobrix.toml", f"# the farm\n[frontdoor]\nport = {FRONT_DOOR}\n")
        installed = install_checkout(box)
        assert installed.returncode == 0, f"install.sh failed:\n{installed.stdout}\n{installed.stderr}"
        yield box


@pytest.fixture(scope="module")
def before(farm: Container) -> dict[str, Any]:
    dry = farm.run(["octobrixctl", "import", "--dry-run"], timeout=300, check=False)
    return {
        "dry": dry,
        "config": farm.read_file("/etc/octobrix.toml"),
        "old_files": installs.file_states(farm, OLD_FILES, skip=OWN_LOGS),
        "active": [farm.is_active(f"{name}.service") for name in OLD],  # "active" each
    }


def import_for_real(box: Container, *argv: str) -> Any:
    result = box.run(["octobrixctl", "import", *argv], timeout=1200, check=False)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{box.journal(None, 80)}"
    return result


@pytest.fixture(scope="module")
def imported(farm: Container, before: dict[str, Any]) -> Any:
    return import_for_real(farm)


def test_the_dry_run_shows_the_whole_move_and_changes_nothing(farm: Container, before: dict[str, Any]) -> None:
    dry = before["dry"]
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "Would import from octoprint_deploy (dry run: nothing is changed):" in dry.stdout
    assert "printer ender: from ender (ender.service, port 5650, serial PRN0001)" in dry.stdout
    assert "printer prusa: from prusa (prusa.service, port 5651, USB port 1-1.2)" in dry.stdout
    assert f"  OctoPrint {OCTOPRINT.split('==')[1]} from /home/pi/OctoPrint" in dry.stdout
    assert "camera cam-ender: from cam_ender (cam_ender.service, port 5652); disable cam_ender.service" in dry.stdout
    assert "note: octoprint_deploy's camera cam_ender becomes camera cam-ender" in dry.stdout
    assert before["active"] == ["active", "active"], "the dry run stopped an old OctoPrint"
    assert farm.read_file("/etc/octobrix.toml") == before["config"]


def test_both_printers_run_under_octobrix_with_their_uploads_users_and_settings(farm: Container, imported: Any) -> None:
    for name, (port, _match, colour) in OLD.items():
        assert farm.is_active(f"octoprint@{name}.service") == "active", farm.journal(f"octoprint@{name}", 40)
        files = [entry["name"] for entry in installs.api(farm, port, name, "/api/files/local")["files"]]
        assert f"{name}.gcode" in files, files
        users = [user["name"] for user in installs.api(farm, port, name, "/api/access/users")["users"]]
        assert "maker" in users and "admin" in users, users
        settings = installs.api(farm, port, name, "/api/settings")
        assert (settings["appearance"]["name"], settings["appearance"]["color"]) == (name, colour)
        timelapses = installs.api(farm, port, name, "/api/timelapse")["files"]
        assert [t["name"] for t in timelapses] == [f"{name}_1.mp4"], timelapses
    assert "Imported from octoprint_deploy: printers ender, prusa; 1 cameras." in imported.stdout


def test_they_are_bound_by_the_same_serial_and_usb_port(farm: Container, imported: Any) -> None:
    body = tomllib.loads(farm.read_file("/etc/octobrix.toml"))
    assert body["printers"]["ender"] == {"serial": "PRN0001", "port": 5650, "camera": "cam-ender"}
    assert body["printers"]["prusa"] == {"usb_port": "1-1.2", "port": 5651}
    assert body["cameras"]["cam-ender"] == {"serial": "CAM0001", "port": 5652, "resolution": "640x480", "fps": 10}
    assert farm.read_file("/etc/octobrix.toml").startswith("# the farm\n")
    rules = farm.read_file("/etc/udev/rules.d/99-octobrix.rules")
    assert 'ATTRS{serial}=="PRN0001"' in rules and 'KERNELS=="1-1.2:*"' in rules and 'ATTRS{serial}=="CAM0001"' in rules


def test_the_old_units_are_disabled_and_the_old_files_untouched(
    farm: Container, before: dict[str, Any], imported: Any
) -> None:
    for old_unit in ("ender.service", "prusa.service", "cam_ender.service"):
        assert farm.systemctl("is-enabled", old_unit, check=False).stdout.strip() == "disabled", old_unit
    assert [farm.is_active("ender.service"), farm.is_active("prusa.service")] == ["inactive", "inactive"]
    assert installs.file_states(farm, OLD_FILES, skip=OWN_LOGS) == before["old_files"]
    assert (
        "to go back: `sudo systemctl disable --now octoprint@ender.service octoprint@prusa.service`" in imported.stdout
    )


def test_a_second_import_has_nothing_left_and_changes_nothing(farm: Container, imported: Any) -> None:
    config = farm.read_file("/etc/octobrix.toml")
    again = farm.run(["octobrixctl", "import"], timeout=300, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.strip().splitlines()[-1] == (
        "Nothing left to import from octoprint_deploy (already moved in: camera cam_ender (now cam-ender), "
        "ender (now printer ender), prusa (now printer prusa))."
    )
    assert farm.read_file("/etc/octobrix.toml") == config


def test_a_plain_octoprint_moves_in_too_as_a_virtual_printer_with_what_to_set(farm: Container, imported: Any) -> None:
    moved = farm.run(["octobrixctl", "import", "--from", "octoprint"], timeout=900, check=False)
    assert moved.returncode == 0, f"{moved.stdout}\n{moved.stderr}"
    assert (
        "note: printer octoprint: its OctoPrint used /dev/ttyUSB0, which does not say which board it is; "
        in moved.stdout
    )
    body = tomllib.loads(farm.read_file("/etc/octobrix.toml"))
    assert body["printers"][PLAIN] == {"virtual": True, "port": PLAIN_PORT}
    files = [entry["name"] for entry in installs.api(farm, PLAIN_PORT, PLAIN, "/api/files/local")["files"]]
    users = [user["name"] for user in installs.api(farm, PLAIN_PORT, PLAIN, "/api/access/users")["users"]]
    colour = installs.api(farm, PLAIN_PORT, PLAIN, "/api/settings")["appearance"]["color"]
    assert ("benchy.gcode" in files, "pi" in users, colour) == (True, True, "green"), (files, users, colour)
    assert farm.systemctl("is-enabled", "octoprint.service", check=False).stdout.strip() == "disabled"
    assert sorted(body["printers"]) == ["ender", PLAIN, "prusa"], "the octoprint_deploy printers stay as they were"


@pytest.fixture(scope="module")
def kiauh_before(farm: Container) -> dict[str, Any]:
    files = installs.file_states(farm, KIAUH_FILES, skip=OWN_LOGS)
    config = farm.read_file("/etc/octobrix.toml")
    dry = farm.run(["octobrixctl", "import", "--from", "kiauh", "--dry-run"], timeout=300, check=False)
    return {
        "files": files,
        "config": config,
        "dry": dry,
        "files_after_dry": installs.file_states(farm, KIAUH_FILES, skip=OWN_LOGS),
        "config_after_dry": farm.read_file("/etc/octobrix.toml"),
        "active": [farm.is_active(f"octoprint-{suffix}.service") for suffix in KIAUH],
    }


@pytest.fixture(scope="module")
def kiauh_imported(farm: Container, kiauh_before: dict[str, Any]) -> Any:
    return import_for_real(farm, "--from", "kiauh")


def test_kiauh_dry_run_shows_the_plan_and_changes_nothing(farm: Container, kiauh_before: dict[str, Any]) -> None:
    dry = kiauh_before["dry"]
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "Would import from kiauh (dry run: nothing is changed):" in dry.stdout
    for suffix, (port, venv, data, _colour) in KIAUH.items():
        assert f"printer {suffix}: from {suffix} (octoprint-{suffix}.service, port {port}, virtual)" in dry.stdout
        assert f"  OctoPrint {OCTOPRINT.split('==')[1]} from {venv};" in dry.stdout
        assert (
            f"note: printer {suffix}: its OctoPrint talks to Klipper through {data}/comms/klippy.serial, "
            "not to a USB board; imported as a virtual printer with all its data"
        ) in dry.stdout
    assert kiauh_before["files_after_dry"] == kiauh_before["files"]
    assert kiauh_before["config_after_dry"] == kiauh_before["config"]
    assert kiauh_before["active"] == ["active", "active"], "the dry run stopped an old OctoPrint"


def test_kiauh_printers_run_under_octobrix_with_their_uploads_users_and_settings(
    farm: Container, kiauh_imported: Any
) -> None:
    body = tomllib.loads(farm.read_file("/etc/octobrix.toml"))
    for suffix, (port, _venv, _data, colour) in KIAUH.items():
        assert body["printers"][suffix] == {"virtual": True, "port": port}
        assert farm.is_active(f"octoprint@{suffix}.service") == "active", farm.journal(f"octoprint@{suffix}", 40)
        files = [entry["name"] for entry in installs.api(farm, port, suffix, "/api/files/local")["files"]]
        users = [user["name"] for user in installs.api(farm, port, suffix, "/api/access/users")["users"]]
        settings = installs.api(farm, port, suffix, "/api/settings")
        # The old admin and second user beside octobrix's admin (and its overview's read-only user).
        assert f"{suffix}.gcode" in files and {"admin", KIAUH_USER, "friend"} <= set(users), (files, users)
        assert settings["appearance"]["color"] == colour
        # Operational on octobrix's virtual printer until its serial or usb_port is set (the note says so).
        connection = installs.wait_operational(farm, suffix, port)
        assert connection["current"]["port"] == "VIRTUAL", connection
    assert "Imported from kiauh: printers trident, voron; 0 cameras." in kiauh_imported.stdout


def test_kiauh_old_units_are_disabled_and_stopped_and_its_files_untouched(
    farm: Container, kiauh_before: dict[str, Any], kiauh_imported: Any
) -> None:
    for suffix in KIAUH:
        old_unit = f"octoprint-{suffix}.service"
        assert farm.systemctl("is-enabled", old_unit, check=False).stdout.strip() == "disabled", old_unit
        assert farm.is_active(old_unit) == "inactive", old_unit
    assert installs.file_states(farm, KIAUH_FILES, skip=OWN_LOGS) == kiauh_before["files"]


def test_a_second_kiauh_import_has_nothing_left_and_changes_nothing(farm: Container, kiauh_imported: Any) -> None:
    config = farm.read_file("/etc/octobrix.toml")
    again = farm.run(["octobrixctl", "import", "--from", "kiauh"], timeout=300, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.strip().splitlines()[-1] == (
        "Nothing left to import from kiauh "
        "(already moved in: trident (now printer trident), voron (now printer voron))."
    )
    assert farm.read_file("/etc/octobrix.toml") == config
