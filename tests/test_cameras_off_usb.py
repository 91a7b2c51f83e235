"""Cameras that are not on USB (v4l2loopback, a CSI camera's platform node, a PCI capture card) are found
and added like USB ones, bound by their V4L2 name (device_name): discovery, the found list, the add
request, the bandwidth advisor, doctor and hotplug. The umockdev tests read the hand-written
recordings of a v4l2loopback device and a platform camera through the real pyudev; the rest build
devices by hand (tests/factories.py).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from octobrixd.adding.found import build_found, device_id
from octobrixd.adding.requests import AddRequest, answer, perform
from octobrixd.cameras.bandwidth import advise_system, placements
from octobrixd.cameras.streams import StreamerState
from octobrixd.cli.add import add_all, describe
from octobrixd.cli.discover import bandwidth_lines
from octobrixd.config.model import load_config, parse_config
from octobrixd.daemon import Daemon, Notifier
from octobrixd.devices import hotplug
from octobrixd.devices.inventory import BusType, Device, complete, read_device
from octobrixd.devices.suggestions import suggest_entries, suggest_match
from octobrixd.errors import OctobrixError
from octobrixd.render.udev import render_udev_rules
from octobrixd.system.paths import Layout
from tests.factories import camera, loopback
from tests.test_adding import STARTER, comments, starter_copy
from tests.test_doctor import Machine, failures, only_failure
from tests.udevmatch import links_for, load_recordings
from tests.umock import C270, LOOPBACK, LOOPBACK_NAME, PLATFORM_CAMERA, PRUSA, bed, loopback_twin, needs_umockdev

NO_CONFIG = "/nonexistent/octobrix.toml"
LAB = "Lab Cam (loopback)"


def scanned(*devices: Device, config_text: str | None = None, tmp_path: Path) -> tuple[Device, ...]:
    config = parse_config(config_text, "/etc/octobrix.toml") if config_text is not None else None
    (tmp_path / "proc").mkdir(exist_ok=True)
    return complete(devices, config=config, layout=Layout(tmp_path), query_formats=None).devices


# ---------------------------------------------------------------------------------------------
# Reading udev: a capture node off USB is a camera; a tty off USB is still no printer port


@dataclass
class FakeUdev:
    """The parts of a pyudev device that read_device and hotplug read."""

    subsystem: str
    sys_path: str
    device_node: str | None
    properties: dict[str, str]
    attrs: dict[str, str] = field(default_factory=dict)
    ancestors: tuple[FakeUdev, ...] = ()
    driver: str | None = None

    @property
    def sys_name(self) -> str:
        return self.sys_path.rsplit("/", 1)[-1]

    @property
    def attributes(self) -> FakeUdev:
        return self

    def asstring(self, name: str) -> str:
        return self.attrs[name]  # KeyError, as pyudev raises for a missing attribute

    def find_parent(self, subsystem: str, device_type: str | None = None) -> FakeUdev | None:
        return next((a for a in self.ancestors if a.subsystem == subsystem), None)


def fake_loopback(node: str = "video10", name: str = LOOPBACK_NAME) -> FakeUdev:
    return FakeUdev(
        "video4linux",
        f"/sys/devices/virtual/video4linux/{node}",
        f"/dev/{node}",
        {"ID_V4L_CAPABILITIES": ":capture:video_output:", "ID_V4L_PRODUCT": name},
        {"index": "0", "name": name},
    )


def fake_platform_tty(node: str) -> FakeUdev:
    """A UART of the board itself named like a USB serial port: no USB device above it."""
    uart = FakeUdev("platform", "/sys/devices/platform/soc/fe201000.serial", None, {}, driver="uart-pl011")
    return FakeUdev("tty", f"/sys/devices/platform/soc/fe201000.serial/tty/{node}", f"/dev/{node}", {}, {},
                    (uart,))  # fmt: skip


def test_a_capture_node_off_usb_is_a_camera_named_by_its_v4l2_name() -> None:
    device = read_device(fake_loopback())
    assert device is not None and device.usb is None
    assert (device.node, device.bus_type, device.label) == ("/dev/video10", BusType.VIRTUAL, LOOPBACK_NAME)
    assert device.where == "not on USB (a virtual device)"
    assert device.serial is None and device.serial_unique is False


@pytest.mark.parametrize("node", ["ttyACM5", "ttyUSB9", "ttyS0"])
def test_a_tty_off_usb_is_still_never_a_printer_port(node: str) -> None:
    assert read_device(fake_platform_tty(node)) is None


def test_hotplug_describes_a_camera_appearing_off_usb_but_not_a_tty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`modprobe v4l2loopback` announces a video node with no ID_BUS: octobrixd says what would bind it,
    as for a USB plug (and its found list is rescanned on every tty or video event anyway)."""
    daemon = Daemon(tmp_path / "octobrix.toml", Layout(tmp_path / "root"), Notifier())
    daemon.config = parse_config("[printers.demo]\nvirtual = true\nport = 5000\n", "/etc/octobrix.toml")
    try:
        described: list[str] = []

        def suggest(device: Any) -> str | None:
            described.append(device.device_node)
            return daemon.suggest(device)

        caplog.set_level(logging.INFO, logger="octobrixd")
        event = hotplug.record(fake_loopback(), "add", suggest)
        assert event.usb is False
        assert event.suggestion == (
            f'[cameras.cam1] device_name = "{LOOPBACK_NAME}" resolution = "640x480" fps = 15 format = "mjpeg" '
            "port = 8081"
        )
        daemon.on_device(event)
        assert f"unknown camera plugged in at /dev/video10; to use it add to {tmp_path / 'octobrix.toml'}: " in (
            caplog.text
        )
        for node in ("ttyACM5", "ttyS0"):
            tty = hotplug.record(fake_platform_tty(node), "add", suggest)
            assert tty.suggestion is None
            daemon.on_device(tty)
        assert described == ["/dev/video10"], "a tty off USB is not even described"
        assert "ttyACM5" not in caplog.text and "ttyS0" not in caplog.text
    finally:
        daemon.api_calls.shutdown(wait=True)
        daemon.streamer_calls.shutdown(wait=True)


