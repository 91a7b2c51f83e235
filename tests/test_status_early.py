"""status asks the OctoPrints while it asks systemd, not after (benchmarks/status.py: the two were
most of its work), and still shows only what an active unit's OctoPrint said."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from octobrixd.cli import status
from octobrixd.farm.status import PrinterStateFetcher
from octobrixd.system.paths import Layout
from octobrixd.system.systemd import UnitProperties
from tests.factories import systemd_says
from tests.test_status_farm import args, farm, said_running

__all__ = ["farm"]  # the fixture, shared with test_status_farm.py


def test_the_octoprints_are_asked_before_systemd_answers(
    farm: tuple[Layout, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    layout, config_path = farm
    asked = threading.Event()

    def fetcher(api_key: str | None) -> PrinterStateFetcher:
        def fetch(_name: str, _port: int) -> tuple[str | None, float | None]:
            asked.set()
            return ("Operational", None) if api_key else (None, None)

        return fetch

    def systemd_after_octoprint(units: Sequence[str]) -> dict[str, UnitProperties]:
        assert asked.wait(10), "systemd was asked before any OctoPrint"
        props = said_running(units)
        props["octoprint@prusa.service"] |= {"ActiveState": "inactive", "SubState": "dead"}
        return systemd_says(props)

    monkeypatch.setattr(status, "fetch_printer_state", fetcher)
    monkeypatch.setattr(status, "query_units", systemd_after_octoprint)
    assert status.main(args(config_path, as_json=True), layout) == 0
    states = {p["name"]: p["printer_state"] for p in json.loads(capsys.readouterr().out)["printers"]}
    assert states == {"demo": "Operational", "prusa": None}, "a stopped unit's early answer is not shown"


def test_another_port_than_the_early_ask_is_asked_anew() -> None:
    calls: list[int] = []

    def fetch(_name: str, port: int) -> tuple[str | None, float | None]:
        calls.append(port)
        return (f"on {port}", None)

    with ThreadPoolExecutor(2) as pool:
        early = status.asked_early({"demo": fetch}, {"demo": 5050}, pool)
    # A port change held back for a print: its OctoPrint still runs on the port it started with.
    assert early["demo"]("demo", 5000) == ("on 5000", None)
    assert early["demo"]("demo", 5050) == ("on 5050", None)
    assert sorted(calls) == [5000, 5050], "the early answer is used for its own port, once"
