"""`octobrixctl discover` against the hand-written umockdev recordings of real boards and a webcam.

What these cannot cover, and why: umockdev answers no V4L2 ioctl, so the camera's real format
query only shows here that its failure is reported, not what a camera answers (the formats are
fed from a saved v4l2-ctl output instead); umockdev has no udev database, so links and ID_*
values come from the recorded properties, exactly as discovery reads them; and no real kernel
driver or USB hub is involved, which the lab VM's hotplug test covers.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from octobrixd.config.model import parse_config
from octobrixd.render.udev import render_udev_rules
from tests.conftest import require_programs
from tests.test_devices import fake_process
from tests.udevmatch import links_for, load_recordings
from tests.umock import (
    ALL,
    C270,
    C270_FORMATS,
    CREALITY,
    FTDI,
    PRUSA,
    REPO,
    STM32,
    TWO_CH340,
    bed,
    c270_at,
    needs_umockdev,
    stm32_twin,
)

pytestmark = needs_umockdev

NO_CONFIG = "/nonexistent/octobrix.toml"

# What a user would read off each board with `udevadm info -a`, by hand, today.
EXPECTED = {
    "/dev/ttyACM0": ("1-1", "2c99", "0002", "cdc_acm", "CZPX1919X004XC24974", "Prusa Research (prusa3d.com)"),
    "/dev/ttyACM1": ("1-5", "0483", "5740", "cdc_acm", "206437A1554E", "STMicroelectronics"),
    "/dev/ttyUSB0": ("1-2", "1a86", "7523", "ch341", None, None),
    "/dev/ttyUSB1": ("1-3.1", "1a86", "7523", "ch341", None, None),
    "/dev/ttyUSB2": ("1-3.2", "1a86", "7523", "ch341", None, None),
    "/dev/ttyUSB3": ("1-4", "0403", "6001", "ftdi_sio", "A50285BI", "FTDI"),
}


def discover_json(devices: list[Path], *args: str | Path, **kwargs: Any) -> dict[str, Any]:
    result = bed(devices, "discover", "--json", *args, **kwargs)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def by_node(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {device["node"]: device for device in data["printers"] + data["cameras"]}


def test_json_gives_each_board_its_identity() -> None:
    data = discover_json(ALL, "--config", NO_CONFIG)
    printers = {device["node"]: device for device in data["printers"]}
    assert sorted(printers) == sorted(EXPECTED)
    for node, (port, vendor, product, driver, serial, manufacturer) in EXPECTED.items():
        device = printers[node]
        assert (device["usb_port"], device["vendor_id"], device["product_id"]) == (port, vendor, product), node
        assert (device["driver"], device["serial"], device["manufacturer"]) == (driver, serial, manufacturer), node
        assert device["bus"] == 1
        assert device["bound_to"] == []
        assert device["held_by"] == []
    prusa = printers["/dev/ttyACM0"]
    assert prusa["product"] == "Original Prusa i3 MK3"
    assert prusa["by_id"] == [
        "/dev/serial/by-id/usb-Prusa_Research__prusa3d.com__Original_Prusa_i3_MK3_CZPX1919X004XC24974-if00"
    ]
    assert prusa["by_path"] == ["/dev/serial/by-path/pci-0000:00:14.0-usb-0:1:1.0"]
    assert printers["/dev/ttyUSB3"]["by_path"] == ["/dev/serial/by-path/pci-0000:00:14.0-usb-0:4:1.0-port0"]
    # The CH340 has no strings of its own beyond "USB Serial": udev's hardware database names it.
    assert printers["/dev/ttyUSB0"]["label"] == "QinHeng Electronics CH340 serial converter"


def test_serial_numbers_judged_unique_or_not_and_matches_suggested_accordingly() -> None:
    printers = by_node(discover_json(ALL, "--config", NO_CONFIG))
    for node in ("/dev/ttyACM0", "/dev/ttyACM1", "/dev/ttyUSB3"):
        assert printers[node]["serial_unique"] is True
        assert printers[node]["suggested_match"] == {
            "key": "serial",
            "value": printers[node]["serial"],
            "why_port": None,
        }
    for node in ("/dev/ttyUSB0", "/dev/ttyUSB1", "/dev/ttyUSB2"):
        assert printers[node]["serial_unique"] is False
        assert printers[node]["suggested_match"]["key"] == "usb_port"
        assert printers[node]["suggested_match"]["value"] == EXPECTED[node][0]
        assert "no serial number" in printers[node]["suggested_match"]["why_port"]


def test_two_boards_sharing_a_serial_number_are_bound_by_port(tmp_path: Path) -> None:
    twin = stm32_twin(tmp_path / "stm32-twin.umockdev")
    printers = by_node(discover_json([STM32, twin], "--config", NO_CONFIG))
    first, second = printers["/dev/ttyACM1"], printers["/dev/ttyACM2"]
    assert first["serial"] == second["serial"] == "206437A1554E"
    assert first["serial_unique"] is second["serial_unique"] is False
    assert first["serial_shared_with"] == ["/dev/ttyACM2"]
    assert first["suggested_match"]["value"] == "1-5"
    assert second["suggested_match"]["value"] == "1-7"
    assert "also reported by /dev/ttyACM1" in second["suggested_match"]["why_port"]

    table = bed([STM32, twin], "discover", "--config", NO_CONFIG)
    assert table.returncode == 0, table.stderr
    assert table.stdout.count("206437A1554E (NOT UNIQUE)") == 2


def test_camera_is_listed_by_its_capture_node_only_with_its_bus_and_formats() -> None:
    data = discover_json([C270], "--config", NO_CONFIG, formats={"/dev/video0": C270_FORMATS})
    assert data["printers"] == []
    (camera,) = data["cameras"]
    assert camera["node"] == "/dev/video0"  # not /dev/video1, the metadata node
    assert camera["driver"] == "uvcvideo"
    assert (camera["vendor_id"], camera["product_id"], camera["serial"]) == ("046d", "0825", "8D6E3B10")
    assert (camera["usb_port"], camera["bus"], camera["speed_mbps"]) == ("1-6", 1, 480.0)
    assert camera["by_id"] == ["/dev/v4l/by-id/usb-046d_0825_8D6E3B10-video-index0"]
    assert camera["name"] == "UVC Camera (046d:0825)"
    formats = {fmt["fourcc"]: fmt for fmt in camera["formats"]}
    assert sorted(formats) == ["MJPG", "YUYV"]
    mjpeg_720 = next(s for s in formats["MJPG"]["sizes"] if (s["width"], s["height"]) == (1280, 720))
    assert mjpeg_720["fps"][0] == 30.0
    assert camera["formats_error"] is None


def test_camera_format_query_failure_is_reported_not_fatal() -> None:
    """Under umockdev the real v4l2-ctl runs and fails (no V4L2 ioctls): discovery says so."""
    (camera,) = discover_json([C270], "--config", NO_CONFIG)["cameras"]
    assert camera["formats"] == []
    assert "/dev/video0" in camera["formats_error"]
    toml = bed([C270], "discover", "--toml", "--config", NO_CONFIG)
    assert "formats could not be read" in toml.stdout
    assert 'resolution = "640x480"' in toml.stdout


def test_table_shows_every_device_and_what_to_do_next() -> None:
    result = bed(ALL, "discover", "--config", NO_CONFIG, formats={"/dev/video0": C270_FORMATS})
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip().startswith("/dev/")}
    assert sorted(rows) == [*sorted(EXPECTED), "/dev/video0"]
    assert re.search(r"/dev/ttyUSB1\s+1-3\.1\s+1a86:7523\s+ch341\s+\(none\)", rows["/dev/ttyUSB1"])
    assert re.search(r"/dev/ttyACM0\s+1-1\s+2c99:0002\s+cdc_acm\s+CZPX1919X004XC24974\s+-", rows["/dev/ttyACM0"])
    assert "MJPG 1280x960@30" in rows["/dev/video0"]
    assert "7 of these are not in" in result.stdout
    assert "octobrixctl discover --toml" in result.stdout


def test_a_process_holding_a_port_is_shown(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    fake_process(proc, 4242, "screen", "0::/user.slice/user-1000.slice/session-3.scope\n", {3: "/dev/ttyACM0"})
    table = bed([PRUSA, FTDI], "discover", "--root", tmp_path, "--config", NO_CONFIG)
    assert re.search(r"/dev/ttyACM0 .* screen\[4242\] ", table.stdout), table.stdout
    printers = by_node(discover_json([PRUSA, FTDI], "--root", tmp_path, "--config", NO_CONFIG))
    assert printers["/dev/ttyACM0"]["held_by"] == [{"pid": 4242, "command": "screen", "unit": "session-3.scope"}]
    assert printers["/dev/ttyUSB3"]["held_by"] == []


def _check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "octobrixd.cli", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )


def test_toml_passes_check_and_its_rules_give_every_device_its_own_link(tmp_path: Path) -> None:
    twin = stm32_twin(tmp_path / "stm32-twin.umockdev")
    recordings = [*ALL, twin]
    result = bed(recordings, "discover", "--toml", "--config", NO_CONFIG, formats={"/dev/video0": C270_FORMATS})
    assert result.returncode == 0, result.stderr
    config_path = tmp_path / "octobrix.toml"
    config_path.write_text(result.stdout, encoding="utf-8")
    checked = _check(config_path)
    assert checked.returncode == 0, checked.stderr + result.stdout

    config = parse_config(result.stdout, str(config_path))
    assert {name: (p.serial, p.usb_port) for name, p in config.printers.items()} == {
        "printer1": ("CZPX1919X004XC24974", None),
        "printer2": (None, "1-5"),  # serial shared with its twin
        "printer3": (None, "1-7"),
        "printer4": (None, "1-2"),  # no serial
        "printer5": (None, "1-3.1"),
        "printer6": (None, "1-3.2"),
        "printer7": ("A50285BI", None),
    }
    camera = config.cameras["cam1"]
    assert (camera.serial, camera.resolution, camera.fps, camera.format) == ("8D6E3B10", "1280x720", 15, "mjpeg")
    assert result.stdout.count("follows the cable, not the board") == 5

    links = links_for(render_udev_rules(config), load_recordings(recordings))
    assert links == {
        "/dev/ttyACM0": ["octobrix/printer1"],
        "/dev/ttyACM1": ["octobrix/printer2"],
        "/dev/ttyACM2": ["octobrix/printer3"],
        "/dev/ttyUSB0": ["octobrix/printer4"],
        "/dev/ttyUSB1": ["octobrix/printer5"],
        "/dev/ttyUSB2": ["octobrix/printer6"],
        "/dev/ttyUSB3": ["octobrix/printer7"],
        "/dev/video0": ["octobrix/cam1"],  # and nothing for /dev/video1
    }


EXISTING = """\
[printers.demo]
virtual = true
port = 5000

