"""A board with two serial ports (two tty interfaces under one USB device) gets one link, to its
first port: bound by usb_port or by serial, both ttys match, and the link went to whichever udev
handled last. Judged on the umockdev recordings with tests/udevmatch.py (udev's matching and its
link_priority rule; the lab VM runs the real udev)."""

from __future__ import annotations

from pathlib import Path

import pytest

from octobrixd.config.model import parse_config
from octobrixd.render.udev import render_udev_rules
from tests.conftest import Ctl
from tests.udevmatch import link_owners, load_recordings
from tests.umock import STM32, bed, needs_umockdev, stm32_two_ports


@pytest.mark.parametrize("match", ['usb_port = "1-5"', 'serial = "206437A1554E"'])
def test_a_board_with_two_serial_ports_links_only_its_first(tmp_path: Path, match: str) -> None:
    devices = load_recordings([STM32, stm32_two_ports(tmp_path / "second-port.umockdev")])
    assert sorted(d.node for d in devices.values() if d.node and "ttyACM" in d.node) == ["/dev/ttyACM1", "/dev/ttyACM3"]
    rules = render_udev_rules(parse_config(f"[printers.skr]\n{match}\nport = 5001\n"))
    assert link_owners(rules, devices) == {"octobrix/skr": ["/dev/ttyACM1"]}, "interface 00, not 02"


def test_a_composite_board_whose_only_serial_port_is_not_first_still_gets_its_link(tmp_path: Path) -> None:
    # Only the tty on interface 02 is there (e.g. a board with a storage function first).
    second = stm32_two_ports(tmp_path / "second-port.umockdev")
    devices = {path: d for path, d in load_recordings([STM32, second]).items() if d.node != "/dev/ttyACM1"}
    rules = render_udev_rules(parse_config('[printers.skr]\nusb_port = "1-5"\nport = 5001\n'))
    assert link_owners(rules, devices) == {"octobrix/skr": ["/dev/ttyACM3"]}


@needs_umockdev
def test_discover_proposes_one_entry_for_a_board_with_two_serial_ports(ctl: Ctl, tmp_path: Path) -> None:
    recordings = [STM32, stm32_two_ports(tmp_path / "second-port.umockdev")]
    result = bed(recordings, "discover", "--toml", "--config", "/nonexistent/octobrix.toml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("[printers.") == 1, result.stdout
    assert "# /dev/ttyACM3 is another serial port of the board at /dev/ttyACM1" in result.stdout
    config_path = tmp_path / "octobrix.toml"
    config_path.write_text(result.stdout, encoding="utf-8")
    checked = ctl("check", "--config", config_path)
    assert checked.returncode == 0, checked.stderr
    links = link_owners(render_udev_rules(parse_config(result.stdout)), load_recordings(recordings))
    assert links == {"octobrix/printer1": ["/dev/ttyACM1"]}
