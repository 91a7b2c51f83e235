"""docs/security.md's table of exposure figures is what `systemd-analyze security --offline` says of
the unit files in systemd/ now: a unit's sandbox can neither loosen nor tighten behind its page."""

from __future__ import annotations

import re

import pytest

from tests.unit_security import COMMAND, PAGE, SERVICES, UNITS_DIR, systemd_version, table, written_table


def test_every_service_octobrix_ships_is_in_the_table() -> None:
    shipped = sorted(path.name for path in UNITS_DIR.glob("*.service"))
    assert sorted(SERVICES) == shipped, "a new service: add it to tests/unit_security.py's SERVICES"


def test_the_exposure_table_is_what_systemd_measures_now() -> None:
    version = systemd_version()
    if version is None:
        pytest.skip("no systemd-analyze with --offline here (systemd 252 or newer)")
    written = written_table(PAGE.read_text(encoding="utf-8"))
    measured_with = re.search(r"Measured with systemd (\d+)\.", written)
    if measured_with is None or measured_with.group(1) != version:
        pytest.skip(f"the table was measured with another systemd than this one ({version})")
    assert written == table(), f"docs/security.md's exposure table is stale; write it again: {COMMAND}"
