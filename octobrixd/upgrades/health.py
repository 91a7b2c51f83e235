"""Whether an instance came back healthy after a new OctoPrint: pure judgement of what was seen
(systemd's view, OctoPrint's answer, the printer's connection), and the messages about it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from octobrixd.instances.recovery import cause
from octobrixd.system.systemd import UnitProperties

# On a busy two-core computer an OctoPrint takes 20-60 s to answer after a start.
TIME_LIMIT = 240.0
LOG_LINES = 15


class Verdict(StrEnum):
    HEALTHY = "healthy"
    WAITING = "waiting"
    FAILED = "failed"


@dataclass(frozen=True)
class Expected:
    version: str | None  # the OctoPrint that must answer (None: whatever it is)
    operational: bool  # it was connected to its printer before, so it must be again


@dataclass(frozen=True)
class Seen:
    unit: UnitProperties  # systemd's properties (state, sub-state, restarts, result...)
    server: Mapping[str, object] | None  # /api/server's answer; None: no HTTP answer yet
    connection: str | None  # /api/connection's current state; None: not asked or no answer
    elapsed: float


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    what: str  # what failed, or what it waits for


def judge(seen: Seen, expected: Expected, time_limit: float = TIME_LIMIT) -> Judgement:
    unit = seen.unit
    # Between an exit and systemd's next start (RestartSec) the last run's Result and status are there.
    if unit.failed or unit.sub_state == "auto-restart":
        return Judgement(Verdict.FAILED, f"its OctoPrint did not start: it {cause(unit)}")
    if (unit.restarts or 0) > 0:
        return Judgement(Verdict.FAILED, "its OctoPrint did not start: it ended and systemd started it again")
    if seen.server is None:
        if seen.elapsed >= time_limit:
            return Judgement(Verdict.FAILED, f"its OctoPrint gave no HTTP answer within {time_limit:.0f} s")
        return Judgement(Verdict.WAITING, "an HTTP answer")
    safemode = seen.server.get("safemode")
    if safemode:
        return Judgement(Verdict.FAILED, f"its OctoPrint started in safe mode ({safemode})")
    running = str(seen.server.get("version") or "")
    if expected.version is not None and running != expected.version:
        return Judgement(Verdict.FAILED, f"it runs OctoPrint {running or 'of unknown version'}, not {expected.version}")
    if expected.operational and seen.connection != "Operational":
        if seen.elapsed >= time_limit:
            return Judgement(
                Verdict.FAILED,
                f"its printer was Operational before and is {seen.connection or 'not connected'} "
                f"{time_limit:.0f} s after the start",
            )
        return Judgement(Verdict.WAITING, "the printer to be Operational again")
    return Judgement(Verdict.HEALTHY, "")


def failed_message(
    name: str, target: str, *, what: str, log_lines: Sequence[str], back_on: str | None, pin: str, rolled_back: bool
) -> str:
    """The one message about an upgrade that failed its check."""
    logs = "\n".join(f"  {line}" for line in log_lines) or "  (no log lines)"
    if rolled_back:
        after = (
            f"{name} is back on OctoPrint {back_on or 'its previous version'} "
            f"(previous venv and config.yaml, pin {pin} restored in the config)"
        )
    else:
        after = f"putting {name} back on its previous OctoPrint failed too: see `octobrixctl status {name}`"
    return f"upgrade of {name} to {target} failed: {what}. {after}. Last lines of its log:\n{logs}"


def stopped_message(failed: str, rest: Sequence[str]) -> str | None:
    if not rest:
        return None
    return f"stopped after {failed} failed: not upgraded: {', '.join(rest)}"
