"""`octobrixctl doctor`: each check fails on the problem it is for, says what to do, and passes otherwise."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from octobrixd.cameras.streams import Snapshot, StreamerState
from octobrixd.cli.doctor import DoctorContext, render, run_checks
from octobrixd.config.model import Config, parse_config
from octobrixd.devices.inventory import Device, Inventory, complete
from octobrixd.findings import Finding
from octobrixd.render.tree import render_all
from octobrixd.system import paths
from octobrixd.system.paths import Layout
from tests.factories import camera, printer, systemd_says
from tests.test_devices import fake_process
from tests.umock import PRUSA, TWO_CH340, bed, needs_umockdev

CONFIG = """\
[printers.mk3]
serial = "CZPX1919X004XC24974"
port = 5001

[printers.ender]
usb_port = "1-3.1"
port = 5002

[printers.demo]
virtual = true
port = 5000

[cameras.cam1]
serial = "8D6E3B10"
port = 8081
"""

ATTACHED = (
    printer("/dev/ttyACM0", "1-1", "CZPX1919X004XC24974"),
    printer("/dev/ttyUSB1", "1-3.1"),
    printer("/dev/ttyUSB2", "1-3.2"),
    camera("/dev/video0", "1-6", "8D6E3B10"),
)


class Machine:
    """A scratch root that looks like a healthy octobrix host, to break one thing at a time."""

    def __init__(self, root: Path, config_text: str = CONFIG) -> None:
        self.root = root
        self.layout = Layout(root)
        self.config_path = root / "etc" / "octobrix.toml"
        self.config_path.parent.mkdir(parents=True)
        self.config_path.write_text(config_text, encoding="utf-8")
        self.devices: tuple[Device, ...] = ATTACHED
        self.mm_marked = True
        (root / "proc").mkdir()
        config = parse_config(config_text, str(self.config_path))
        for rel, rendered in render_all(config).items():
            if rel == paths.UDEV_RULES:
                self.layout.path(rel).parent.mkdir(parents=True)
                self.layout.path(rel).write_text(rendered.text, encoding="utf-8")
        self.link("mk3", "../ttyACM0")
        self.link("ender", "../ttyUSB1")
        self.link("cam1", "../video0")
        # The camera's stream: ustreamer installed and running, answering with the configured size.
        ustreamer = self.layout.path("usr/bin/ustreamer")
        ustreamer.parent.mkdir(parents=True)
        ustreamer.write_text("#!/bin/sh\n", encoding="utf-8")
        ustreamer.chmod(0o755)
        self.units: dict[str, dict[str, str]] = {
            "ustreamer@cam1.service": {"Id": "ustreamer@cam1.service", "ActiveState": "active", "SubState": "running"}
        }
        self.snapshot = Snapshot(True, "http://127.0.0.1:8081/snapshot answered a 1280x720 JPEG (81234 bytes)")
        self.stream = StreamerState(online=True, width=1280, height=720, captured_fps=15)
        self.snapshot_urls: list[str] = []
        self.logs: dict[str, list[str]] = {}

    def link(self, name: str, target: str) -> None:
        path = self.layout.device_link(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.symlink_to(target)

    def scan(self, config: Config | None) -> Inventory:
        devices = [replace(d, mm_ignored=self.mm_marked) for d in self.devices]
        return complete(devices, config=config, layout=self.layout, query_formats=None)

    def fetch(self, url: str) -> Snapshot:
        self.snapshot_urls.append(url)
        return self.snapshot

    def check(self) -> list[Finding]:
        return run_checks(
            DoctorContext(
                self.layout,
                self.config_path,
                scan_devices=self.scan,
                query_units=lambda units: systemd_says({u: self.units[u] for u in units if u in self.units}),
                fetch_snapshot=self.fetch,
                streamer_state=lambda port: self.stream,
                journal=lambda unit, lines: self.logs.get(unit, [])[-lines:],
            )
        )


def failures(results: list[Finding]) -> dict[str, Finding]:
    return {f"{r.name}: {r.detail}": r for r in results if not r.ok}


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path / "root")


def test_a_healthy_machine_passes_every_check(machine: Machine) -> None:
    results = machine.check()
    assert failures(results) == {}
    names = [r.name for r in results]
    assert names == [
        "config",
        "printer mk3",
        "printer ender",
        "camera cam1",
        "udev rules",
        "brltty",
        "ModemManager",
        "printer ports",
        "stream cam1",
        "USB bandwidth",
        "backups",
    ]
    assert "All 11 checks passed." in render(results)
    assert machine.snapshot_urls == ["http://127.0.0.1:8081/snapshot"], "the URL OctoPrint fetches"


def only_failure(results: list[Finding]) -> Finding:
    failed = [r for r in results if not r.ok]
    assert len(failed) == 1, failed
    assert failed[0].fix, "a failed check must say what to do"
    return failed[0]


def test_missing_config_says_how_to_start(machine: Machine) -> None:
    machine.config_path.unlink()
    failed = only_failure(machine.check())
    assert failed.name == "config" and "does not exist" in failed.detail
    assert "discover --toml" in (failed.fix or "")


def test_invalid_config_lists_its_problems_and_skips_what_needs_it(machine: Machine) -> None:
    machine.config_path.write_text('[printers.a]\nport = 5000\nserial = "x"\nusb_port = "1-1"\n', encoding="utf-8")
    results = machine.check()
    failed = only_failure(results)
    assert failed.name == "config" and "printers.a" in failed.detail
    assert [r.name for r in results] == ["config", "brltty", "ModemManager"]


def test_unplugged_printer(machine: Machine) -> None:
    machine.devices = ATTACHED[1:]
    failed = only_failure(machine.check())
    assert failed.name == "printer mk3"
    assert "not plugged in" in failed.detail and "serial number CZPX1919X004XC24974" in failed.detail


def test_serial_shared_by_two_attached_boards(machine: Machine) -> None:
    machine.devices = (*ATTACHED, printer("/dev/ttyACM1", "1-4", "CZPX1919X004XC24974"))
    failed = only_failure(machine.check())
    assert failed.name == "printer mk3"
    assert "matches 2 attached devices (/dev/ttyACM0, /dev/ttyACM1)" in failed.detail
    assert "usb_port" in (failed.fix or "")


def test_one_board_matched_by_two_entries(tmp_path: Path) -> None:
    text = CONFIG + '\n[printers.again]\nusb_port = "1-1"\nport = 5003\n'
    machine = Machine(tmp_path / "root", text)
    failed = failures(machine.check())
    assert set(failed) == {
        "printer mk3: /dev/ttyACM0 is matched by printers.again, printers.mk3: two instances would fight over it",
        "printer again: /dev/ttyACM0 is matched by printers.again, printers.mk3: two instances would fight over it",
    }


def test_missing_or_wrong_device_link(machine: Machine) -> None:
    machine.layout.device_link("mk3").unlink()
    failed = only_failure(machine.check())
    assert "/dev/octobrix/mk3 does not exist" in failed.detail
    assert "octobrixctl apply" in (failed.fix or "")
    machine.link("mk3", "../ttyUSB2")
    failed = only_failure(machine.check())
    assert failed.detail == "/dev/octobrix/mk3 points to /dev/ttyUSB2, but the device is /dev/ttyACM0"


def test_rules_missing_or_out_of_date(machine: Machine) -> None:
    rules = machine.layout.path(paths.UDEV_RULES)
    rules.write_text(rules.read_text(encoding="utf-8").replace("1-3.1", "1-3.4"), encoding="utf-8")
    failed = only_failure(machine.check())
    assert failed.name == "udev rules" and "does not match" in failed.detail
    rules.unlink()
    failed = only_failure(machine.check())
    assert "is not installed" in failed.detail and "octobrixctl apply" in (failed.fix or "")


def test_brltty_installed(machine: Machine) -> None:
    brltty = machine.layout.path("usr/lib/udev/rules.d/85-brltty.rules")
    brltty.parent.mkdir(parents=True)
    brltty.write_text("", encoding="utf-8")
    failed = only_failure(machine.check())
    assert failed.name == "brltty" and "CH340" in failed.detail
    assert "apt remove brltty" in (failed.fix or "")


def test_modemmanager_running_without_the_ignore_marks(machine: Machine) -> None:
    fake_process(machine.root / "proc", 700, "ModemManager", "0::/system.slice/ModemManager.service\n", {})
    assert failures(machine.check()) == {}
    machine.mm_marked = False
    failed = only_failure(machine.check())
    assert failed.name == "ModemManager"
    assert "/dev/ttyACM0 (mk3)" in failed.detail and "/dev/ttyUSB1 (ender)" in failed.detail
    assert "/dev/ttyUSB2" not in failed.detail  # not configured: not octobrix's to protect yet


def test_printer_port_held_by_another_program(machine: Machine) -> None:
    proc = machine.root / "proc"
    fake_process(proc, 812, "octoprint", "0::/system.slice/octoprint@mk3.service\n", {5: "/dev/ttyACM0"})
    assert failures(machine.check()) == {}
    fake_process(proc, 4242, "screen", "0::/user.slice/user-1000.slice/session-3.scope\n", {3: "/dev/ttyACM0"})
    fake_process(proc, 813, "octoprint", "0::/system.slice/octoprint@ender.service\n", {4: "/dev/ttyACM0"})
    failed = failures(machine.check())
    assert sorted(failed) == [
        "printer mk3: /dev/ttyACM0 is open by octoprint (PID 813 in octoprint@ender.service), not by "
        "octoprint@mk3.service: OctoPrint cannot connect while another program holds the port",
        "printer mk3: /dev/ttyACM0 is open by screen (PID 4242 in session-3.scope), not by "
        "octoprint@mk3.service: OctoPrint cannot connect while another program holds the port",
    ]
    assert all("kill" in (r.fix or "") for r in failed.values())


@needs_umockdev
def test_doctor_command_against_recorded_boards(tmp_path: Path) -> None:
    """The whole command, as a user runs it, on umockdev's boards and a scratch root."""
    config_text = '[printers.mk3]\nserial = "CZPX1919X004XC24974"\nport = 5001\n'
    config_text += '[printers.ender]\nusb_port = "1-3.1"\nport = 5002\n'
    machine = Machine(tmp_path / "root", config_text)
    args = ("doctor", "--config", machine.config_path, "--root", machine.root)

    healthy = bed([PRUSA, TWO_CH340], *args)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "[ ok ] printer mk3: /dev/ttyACM0 (Prusa Research (prusa3d.com) Original Prusa i3 MK3)" in healthy.stdout
    assert "All 8 checks passed." in healthy.stdout

    proc = machine.root / "proc"
    fake_process(proc, 700, "ModemManager", "0::/system.slice/ModemManager.service\n", {})
    fake_process(proc, 4242, "minicom", "0::/user.slice/session-2.scope\n", {3: "/dev/ttyUSB1"})
    broken = bed([PRUSA, TWO_CH340], *args)
    assert broken.returncode == 1
    assert "[FAIL] ModemManager: ModemManager is running and /dev/ttyACM0 (mk3), /dev/ttyUSB1 (ender)" in (
        broken.stdout
    )
    assert "[FAIL] printer ender: /dev/ttyUSB1 is open by minicom (PID 4242" in broken.stdout
    assert "2 of 8 checks failed." in broken.stdout