[printers.mk3]
serial = "CZPX1919X004XC24974"
port = 5001

[printers.printer1]
usb_port = "1-3.1"
port = 5002
"""


def test_bound_devices_are_named_and_new_entries_fit_around_the_config(tmp_path: Path) -> None:
    config_path = tmp_path / "octobrix.toml"
    config_path.write_text(EXISTING, encoding="utf-8")
    devices = [PRUSA, TWO_CH340, FTDI]
    printers = by_node(discover_json(devices, "--config", config_path))
    assert printers["/dev/ttyACM0"]["bound_to"] == ["mk3"]
    assert printers["/dev/ttyUSB1"]["bound_to"] == ["printer1"]
    assert printers["/dev/ttyUSB2"]["bound_to"] == []
    assert printers["/dev/ttyACM0"]["suggested_match"] is None

    table = bed(devices, "discover", "--config", config_path)
    assert re.search(r"/dev/ttyACM0 .* mk3 ", table.stdout)

    toml = bed(devices, "discover", "--toml", "--config", config_path)
    assert toml.returncode == 0, toml.stderr
    assert "/dev/ttyACM0 (Prusa Research (prusa3d.com) Original Prusa i3 MK3) is already bound by printers.mk3" in (
        toml.stdout
    )
    assert "[printers.mk3]" not in toml.stdout
    assert "[printers.printer2]" in toml.stdout and "[printers.printer3]" in toml.stdout
    config_path.write_text(EXISTING + "\n" + toml.stdout, encoding="utf-8")
    checked = _check(config_path)
    assert checked.returncode == 0, checked.stderr + toml.stdout
    combined = parse_config(config_path.read_text(encoding="utf-8"), str(config_path))
    assert combined.printers["printer2"].usb_port == "1-3.2"
    assert combined.printers["printer3"].serial == "A50285BI"
    assert {p.port for p in combined.printers.values()} == {5000, 5001, 5002, 5003, 5004}


def test_an_invalid_config_does_not_stop_discovery(tmp_path: Path) -> None:
    config_path = tmp_path / "octobrix.toml"
    config_path.write_text("[printers.a]\nport = 5000\n", encoding="utf-8")
    result = bed([PRUSA], "discover", "--config", config_path)
    assert result.returncode == 0
    assert "/dev/ttyACM0" in result.stdout
    assert "has problems" in result.stderr and "printers.a" in result.stderr


def test_wait_prints_the_entry_for_the_board_plugged_in_now() -> None:
    result = bed([PRUSA, CREALITY], "discover", "--wait", "--timeout", "20", "--config", NO_CONFIG, plug=[FTDI])
    assert result.returncode == 0, result.stderr
    assert "Waiting for a printer board or camera" in result.stderr
    assert result.stdout.startswith("Plugged in: printer board /dev/ttyUSB3, FTDI FT232R USB UART (0403:6001")
    entry = parse_config(result.stdout.split("\n\n", 1)[1], "stdout")
    assert {name: p.serial for name, p in entry.printers.items()} == {"printer1": "A50285BI"}


def test_wait_ignores_a_camera_metadata_node_and_reports_the_capture_node() -> None:
    result = bed([PRUSA], "discover", "--wait", "--json", "--timeout", "20", "--config", NO_CONFIG, plug=[C270])
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["device"]["node"] == "/dev/video0"
    assert "[cameras.cam1]" in data["entry"]


def test_wait_gives_up_after_the_timeout_with_advice() -> None:
    result = bed([PRUSA], "discover", "--wait", "--timeout", "0.5", "--config", NO_CONFIG)
    assert result.returncode == 1
    assert "nothing was plugged in within 0.5 s" in result.stderr
    assert "hint:" in result.stderr


def test_discovery_never_opens_a_serial_port(tmp_path: Path) -> None:
    """Opening a printer's port resets the board: discovery must only read sysfs, udev and /proc."""
    require_programs("strace", deps="devices.sh")
    trace = tmp_path / "strace.log"
    prefix = ["strace", "-f", "-qq", "-e", "trace=open,openat,openat2,creat", "-o", str(trace)]
    for args in (["discover"], ["discover", "--json"], ["discover", "--toml"]):
        result = bed(ALL, *args, "--config", NO_CONFIG, prefix=prefix)
        assert result.returncode == 0, result.stderr
        calls = trace.read_text(encoding="utf-8").splitlines()
        start = next(i for i, line in enumerate(calls) if "octobrix-umockbed-mark/start" in line)
        end = next(i for i, line in enumerate(calls) if "octobrix-umockbed-mark/end" in line)
        # The testbed maps /dev/ttyACM0 to UMOCKDEV_DIR/dev/ttyACM0; a by-id link resolves there too.
        opened = [line for line in calls[start:end] if re.search(r'/dev/(tty(ACM|USB)\d+|serial/)[^"]*"', line)]
        assert opened == [], opened
        # The trace does see the discovery's reads, so an empty list above means something.
        assert any("/tty/ttyACM0/" in line or "/ttyUSB3/" in line for line in calls[start:end]), args