# ---------------------------------------------------------------------------------------------
# The found list and the add


def test_found_proposes_it_bound_by_its_name(tmp_path: Path) -> None:
    (lab,) = scanned(loopback("/dev/video10"), tmp_path=tmp_path)
    assert device_id(lab) != device_id(loopback("/dev/video11")), "its id needs no serial number"
    (item,) = build_found([lab], None)
    data = item.to_json()
    assert (data["bound_by"], data["match"]) == ("device_name", LOOPBACK_NAME)
    assert (data["usb_port"], data["vid_pid"], data["serial"], data["vendor"]) == (None, None, None, None)
    assert (data["bus_type"], data["where"], data["product"]) == (
        "virtual",
        "not on USB (a virtual device)",
        LOOPBACK_NAME,
    )
    assert data["cannot_bind"] is None and data["port_note"] is None
    assert "another one named the same would take it" in data["name_note"]
    assert item.entry(8081) == {"device_name": LOOPBACK_NAME, "resolution": "640x480", "fps": 15,
                                "format": "mjpeg", "port": 8081}  # fmt: skip
    shown = describe(item)
    assert shown.startswith("Found: camera /dev/video10, Dummy video device (0x0000), not on USB (a virtual device)")
    assert "None" not in shown and "USB port" not in shown, shown


def test_add_writes_its_device_name_keeping_every_comment(tmp_path: Path) -> None:
    path = starter_copy(tmp_path)
    devices = scanned(loopback("/dev/video10", LAB), tmp_path=tmp_path)
    found = build_found(devices, load_config(path))
    said = perform(AddRequest(found[0].id, "labcam", printer="demo"), path, found=found, devices=devices)
    assert said.startswith("added [cameras.labcam]")
    text = path.read_text(encoding="utf-8")
    assert set(comments(STARTER.read_text(encoding="utf-8"))) <= set(comments(text))
    assert f" {LAB}, not on USB (a virtual device), added by octobrix; bound by its V4L2 name {LAB!r}" in text
    config = load_config(path)
    camera_entry = config.cameras["labcam"]
    assert (camera_entry.device_name, camera_entry.serial, camera_entry.usb_port) == (LAB, None, None)
    assert config.printers["demo"].camera == "labcam"
    # Now bound by that entry: no longer found, and an add of it again says who has it.
    again = scanned(*devices, config_text=text, tmp_path=tmp_path)
    assert again[0].bound_to == ("labcam",)
    assert build_found(again, config) == ()
    refused = answer(lambda: perform(AddRequest(found[0].id, "other"), path, found=(), devices=again))
    assert refused["ok"] is False and f"/dev/video10 ({LAB}) is already bound by cameras.labcam" in refused["error"]
    assert f"# /dev/video10 ({LAB}) is already bound by cameras.labcam." in suggest_entries(again, config)