def test_streamer_not_running_says_where_to_look(machine: Machine) -> None:
    machine.units["ustreamer@cam1.service"] |= {"ActiveState": "failed", "SubState": "failed"}
    failed = only_failure(machine.check())
    assert failed.name == "stream cam1" and failed.detail == "ustreamer@cam1.service is failed (failed)"
    assert "journalctl -u ustreamer@cam1.service" in (failed.fix or "")
    del machine.units["ustreamer@cam1.service"]["SubState"]
    machine.units["ustreamer@cam1.service"]["ActiveState"] = "inactive"
    assert "octobrixctl apply" in (only_failure(machine.check()).fix or "")


def test_snapshot_not_answering(machine: Machine) -> None:
    machine.snapshot = Snapshot(False, "http://127.0.0.1:8081/snapshot did not answer (Connection refused)")
    failed = only_failure(machine.check())
    assert "its snapshot does not work" in failed.detail and "Connection refused" in failed.detail
    assert "timelapses" in failed.detail and "8081" in (failed.fix or "")


def test_camera_gone_shows_as_no_signal(machine: Machine) -> None:
    machine.stream = StreamerState(online=False, width=640, height=480, captured_fps=0)
    failed = only_failure(machine.check())
    assert "serves its 'no signal' picture" in failed.detail
    assert "/dev/octobrix/cam1" in (failed.fix or "")


