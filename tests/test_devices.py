"""Discovery's pure parts: format parsing, suggested matches and entries, who holds a port open."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from octobrixd.config.model import parse_config
from octobrixd.devices.inventory import Device, MatchKey, VideoInfo, complete, find_holders
from octobrixd.devices.suggestions import suggest_entries, suggest_match, suggest_mode
from octobrixd.devices.v4l2 import FrameSize, VideoFormat, parse_list_formats_ext
from octobrixd.system.paths import Layout
from tests.factories import camera, printer
from tests.umock import C270_FORMATS


def finish(*devices: Device, config_text: str | None = None, tmp_path: Path) -> tuple[Device, ...]:
    config = parse_config(config_text, "test.toml") if config_text is not None else None
    (tmp_path / "proc").mkdir(exist_ok=True)
    return complete(devices, config=config, layout=Layout(tmp_path), query_formats=None).devices


# ---------------------------------------------------------------------------------------------
# v4l2-ctl output


def test_c270_formats_parse_into_formats_sizes_and_rates() -> None:
    formats = parse_list_formats_ext(C270_FORMATS.read_text(encoding="utf-8"))
    assert [(f.fourcc, f.description) for f in formats] == [
        ("YUYV", "YUYV 4:2:2"),
        ("MJPG", "Motion-JPEG, compressed"),
    ]
    yuyv = {s.resolution: s.fps for s in formats[0].sizes}
    assert yuyv["640x480"] == (30.0, 25.0, 20.0, 15.0, 10.0, 5.0)
    assert yuyv["1280x720"] == (7.5, 5.0)
    assert formats[1].largest() == FrameSize(1280, 960, (30.0, 15.0))


def test_stepwise_intervals_keep_their_top_rate() -> None:
    text = "\t[0]: 'MJPG' (Motion-JPEG, compressed)\n\t\tSize: Discrete 640x480\n" + (
        "\t\t\tInterval: Stepwise 0.033s - 1.000s with step 0.033s (1.000-30.000 fps)\n"
    )
    (fmt,) = parse_list_formats_ext(text)
    assert fmt.sizes == (FrameSize(640, 480, (30.0,)),)


# ---------------------------------------------------------------------------------------------
# Suggested match and camera mode


def test_unique_serial_is_suggested() -> None:
    match = suggest_match(printer("/dev/ttyACM0", "1-1", "ABC123"))
    assert (match.key, match.value, match.why_port) == (MatchKey.SERIAL, "ABC123", None)


@pytest.mark.parametrize(
    ("serial", "shared", "why"),
    [
        (None, (), "no serial number"),
        ("0001", ("/dev/ttyUSB1",), "also reported by /dev/ttyUSB1"),
        ("has space", (), "cannot match safely"),
    ],
)
def test_port_is_suggested_when_the_serial_cannot_tell_boards_apart(
    serial: str | None, shared: tuple[str, ...], why: str
) -> None:
    device = replace(printer("/dev/ttyUSB0", "3-2.4", serial), serial_shared_with=shared)
    match = suggest_match(device)
    assert (match.key, match.value) == (MatchKey.USB_PORT, "3-2.4")
    assert why in (match.why_port or "")


def test_camera_mode_prefers_mjpeg_720p_at_15_fps() -> None:
    formats = parse_list_formats_ext(C270_FORMATS.read_text(encoding="utf-8"))
    mode = suggest_mode(VideoInfo("C270", formats, None))
    assert (mode.format, mode.resolution, mode.fps, mode.guessed) == ("mjpeg", "1280x720", 15, False)


def test_camera_mode_for_a_raw_only_camera_stays_within_usb2_reach() -> None:
    sizes = (FrameSize(1920, 1080, (5.0,)), FrameSize(640, 480, (30.0, 20.0)), FrameSize(320, 240, (30.0,)))
    mode = suggest_mode(VideoInfo("raw", (VideoFormat("YUYV", "YUYV 4:2:2", sizes),), None))
    assert (mode.format, mode.resolution, mode.fps) == ("yuyv", "640x480", 20)


def test_camera_mode_is_marked_a_guess_without_formats() -> None:
    assert suggest_mode(VideoInfo(None, (), "v4l2-ctl failed")).guessed


# ---------------------------------------------------------------------------------------------
# Entries


def test_entries_avoid_names_and_ports_in_use_and_pass_validation(tmp_path: Path) -> None:
    existing = '[printers.printer1]\nserial = "OLD"\nport = 5001\n[cameras.cam1]\nserial = "C0"\nport = 8081\n'
    devices = finish(
        printer("/dev/ttyACM0", "1-1", "OLD"),
        printer("/dev/ttyUSB0", "1-2"),
        camera("/dev/video0", "2-1", "C1"),
        config_text=existing,
        tmp_path=tmp_path,
    )
    text = suggest_entries(devices, parse_config(existing, "test.toml"))
    assert "/dev/ttyACM0 (Acme Board) is already bound by printers.printer1" in text
    merged = parse_config(existing + "\n" + text, "merged.toml")
    assert merged.printers["printer2"].usb_port == "1-2"
    assert merged.printers["printer2"].port == 5002
    assert merged.cameras["cam2"].serial == "C1"
    assert merged.cameras["cam2"].port == 8082
    assert "follows the cable, not the board" in text
    assert "formats could not be read" in text


def test_device_strings_cannot_break_out_of_a_comment(tmp_path: Path) -> None:
    hostile = printer("/dev/ttyUSB0", "1-2", None, product='Evil\n[printers.x]\nvirtual = true\nport = 1"')
    text = suggest_entries(finish(hostile, tmp_path=tmp_path), None)
    config = parse_config(text, "out.toml")
    assert list(config.printers) == ["printer1"]


def test_nothing_attached_says_so() -> None:
    assert "No printer board or camera is plugged in" in suggest_entries([], None)


def test_config_bindings_follow_serial_and_port(tmp_path: Path) -> None:
    config = '[printers.a]\nserial = "S1"\nport = 5001\n[printers.b]\nusb_port = "1-2"\nport = 5002\n'
    a, b, c = finish(
        printer("/dev/ttyACM0", "1-1", "S1"),
        printer("/dev/ttyACM1", "1-2", "S2"),
        printer("/dev/ttyACM2", "1-3", "S3"),
        config_text=config,
        tmp_path=tmp_path,
    )
    assert (a.bound_to, b.bound_to, c.bound_to) == (("a",), ("b",), ())


def test_shared_serial_is_noticed_per_kind_and_not_within_one_device(tmp_path: Path) -> None:
    devices = finish(
        printer("/dev/ttyACM0", "1-1", "X"),
        printer("/dev/ttyACM1", "1-1", "X"),  # second interface of the same board
        printer("/dev/ttyACM2", "1-4", "X"),
        camera("/dev/video0", "1-5", "X"),  # cameras and printers never share a rule
        tmp_path=tmp_path,
    )
    assert devices[0].serial_shared_with == ("/dev/ttyACM2",)
    assert devices[2].serial_shared_with == ("/dev/ttyACM0", "/dev/ttyACM1")
    assert devices[3].serial_unique


# ---------------------------------------------------------------------------------------------
# Who holds a port open


def fake_process(proc: Path, pid: int, comm: str, cgroup: str, fds: dict[int, str]) -> None:
    fd_dir = proc / str(pid) / "fd"
    fd_dir.mkdir(parents=True)
    (proc / str(pid) / "comm").write_text(comm + "\n", encoding="utf-8")
    (proc / str(pid) / "cgroup").write_text(cgroup, encoding="utf-8")
    for fd, target in fds.items():
        (fd_dir / str(fd)).symlink_to(target)


def test_holders_are_found_from_fd_links_with_their_unit(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    fake_process(
        proc,
        812,
        "octoprint",
        "0::/system.slice/system-octoprint.slice/octoprint@mk3.service\n",
        {0: "/dev/null", 5: "/dev/ttyACM0"},
    )
    fake_process(proc, 4242, "screen", "0::/user.slice/user-1000.slice/session-3.scope\n", {3: "/dev/ttyUSB0"})
    fake_process(proc, 99, "bash", "0::/user.slice\n", {0: "/dev/pts/1", 1: "socket:[1234]"})
    (proc / "self").mkdir()
    holders, complete_ = find_holders(["/dev/ttyACM0", "/dev/ttyUSB0", "/dev/ttyUSB9"], proc)
    assert complete_
    assert [(h.pid, h.command, h.unit) for h in holders["/dev/ttyACM0"]] == [
        (812, "octoprint", "octoprint@mk3.service")
    ]
    assert [(h.pid, h.command, h.unit) for h in holders["/dev/ttyUSB0"]] == [(4242, "screen", "session-3.scope")]
    assert "/dev/ttyUSB9" not in holders


def test_holders_on_the_real_proc(tmp_path: Path) -> None:
    """A real process, a real /proc: the reader must agree with the kernel's fd links."""
    held = tmp_path / "port"
    held.write_text("", encoding="utf-8")
    child = subprocess.Popen(
        [sys.executable, "-c", f"import time; f = open({str(held)!r}); print('ready', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        holders, _ = find_holders([str(held)], Path("/proc"))
        assert child.pid in [h.pid for h in holders.get(str(held), ())]
    finally:
        child.kill()
        child.wait()
    holders, _ = find_holders([str(held)], Path("/proc"))
    assert child.pid not in [h.pid for h in holders.get(str(held), ())]
