"""A placeholder serial number ("0001", "123456789", all zeros) is not trusted even while only one
board reporting it is attached: discovery proposes its USB port, saying why, and `check` warns
about a config that binds by one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from octobrixd.devices.inventory import MatchKey
from octobrixd.devices.serials import placeholder_reason
from octobrixd.devices.suggestions import suggest_entries, suggest_match
from tests.conftest import Ctl
from tests.factories import printer


@pytest.mark.parametrize(
    "serial",
    ["0001", "1", "00000000", "000000000000", "FFFFFFFF", "123456789", "0123456789", "12345678", "0123456789ABCDEF"],
)
def test_placeholders_are_recognised(serial: str) -> None:
    assert placeholder_reason(serial) is not None


@pytest.mark.parametrize("serial", ["CZPX1919X004XC24974", "206437A1554E", "A50285BI", "8D6E3B10", "0017", "55736303"])
def test_real_serial_numbers_are_trusted(serial: str) -> None:
    assert placeholder_reason(serial) is None


def test_a_single_board_with_a_placeholder_serial_is_bound_by_port_with_the_reason() -> None:
    device = printer("/dev/ttyACM0", "1-4", "0001")
    assert device.serial_unique, "it is the only one attached"
    match = suggest_match(device)
    assert (match.key, match.value) == (MatchKey.USB_PORT, "1-4")
    assert "'0001' is a placeholder many boards report" in (match.why_port or "")
    toml = suggest_entries([device], None)
    assert 'usb_port = "1-4"' in toml and 'serial = "0001"' not in toml
    assert "# Bound by USB port because its serial number '0001' is a placeholder" in toml


def test_a_shared_serial_still_says_it_is_shared() -> None:
    device = replace(printer("/dev/ttyACM0", "1-4", "0001"), serial_shared_with=("/dev/ttyACM1",))
    assert "also reported by /dev/ttyACM1" in (suggest_match(device).why_port or "")


def test_check_warns_about_a_placeholder_serial_and_still_passes(ctl: Ctl, write_config: Callable[[str], Path]) -> None:
    result = ctl("check", "--config", write_config('[printers.mk]\nserial = "123456789"\nport = 5001\n'))
    assert result.returncode == 0, result.stderr
    warning = next(line for line in result.stderr.splitlines() if line.startswith("warning: "))
    assert warning.startswith("warning: printers.mk.serial: '123456789' is a placeholder")
    assert "bind it by usb_port instead" in warning
    clean = ctl("check", "--config", write_config('[printers.mk]\nserial = "CZPX1919X004XC24974"\nport = 5001\n'))
    assert clean.returncode == 0 and "warning" not in clean.stderr