def test_camera_without_the_configured_size(machine: Machine) -> None:
    machine.stream = StreamerState(online=True, width=640, height=480, captured_fps=15)
    failed = only_failure(machine.check())
    assert "streams 640x480, not the configured 1280x720" in failed.detail
    assert "v4l2-ctl --list-formats-ext" in (failed.fix or "")


def test_streamer_program_missing(tmp_path: Path) -> None:
    machine = Machine(tmp_path / "root", CONFIG + 'streamer = "mjpg-streamer"\n')
    machine.units = {"mjpg-streamer@cam1.service": {"ActiveState": "failed"}}
    failed = only_failure(machine.check())
    assert failed.detail == "mjpg-streamer is not installed, so mjpg-streamer@cam1.service cannot start"
    assert "do not package mjpg-streamer" in (failed.fix or "") and "git clone" in (failed.fix or "")


def test_timelapses_need_ffmpeg(tmp_path: Path) -> None:
    machine = Machine(tmp_path / "root", CONFIG.replace("port = 5002\n", 'port = 5002\ncamera = "cam1"\n'))
    failed = only_failure(machine.check())
    assert failed.name == "timelapse" and "ender" in failed.detail
    assert failed.fix == "sudo apt install ffmpeg"
    ffmpeg = machine.layout.path("usr/bin/ffmpeg")
    ffmpeg.write_text("", encoding="utf-8")
    assert failures(machine.check()) == {}


