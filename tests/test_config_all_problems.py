"""`check` reports every problem of a section at once: one mistake never hides another in the same
table (found: an invalid printer name hid a wrong-typed port; `port = 80` hid a missing camera)."""

from __future__ import annotations

import pytest

from octobrixd.config.model import parse_config
from octobrixd.errors import ConfigError


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "/etc/octobrix.toml")
    return caught.value.problems


def test_an_invalid_name_does_not_hide_the_tables_own_mistakes() -> None:
    found = problems('[printers.Bad_Name]\nvirtual = true\nport = "5000"\n')
    assert len(found) == 2, found
    assert found[0].startswith("/etc/octobrix.toml:1: printers.Bad_Name: 'Bad_Name' is not a valid name")
    assert found[1] == "/etc/octobrix.toml:3: printers.Bad_Name.port: '5000' should be a whole number"


def test_a_bad_port_does_not_hide_a_missing_camera() -> None:
    found = problems('[printers.p1]\nvirtual = true\nport = 80\ncamera = "nocam"\n')
    assert len(found) == 2, found
    assert found[0].startswith("/etc/octobrix.toml:3: printers.p1.port: 80 is outside 1024–65535")
    assert found[1].startswith("/etc/octobrix.toml:4: printers.p1.camera: no camera named 'nocam'")


def test_an_entry_with_a_mistake_still_takes_part_in_the_rules_across_tables() -> None:
    # p1 has an unknown key; its port and serial still clash with p2's.
    found = problems(
        '[printers.p1]\nserial = "X1"\nport = 5000\nbaudrat = 115200\n[printers.p2]\nserial = "X1"\nport = 5000\n'
    )
    assert [line.split(": ")[1] for line in found] == ["printers.p1.baudrat", "printers.p2.serial", "printers.p2.port"]
    assert "5000 is also used by printers.p1" in found[2]
    assert "'X1' already binds printers.p1" in found[1]


def test_a_field_that_failed_its_own_check_is_not_checked_again_across_tables() -> None:
    # The wrong-typed port is reported once, as itself, not also as a clash.
    found = problems('[printers.p1]\nvirtual = true\nport = "5000"\n[printers.p2]\nvirtual = true\nport = 5000\n')
    assert found == ["/etc/octobrix.toml:3: printers.p1.port: '5000' should be a whole number"]


def test_a_camera_that_failed_its_checks_still_counts_as_configured() -> None:
    # cam1 has a mistake of its own; the printer's reference to it is not a second, false one.
    found = problems(
        '[printers.p1]\nvirtual = true\nport = 5000\ncamera = "cam1"\n[cameras.cam1]\nserial = "C1"\nport = 80\n'
    )
    assert len(found) == 1 and "cameras.cam1.port: 80 is outside" in found[0], found
