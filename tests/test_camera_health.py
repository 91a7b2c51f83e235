"""The camera health check's escalation, against a loopback HTTP stand-in for ustreamer's /snapshot
(tests/httpstub.py: ustreamer and a camera run only in the lab VM, where
tests/lab/test_cameras_vm.py proves the same with the real ones), a scratch root holding the
/dev/octobrix links and a recorded sysfs, and recorded systemctl and sysfs actions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from octobrixd.cameras import health as camera_health
from octobrixd.cameras.health import Health, Watch
from octobrixd.cli.status import format_table
from octobrixd.config.model import parse_config
from octobrixd.farm.status import collect
from octobrixd.system.paths import Layout
from tests.factories import systemd_says
from tests.httpstub import QuietHandler, serving


class Streamer:
    online = True  # what ustreamer says of the frame it serves (X-UStreamer-Online)
    live = True  # the camera delivers: every look sees a new frame
    frame = 0
    asked = 0


class SnapshotHandler(QuietHandler):
    """ustreamer's /snapshot: the camera's latest frame while online, else its NO SIGNAL picture."""

    def do_GET(self) -> None:
        assert self.path == "/snapshot", self.path
        Streamer.asked += 1
        if Streamer.online and Streamer.live:
            Streamer.frame += 1
        body = b"\xff\xd8 frame %d" % Streamer.frame if Streamer.online else b"\xff\xd8 NO SIGNAL"
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("X-UStreamer-Online", "true" if Streamer.online else "false")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def ustreamer() -> Iterator[int]:
    Streamer.online, Streamer.live, Streamer.frame, Streamer.asked = True, True, 0, 0
    with serving(SnapshotHandler) as port:
        yield port


def config_for(port: int, extra: str = "") -> str:
    return f'[cameras.cam1]\nserial = "SN1"\nport = {port}\n' + extra


def usb_camera(root: Path) -> Path:
    """/dev/octobrix/cam1 -> video0, whose device is interface 1-3:1.0 of USB device 1-3 (as sysfs has it)."""
    usb = root / "sys/devices/pci0000:00/0000:00:14.0/usb1/1-3"
    (usb / "1-3:1.0/video4linux/video0").mkdir(parents=True)
    (usb / "authorized").write_text("1\n")
    (usb / "busnum").write_text("1\n")
    (root / "sys/class/video4linux").mkdir(parents=True)
    (root / "sys/class/video4linux/video0").symlink_to(usb / "1-3:1.0/video4linux/video0")
    (usb / "1-3:1.0/video4linux/video0/device").symlink_to(usb / "1-3:1.0")
    (root / "dev/octobrix").mkdir(parents=True)
    (root / "dev/video0").touch()
    (root / "dev/octobrix/cam1").symlink_to(root / "dev/video0")
    return usb


def watch(root: Path, calls: list[str]) -> Watch:
    def reattach(device: Path) -> None:
        calls.append(f"reattach {device.name}")

    return Watch(Layout(root), restart=lambda unit: calls.append(f"restart {unit}"), is_active=lambda _u: True,
                 reattach=reattach)  # fmt: skip


def test_a_stream_without_frames_is_restarted_then_reattached_then_frozen(ustreamer: int, tmp_path: Path) -> None:
    usb_camera(tmp_path)
    config = parse_config(config_for(ustreamer), "/etc/octobrix.toml")
    calls: list[str] = []
    health = watch(tmp_path, calls)
    assert not health.check(config) and calls == []
    Streamer.online = False  # ustreamer runs, serving NO SIGNAL
    assert not health.check(config), "one look without frames is not enough (a stream starting)"
    Streamer.online = True
    health.check(config)
    health.check(config)
    assert calls == [], "a miss is forgiven by two looks in a row with frames"
    Streamer.online = False
    health.check(config)
    Streamer.online = True
    assert not health.check(config), "but not by one: a stuck camera can flicker"
    Streamer.online = False
    assert health.check(config) and calls == ["restart ustreamer@cam1.service"]
    assert health.cameras["cam1"].state is Health.RESTARTED
    health.check(config)
    assert health.check(config) and calls[-1] == "reattach 1-3"
    health.check(config)
    assert health.check(config) and health.frozen() == ["cam1"]
    assert "1 frozen (cam1" in camera_health.summary_suffix(health)
    for _ in range(6):
        health.check(config)
    assert len(calls) == 2, "given up: nothing more is done to a frozen camera"

    # status shows it, from the file octobrixd wrote.
    props = systemd_says({"ustreamer@cam1.service": {"ActiveState": "active", "SubState": "running"}})
    _, (row,) = collect(config, Layout(tmp_path), props, {}, "farm")
    assert row.stream == "frozen"
    assert row.stream_note is not None and "re-attaching it at USB level" in row.stream_note
    assert "try: re-plug the camera" in row.stream_note
    table = format_table([], [row])
    assert table.splitlines()[1].split()[1] == "frozen"
    assert "cam1: frozen: no frames after restarting its streamer and re-attaching it at USB level" in table

    Streamer.online = True
    assert not health.check(config) and health.frozen() == ["cam1"], "one look with frames is not a recovery"
    Streamer.online = False
    health.check(config)
    assert health.frozen() == ["cam1"] and len(calls) == 2, "a flicker of frames starts nothing again"
    Streamer.online = True
    health.check(config)
    assert health.check(config) and health.frozen() == []
    _, (row,) = collect(config, Layout(tmp_path), props, {}, "farm")
    assert row.stream is None


def test_a_stale_frame_after_each_reopen_is_no_frame(ustreamer: int, tmp_path: Path) -> None:
    """A hung camera that hands the streamer its last buffered frame again on each reopen, then
    nothing: ustreamer flaps between online (that frame) and NO SIGNAL. Judged by frames delivered
    between two looks, it is frozen however the flapping falls on the looks; "online" alone would
    have counted two online looks in a row as a recovery."""
    usb_camera(tmp_path)
    config = parse_config(config_for(ustreamer), "/etc/octobrix.toml")
    calls: list[str] = []
    health = watch(tmp_path, calls)
    health.check(config)
    health.check(config)
    Streamer.live = False  # the camera hangs: its last frame is all ustreamer ever gets again
    flaps = [True, True, False, True, True, True, False, True, True, True, True, True, False, True, True, True]
    for online in flaps:
        Streamer.online = online
        health.check(config)
    assert calls == ["restart ustreamer@cam1.service", "reattach 1-3"], calls
    assert health.frozen() == ["cam1"], health.cameras["cam1"]
    assert "delivers frames again" not in health.cameras["cam1"].note

    Streamer.online, Streamer.live = True, True  # frames again
    health.check(config)
    assert health.check(config) and health.frozen() == []
    assert health.cameras["cam1"].state is Health.OK


def test_a_camera_not_on_usb_goes_from_restart_to_frozen_and_says_why(ustreamer: int, tmp_path: Path) -> None:
    (tmp_path / "dev/octobrix").mkdir(parents=True)
    (tmp_path / "dev/video10").touch()
    (tmp_path / "dev/octobrix/cam1").symlink_to(tmp_path / "dev/video10")
    config = parse_config(config_for(ustreamer), "/etc/octobrix.toml")
    calls: list[str] = []
    health = watch(tmp_path, calls)
    Streamer.online = False
    for _ in range(4):
        health.check(config)
    assert calls == ["restart ustreamer@cam1.service"]
    assert health.cameras["cam1"].state is Health.FROZEN
    assert "(not on USB: no re-attach)" in health.cameras["cam1"].note


def test_only_plugged_in_configured_cameras_are_asked(ustreamer: int, tmp_path: Path) -> None:
    config = parse_config(config_for(ustreamer), "/etc/octobrix.toml")
    health = watch(tmp_path, [])
    health.check(config)
    assert (health.probes, Streamer.asked) == (0, 0), "no /dev/octobrix/cam1: nothing is asked"
    usb_camera(tmp_path)
    health.check(config)
    assert (health.probes, Streamer.asked) == (1, 1)
    # A streamer nobody configured (the same stand-in, now under no camera's name) is never asked.
    health.check(parse_config("", "/etc/octobrix.toml"))
    assert Streamer.asked == 1 and health.cameras == {}


def test_a_stopped_streamer_is_not_healed(ustreamer: int, tmp_path: Path) -> None:
    usb_camera(tmp_path)
    config = parse_config(config_for(ustreamer), "/etc/octobrix.toml")
    calls: list[str] = []
    health = Watch(Layout(tmp_path), restart=calls.append, is_active=lambda _u: False)
    Streamer.online = False
    for _ in range(6):
        health.check(config)
    assert calls == [], "stopped on purpose (or starting): not octobrix's to restart"


def test_reattach_writes_authorized_zero_then_one(tmp_path: Path) -> None:
    usb = usb_camera(tmp_path)
    found = camera_health.usb_device_of(Layout(tmp_path), "cam1")
    assert found is not None and found.samefile(usb)
    written: list[str] = []
    original = Path.write_text

    def record(self: Path, text: str, *args: object, **kwargs: object) -> int:
        written.append(f"{self.name}={text.strip()}")
        return original(self, text, encoding="ascii")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "write_text", record)
        camera_health.reattach(found, pause=0)
    assert written == ["authorized=0", "authorized=1"]
    assert (usb / "authorized").read_text() == "1\n"


def test_the_health_file_stays_fresh_with_an_even_number_of_cameras(tmp_path: Path) -> None:
    with serving(SnapshotHandler) as first, serving(SnapshotHandler) as second:
        Streamer.online, Streamer.live = True, True
        (tmp_path / "dev/octobrix").mkdir(parents=True)
        text = ""
        for n, port in enumerate((first, second)):
            (tmp_path / f"dev/video{n}").touch()
            (tmp_path / f"dev/octobrix/cam{n}").symlink_to(tmp_path / f"dev/video{n}")
            text += f'[cameras.cam{n}]\nserial = "SN{n}"\nport = {port}\n'
        config = parse_config(text, "/etc/octobrix.toml")
        health = watch(tmp_path, [])
        for _ in range(camera_health.SAVE_EVERY + 1):
            health.check(config)
    saved = json.loads((tmp_path / camera_health.HEALTH_FILE).read_text())
    assert saved["probes"] == 2 * (camera_health.SAVE_EVERY + 1), "the CPU figures and status are kept fresh"