def test_a_camera_found_by_its_v4l2_name_off_usb(tmp_path: Path) -> None:
    """A CSI or loopback camera has no USB parent: sysfs names it, and its link must point at it."""
    text = CONFIG.replace('serial = "8D6E3B10"', 'device_name = "Lab Cam (loopback)"')
    machine = Machine(tmp_path / "root", text)
    machine.devices = ATTACHED[:3]
    failed = only_failure(machine.check())
    assert failed.name == "camera cam1"
    assert failed.detail == "not present: no video device is named 'Lab Cam (loopback)'"
    node = machine.layout.path("sys/class/video4linux/video10")
    node.mkdir(parents=True)
    (node / "name").write_text("Lab Cam (loopback)\n", encoding="utf-8")
    (node / "index").write_text("0\n", encoding="utf-8")
    machine.link("cam1", "../video10")
    results = machine.check()
    assert failures(results) == {}
    assert any(r.detail == "/dev/video10 (Lab Cam (loopback)) is /dev/octobrix/cam1" for r in results)


def test_a_printer_whose_octoprint_keeps_failing_is_reported_with_its_log_and_what_to_do(machine: Machine) -> None:
    unit = "octoprint@ender.service"
    machine.units[unit] = {"Id": unit, "ActiveState": "failed", "SubState": "failed", "Result": "exit-code",
                           "ExecMainCode": "1", "ExecMainStatus": "3", "NRestarts": "5"}  # fmt: skip
    machine.units["octoprint@mk3.service"] = {"ActiveState": "active", "SubState": "running"}
    machine.logs[unit] = [f"Dec 01 08:29:5{n} farm octoprint[5{n}]: line {n}" for n in range(20)]
    result = only_failure(machine.check())
    assert result.name == "printer ender service"
    lines = result.detail.splitlines()
    assert lines[0] == f"{unit} has failed: its OctoPrint exited with status 3 (5 starts in a row); " + (
        "last lines of its log:"
    )
    assert lines[1:] == machine.logs[unit][-12:]
    assert result.fix is not None and f"sudo systemctl reset-failed {unit} && sudo systemctl start {unit}" in result.fix
    assert "octobrixd also tries again by itself" in result.fix
    assert "1 of 12 checks failed." in render(machine.check())