def test_add_all_adds_a_loopback_beside_a_usb_camera(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = starter_copy(tmp_path)
    devices = scanned(camera("/dev/video0", "1-3", "CAM0001"), loopback("/dev/video10"), tmp_path=tmp_path)
    said = add_all(build_found(devices, load_config(path)), devices, path, confirm=lambda _n: True)
    assert [line.split(" to ")[0] for line in said] == ["added [cameras.cam1]", "added [cameras.cam2]"]
    shown = capsys.readouterr().out
    assert "not on USB (a virtual device)\n  bound by its V4L2 name" in shown and "null" not in shown, shown
    config = load_config(path)
    assert (config.cameras["cam1"].serial, config.cameras["cam2"].device_name) == ("CAM0001", LOOPBACK_NAME)


@pytest.mark.parametrize(
    ("others", "why", "what"),
    [
        (
            (loopback("/dev/video11"),),
            f"its V4L2 name {LOOPBACK_NAME!r} is also the name of /dev/video11",
            "card_label",
        ),
        ((camera("/dev/video0", "1-3", "C1"),), "its V4L2 name 'Cam' is also the name of /dev/video0", "unplug"),
    ],
    ids=["two-loopbacks", "a-usb-camera-of-that-name"],
)
def test_a_name_another_camera_has_cannot_bind_and_says_why(
    tmp_path: Path, others: tuple[Device, ...], why: str, what: str
) -> None:
    """A device_name rule matches every capture node of that name, the USB camera's too."""
    name = LOOPBACK_NAME if others[0].usb is None else "Cam"
    devices = scanned(loopback("/dev/video10", name), *others, tmp_path=tmp_path)
    lab = next(d for d in devices if d.node == "/dev/video10")
    item = next(f for f in build_found(devices, None) if f.node == "/dev/video10")
    assert item.cannot_bind is not None and why in item.cannot_bind
    assert "whichever udev handled last" in item.cannot_bind
    assert item.cannot_bind_hint is not None and what in item.cannot_bind_hint
    snippet = suggest_entries(devices, None)
    assert f"# Cannot be bound: {why}, so an entry bound by that name would take whichever udev handled last." in (
        snippet
    )
    assert "device_name" not in snippet, "no entry for it"
    path = starter_copy(tmp_path)
    before = path.read_bytes()
    refused = answer(lambda: perform(AddRequest(item.id, "lab"), path, found=(item,), devices=devices))
    assert refused["ok"] is False and why in refused["error"] and what in refused["hint"]
    assert path.read_bytes() == before
    assert suggest_match(lab).value == name, "the name it would be bound by, were it alone"


def test_add_all_skips_the_ones_that_cannot_be_bound_saying_why(tmp_path: Path) -> None:
    path = starter_copy(tmp_path)
    devices = scanned(loopback("/dev/video10"), loopback("/dev/video11"), tmp_path=tmp_path)
    with pytest.raises(OctobrixError, match="nothing is plugged in that is not in the farm yet") as nothing:
        add_all(build_found(devices, load_config(path)), devices, path, confirm=lambda _n: True)
    assert "(skipped /dev/video10: it cannot be bound: its V4L2 name" in str(nothing.value)
    assert "card_label" in str(nothing.value)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        (None, "it is not on USB and its driver gives it no V4L2 name to be bound by"),
        ('Cam "1"', "its V4L2 name 'Cam \"1\"' cannot bind it: contains '\"', which cannot be matched safely"),
        ("Cam*", "its V4L2 name 'Cam*' cannot bind it: contains '*'"),
        (" Cam", "its V4L2 name ' Cam' cannot bind it: ' Cam' is not a V4L2 device name"),
    ],
)
def test_no_name_or_one_a_udev_rule_cannot_match_cannot_bind(tmp_path: Path, name: str | None, why: str) -> None:
    (item,) = build_found(scanned(loopback("/dev/video10", name), tmp_path=tmp_path), None)
    assert item.cannot_bind is not None and item.cannot_bind.startswith(why), item.cannot_bind
    assert item.cannot_bind_hint and ("card_label" in item.cannot_bind_hint)


# ---------------------------------------------------------------------------------------------
# The bandwidth advisor and doctor


BOTH = f"""\
[cameras.usbcam]
serial = "CAM0001"
port = 8081

[cameras.lab]
device_name = "{LAB}"
resolution = "1920x1080"
fps = 30
format = "yuyv"
port = 8082
"""


