"""octobrixd's back-off for failed instances (recovery.Recovery), with systemd's answers and the
clock as stand-ins; tests/lab/test_restarts.py runs the same against real systemd and OctoPrint."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from octobrixd.instances import recovery
from octobrixd.instances.recovery import FIRST_DELAY, STABLE_SECONDS, Recovery
from octobrixd.system import systemd
from octobrixd.system.paths import Layout
from octobrixd.system.systemd import UnitProperties
from tests.factories import systemd_says

CRASHY, STEADY = "octoprint@crashy.service", "octoprint@steady.service"
PRINTERS = {CRASHY: "crashy", STEADY: "steady"}
FAILED = {"ActiveState": "failed", "Result": "exit-code", "ExecMainCode": "1", "ExecMainStatus": "1", "NRestarts": "5"}
RUNNING = {"ActiveState": "active", "Result": "success"}


class Farm:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1_000_000.0
        self.states: dict[str, Mapping[str, str]] = {CRASHY: FAILED, STEADY: RUNNING}
        self.printing: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        calls = self.calls
        monkeypatch.setattr(systemd, "reset_failed", lambda units: calls.extend(("reset-failed", u) for u in units))
        monkeypatch.setattr(systemd, "start", lambda units, wait=False: calls.extend(("start", u) for u in units))

    def query(self, units: Sequence[str]) -> dict[str, UnitProperties]:
        return systemd_says({u: self.states[u] for u in units})

    def recovery(self, root: Path) -> Recovery:
        return Recovery(
            Layout(root),
            query=self.query,
            busy=lambda name: name in self.printing,
            journal=lambda unit, lines: [f"{unit}: Traceback", f"{unit}: ImportError: broken plugin"],
            clock=lambda: self.now,
        )


def test_a_crash_loop_is_retried_with_a_doubling_delay_and_the_cause_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    farm = Farm(monkeypatch)
    keeper = farm.recovery(tmp_path)
    delays = []
    for attempt in range(4):
        found = keeper.look(PRINTERS)
        assert found.failed == (CRASHY,) and found.started == () and found.next_check is not None
        retry = keeper.schedule[CRASHY]
        assert retry.next_try is not None
        delays.append(retry.next_try - farm.now)
        farm.now += delays[-1] - 1
        assert keeper.look(PRINTERS).started == (), "not before its time"
        farm.now += 1
        started = keeper.look(PRINTERS)
        assert started.started == (CRASHY,) and started.next_check is None, "nothing else to wait for"
        assert farm.calls[-2:] == [("reset-failed", CRASHY), ("start", CRASHY)]
        assert keeper.schedule[CRASHY].attempts == attempt + 1
        farm.now += 50  # systemd's own five quick tries, then it has failed again
    assert delays == [FIRST_DELAY, 2 * FIRST_DELAY, 4 * FIRST_DELAY, 8 * FIRST_DELAY]
    assert all(unit == CRASHY for _verb, unit in farm.calls), "the running printer is left alone"
    text = caplog.text
    assert "octoprint@crashy.service failed: its OctoPrint exited with status 1 (5 starts in a row)" in text
    assert "ImportError: broken plugin" in text
    assert "starting octoprint@crashy.service again in 20 s" in text
    assert "started octoprint@crashy.service again (try 2 after it failed)" in text


def test_fixed_and_stable_for_a_while_the_back_off_starts_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    farm = Farm(monkeypatch)
    keeper = farm.recovery(tmp_path)
    for _ in range(3):
        keeper.look(PRINTERS)
        farm.now += keeper.schedule[CRASHY].next_try - farm.now  # type: ignore[operator]
        keeper.look(PRINTERS)
    farm.states[CRASHY] = RUNNING
    farm.now += STABLE_SECONDS + 1
    keeper.look(PRINTERS)
    assert CRASHY not in keeper.schedule
    farm.states[CRASHY] = FAILED
    keeper.look(PRINTERS)
    assert keeper.schedule[CRASHY].next_try == farm.now + FIRST_DELAY


def test_never_started_while_its_printer_prints_nor_when_someone_else_started_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    farm = Farm(monkeypatch)
    keeper = farm.recovery(tmp_path)
    keeper.look(PRINTERS)
    farm.printing.add("crashy")
    farm.now += FIRST_DELAY
    assert keeper.look(PRINTERS).started == () and farm.calls == []
    farm.printing.clear()
    # The user fixed it and started it by hand meanwhile: no retry is due any more.
    farm.states[CRASHY] = RUNNING
    farm.now += 60
    assert keeper.look(PRINTERS).next_check is None
    assert farm.calls == []


def test_the_schedule_survives_a_restart_of_the_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    farm = Farm(monkeypatch)
    monkeypatch.setattr(Layout, "live", property(lambda self: True))
    keeper = farm.recovery(tmp_path)
    keeper.look(PRINTERS)
    saved = recovery.read_schedule(Layout(tmp_path))
    assert saved[CRASHY].next_try == farm.now + FIRST_DELAY
    assert farm.recovery(tmp_path).schedule == keeper.schedule