def test_cameras_with_identical_serials_are_bound_by_port_and_discover_says_why(tmp_path: Path) -> None:
    """Several Logitech C270s report the same serial number, 200901010001: a serial rule would match both."""
    cameras = [
        c270_at(tmp_path / f"c270-{n}.umockdev", f"1-3.{n}", "200901010001", 2 * (n - 1), 10 + n, via_hub=True)
        for n in (1, 2)
    ]
    shown = bed(cameras, "discover", "--toml")
    assert shown.returncode == 0, shown.stderr
    snippet = shown.stdout
    for port, other in (("1-3.1", "/dev/video2"), ("1-3.2", "/dev/video0")):
        assert f"# Bound by USB port because its serial number 200901010001 is also reported by {other}." in snippet
        assert f'usb_port = "{port}"' in snippet
        assert f"# plugged into port {port}; keep this camera in that port." in snippet
    assert 'serial = "200901010001"' not in snippet
    # The snippet is a valid config, and its rules give each camera its own link.
    config = parse_config(snippet, "/etc/octobrix.toml")
    assert {c.usb_port for c in config.cameras.values()} == {"1-3.1", "1-3.2"}
    data = discover_json(cameras)
    assert [c["serial_shared_with"] for c in data["cameras"]] == [["/dev/video2"], ["/dev/video0"]]
    assert all(c["suggested_match"]["key"] == "usb_port" for c in data["cameras"])