def test_bandwidth_leaves_a_camera_off_usb_out_without_a_warning(tmp_path: Path) -> None:
    """Raw 1080p30 would overbook any USB 2 bus; off USB it books no USB time at all."""
    config = parse_config(BOTH, "/etc/octobrix.toml")
    (tmp_path / "proc").mkdir()
    inventory = complete([camera("/dev/video0", "1-3", "CAM0001"), loopback("/dev/video10", LAB)], config=config,
                         layout=Layout(tmp_path), query_formats=None)  # fmt: skip
    assert sorted(placements(config, inventory, Layout(tmp_path))) == ["usbcam"]
    advice = advise_system(config, Layout(tmp_path), inventory)
    assert (advice.off_usb, advice.unplaced) == (("lab",), ())
    assert [c.name for d in advice.domains for c in d.cameras] == ["usbcam"]
    assert advice.warnings() == []
    lines = bandwidth_lines(advice)
    assert "  not on USB, so they take no USB bandwidth: lab" in lines
    assert not any("not judged" in line for line in lines)
    # Not plugged in, it is not judged either: nothing says where it will be.
    unplugged = advise_system(config, Layout(tmp_path), complete([], config=config, layout=Layout(tmp_path),
                                                                  query_formats=None))  # fmt: skip
    assert (unplugged.off_usb, unplugged.unplaced) == ((), ("lab", "usbcam"))


def test_doctor_sees_the_named_camera_attached_with_its_link_and_no_usb_time(tmp_path: Path) -> None:
    text = BOTH.replace('[cameras.usbcam]\nserial = "CAM0001"\nport = 8081\n\n', "").replace("8082", "8081")
    machine = Machine(tmp_path / "root", text.replace("[cameras.lab]", "[cameras.cam1]"))
    machine.devices = (loopback("/dev/video10", LAB),)
    machine.units["ustreamer@cam1.service"] = {"ActiveState": "active", "SubState": "running"}
    machine.stream = StreamerState(online=True, width=1920, height=1080, captured_fps=30)
    machine.link("cam1", "../video10")
    results = machine.check()
    assert not any("camera cam1" in key for key in failures(results)), failures(results)
    assert any(r.detail == f"/dev/video10 ({LAB}) is /dev/octobrix/cam1" for r in results)
    assert any(r.detail == "not on USB, so they take no USB bandwidth: cam1" for r in results)
    # Two attached cameras with its name: the link could go to either.
    machine.devices = (loopback("/dev/video10", LAB), loopback("/dev/video11", LAB))
    failed = only_failure(machine.check())
    assert "matches 2 attached devices (/dev/video10, /dev/video11)" in failed.detail
    assert failed.fix is not None and "card_label" in failed.fix


# ---------------------------------------------------------------------------------------------
# Through the real pyudev, in a umockdev testbed


def discover_json(devices: list[Path], *args: str | Path) -> dict[str, Any]:
    result = bed(devices, "discover", "--json", *args)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@needs_umockdev
def test_discover_lists_cameras_off_usb_with_their_name_and_driver() -> None:
    data = discover_json([C270, PLATFORM_CAMERA, LOOPBACK], "--config", NO_CONFIG)
    cameras = {c["node"]: c for c in data["cameras"]}
    assert sorted(cameras) == ["/dev/video0", "/dev/video10", "/dev/video2"]
    lab, csi = cameras["/dev/video10"], cameras["/dev/video2"]
    assert (lab["bus_type"], lab["driver"], lab["label"], lab["name"]) == (
        "virtual",
        None,
        LOOPBACK_NAME,
        LOOPBACK_NAME,
    )
    assert (csi["bus_type"], csi["driver"], csi["label"]) == ("platform", "bcm2835-camera", "mmal service 16.1")
    for device in (lab, csi):
        assert [device[k] for k in ("usb_port", "bus", "vendor_id", "product_id", "serial")] == [None] * 5
        assert device["suggested_match"] == {"key": "device_name", "value": device["name"], "why_port": None}
    assert cameras["/dev/video0"]["bus_type"] == "usb"

    table = bed([C270, PLATFORM_CAMERA, LOOPBACK], "discover", "--config", NO_CONFIG)
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line for line in table.stdout.splitlines() if line.strip().startswith("/dev/")}
    assert re.search(r"/dev/video10\s+not on USB\s+virtual\s+-\s+\(none\)\s+-\s+unknown\s+Dummy video device", rows[
        "/dev/video10"])  # fmt: skip
    assert rows["/dev/video2"].endswith("mmal service 16.1, driver bcm2835-camera")
    assert "Cameras not on USB are bound by their V4L2 name" in table.stdout
    assert "None" not in table.stdout


@needs_umockdev
def test_discover_toml_binds_them_by_name_and_the_rules_link_each_one(tmp_path: Path) -> None:
    recordings = [C270, PLATFORM_CAMERA, LOOPBACK]
    result = bed(recordings, "discover", "--toml", "--config", NO_CONFIG)
    assert result.returncode == 0, result.stderr
    assert f"# {LOOPBACK_NAME}, not on USB (a virtual device), now /dev/video10" in result.stdout
    assert (
        "# mmal service 16.1, driver bcm2835-camera, not on USB (a platform device), now /dev/video2" in result.stdout
    )
    assert result.stdout.count("# Bound by its V4L2 name: it is not on USB") == 2
    assert result.stdout.count("another one named the same would\n# take it") == 2
    path = tmp_path / "octobrix.toml"
    path.write_text(result.stdout, encoding="utf-8")
    config = load_config(path)
    assert {n: (c.serial, c.device_name) for n, c in config.cameras.items()} == {
        "cam1": ("8D6E3B10", None),
        "cam2": (None, "mmal service 16.1"),
        "cam3": (None, LOOPBACK_NAME),
    }
    rules = render_udev_rules(config)
    assert f'ATTR{{name}}=="{LOOPBACK_NAME}"' in rules
    assert links_for(rules, load_recordings(recordings)) == {
        "/dev/video0": ["octobrix/cam1"],
        "/dev/video2": ["octobrix/cam2"],
        "/dev/video10": ["octobrix/cam3"],
    }


@needs_umockdev
def test_two_loopbacks_with_one_name_are_listed_but_not_bound(tmp_path: Path) -> None:
    twin = loopback_twin(tmp_path / "twin.umockdev")
    data = discover_json([LOOPBACK, twin], "--config", NO_CONFIG)
    lab, other = data["cameras"]
    assert (lab["node"], lab["name_shared_with"]) == ("/dev/video10", ["/dev/video11"])
    assert (other["node"], other["name_shared_with"]) == ("/dev/video11", ["/dev/video10"])
    assert "is also the name of /dev/video11" in lab["suggested_match"]["cannot_bind"]
    assert "card_label" in lab["suggested_match"]["cannot_bind_hint"]
    toml = bed([LOOPBACK, twin], "discover", "--toml", "--config", NO_CONFIG)
    assert toml.stdout.count("# Cannot be bound: its V4L2 name") == 2 and "[cameras." not in toml.stdout
    table = bed([LOOPBACK, twin], "discover", "--config", NO_CONFIG)
    assert f"/dev/video11 cannot be bound: its V4L2 name {LOOPBACK_NAME!r} is also the name of /dev/video10" in (
        table.stdout
    )


@needs_umockdev
def test_an_entry_with_its_name_binds_it_and_add_finds_nothing_more(tmp_path: Path) -> None:
    path = starter_copy(tmp_path)
    added = bed([PRUSA, LOOPBACK], "add", "--all", "--config", path, "--root", tmp_path / "root")
    assert added.returncode == 0, added.stderr
    assert f"Found: camera /dev/video10, {LOOPBACK_NAME}, not on USB (a virtual device)" in added.stdout
    assert "added [cameras.cam1]" in added.stdout and "added [printers.printer1]" in added.stdout
    assert set(comments(STARTER.read_text(encoding="utf-8"))) <= set(comments(path.read_text(encoding="utf-8")))
    assert load_config(path).cameras["cam1"].device_name == LOOPBACK_NAME

    (lab,) = discover_json([PRUSA, LOOPBACK], "--config", path)["cameras"]
    assert (lab["bound_to"], lab["suggested_match"]) == (["cam1"], None)
    table = bed([PRUSA, LOOPBACK], "discover", "--config", path)
    assert re.search(r"/dev/video10\s+not on USB\s+virtual\s+-\s+\(none\)\s+cam1\s", table.stdout), table.stdout
    toml = bed([PRUSA, LOOPBACK], "discover", "--toml", "--config", path)
    assert f"# /dev/video10 ({LOOPBACK_NAME}) is already bound by cameras.cam1." in toml.stdout
    again = bed([PRUSA, LOOPBACK], "add", "--all", "--config", path, "--root", tmp_path / "root")
    assert again.returncode == 1 and "nothing is plugged in that is not in the farm yet" in again.stderr


@needs_umockdev
def test_discover_wait_reports_a_loopback_appearing() -> None:
    """`modprobe v4l2loopback` while `discover --wait` listens: that is the camera plugged in."""
    result = bed([PRUSA], "discover", "--wait", "--timeout", "20", "--config", NO_CONFIG, plug=[LOOPBACK])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Plugged in: camera /dev/video10, {LOOPBACK_NAME}, not on USB (a virtual device)")
    entry = parse_config(result.stdout.split("\n\n", 1)[1], "stdout")
    assert entry.cameras["cam1"].device_name == LOOPBACK_NAME
