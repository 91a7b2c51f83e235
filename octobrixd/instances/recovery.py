"""Instances that failed for good: why (the last lines of their log), and bringing them back.

systemd restarts a crashed OctoPrint by itself, up to StartLimitBurst= times in a row; then the
unit stays `failed` and its OnFailure= hook (octobrix-failed@NAME) sends octobrixd SIGUSR1.
octobrixd logs the cause and starts the instance again after a delay that doubles with every
failure in a row (10 s, 20 s, 40 s... at most 30 min), so a printer whose OctoPrint crashes at
every start costs a few starts an hour instead of a tight loop, and comes back by itself once its
cause is fixed. Nothing polls: the hook, a reload and the next due retry are the only wake-ups.

The daemon's schedule is written to /run/octobrix/recovery.json, for `status` to say when the
next try is. `apply` starts a failed instance at once (the user asked for it), as `systemctl
reset-failed` and `systemctl start` would.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath

from octobrixd.errors import OctobrixError
from octobrixd.system import systemd
from octobrixd.system.fsutil import write_atomic
from octobrixd.system.paths import Layout

log = logging.getLogger(__name__)

FIRST_DELAY = 10.0
MAX_DELAY = 1800.0
# An instance that ran this long after octobrixd last started it counts as fixed: its next failure
# starts the back-off again at FIRST_DELAY.
STABLE_SECONDS = 600.0
LOG_LINES = 12
SCHEDULE_FILE = PurePosixPath("run/octobrix/recovery.json")

UnitProps = Mapping[str, systemd.UnitProperties]
# ExecMainCode: the main process was killed by a signal (CLD_KILLED), or dumped core (CLD_DUMPED).
KILLED_CODES = (2, 3)


def cause(props: systemd.UnitProperties) -> str:
    """How its last run ended, in words: "exited with status 1 (6 starts in a row)"."""
    result = props.result
    status = props.exec_main_status
    if result == "signal" or props.exec_main_code in KILLED_CODES:
        what = f"was killed by signal {status}" if status is not None else "was killed by a signal"
    elif result == "oom-kill":
        what = "ran out of memory (the OOM killer stopped it)"
    elif result == "start-limit-hit":
        what = "was started too often in a row"
    elif result == "exit-code" and status is not None:
        what = f"exited with status {status}"
    elif result and result != "success":
        what = f"failed ({result})"
    else:
        what = "failed"
    starts = props.restarts
    return f"{what} ({starts} starts in a row)" if starts is not None and starts > 1 else what


def what_to_do(unit: str) -> str:
    return (
        f"the lines above (`journalctl -u {unit} -n 50`) say why; fix that, then "
        f"`sudo systemctl reset-failed {unit} && sudo systemctl start {unit}` (or `sudo octobrixctl apply`); "
        "octobrixd also tries again by itself, less often each time"
    )


@dataclass(frozen=True)
class Retry:
    """octobrixd's plan for one failed unit, as `status` reads it."""

    attempts: int  # how often octobrixd has started it again in this run of failures
    next_try: float | None  # wall clock (time.time()) of the next start; None: started, waiting
    last_start: float | None  # wall clock of octobrixd's last start of it


def read_schedule(layout: Layout) -> dict[str, Retry]:
    try:
        body = json.loads(layout.path(SCHEDULE_FILE).read_text(encoding="utf-8"))
        return {unit: Retry(**entry) for unit, entry in body.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def delay_for(attempts: int) -> float:
    return float(min(FIRST_DELAY * 2 ** min(attempts, 16), MAX_DELAY))


@dataclass(frozen=True)
class Pass:
    """What one look at the instances did."""

    failed: tuple[str, ...]  # newly seen failed, logged with their cause
    started: tuple[str, ...]  # started again now
    next_check: float | None  # time.monotonic() of the next due retry


class Recovery:
    """The daemon's back-off for failed instances. Used from one worker thread at a time (the
    daemon's BackgroundJob), so it needs no lock."""

    def __init__(
        self,
        layout: Layout,
        *,
        query: Callable[[Sequence[str]], UnitProps],
        busy: Callable[[str], bool],
        journal: Callable[[str, int], list[str]] = systemd.journal_tail,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.layout = layout
        self.query = query
        self.busy = busy
        self.journal = journal
        self.clock = clock
        self.schedule: dict[str, Retry] = read_schedule(layout)

    def look(self, printers: Mapping[str, str]) -> Pass:
        """printers: unit -> printer name, for every instance the config runs."""
        now = self.clock()
        props = self.query(list(printers))
        newly, started = [], []
        for unit, name in sorted(printers.items()):
            unit_props = props.get(unit, systemd.NOTHING)
            retry = self.schedule.get(unit)
            if not unit_props.failed:
                if retry is not None and retry.next_try is not None:
                    # Started meanwhile by someone else (apply, systemctl): no retry is due any more.
                    self.schedule[unit] = Retry(retry.attempts, None, retry.last_start or now)
                continue
            if retry is None or retry.next_try is None:
                newly.append(unit)
                self._failed(unit, unit_props, retry, now)
                continue
            if retry.next_try > now:
                continue
            if self.busy(name):
                # A failed unit runs no OctoPrint, so this is a second opinion that costs one call.
                log.warning("%s: not starting %s again while its printer prints", name, unit)
                self.schedule[unit] = Retry(retry.attempts, now + FIRST_DELAY, retry.last_start)
                continue
            try:
                systemd.reset_failed([unit])
                systemd.start([unit])
            except OctobrixError as error:
                log.error("could not start %s again: %s", unit, error)
                self.schedule[unit] = Retry(retry.attempts + 1, now + delay_for(retry.attempts + 1), now)
                continue
            log.info("started %s again (try %d after it failed)", unit, retry.attempts + 1)
            self.schedule[unit] = Retry(retry.attempts + 1, None, now)
            started.append(unit)
        # Forget units the config no longer runs, and failures long past.
        for unit in list(self.schedule):
            retry = self.schedule[unit]
            stale = retry.next_try is None and retry.last_start is not None and now - retry.last_start > STABLE_SECONDS
            if unit not in printers or (stale and not props.get(unit, systemd.NOTHING).failed):
                del self.schedule[unit]
        self._save()
        due = [r.next_try for r in self.schedule.values() if r.next_try is not None]
        next_check = time.monotonic() + max(0.0, min(due) - now) if due else None
        return Pass(tuple(newly), tuple(started), next_check)

    def _failed(self, unit: str, props: systemd.UnitProperties, retry: Retry | None, now: float) -> None:
        # A failure soon after octobrixd's last start continues the back-off; a later one starts it over.
        again = retry is not None and retry.last_start is not None and now - retry.last_start < STABLE_SECONDS
        attempts = retry.attempts if again and retry is not None else 0
        delay = delay_for(attempts)
        lines = self.journal(unit, LOG_LINES)
        log.warning(
            "%s failed: its OctoPrint %s; last lines of its log:\n%s",
            unit,
            cause(props),
            "\n".join(f"  {line}" for line in lines) or "  (no log lines)",
        )
        log.warning("starting %s again in %.0f s (the delay doubles with every failure in a row)", unit, delay)
        self.schedule[unit] = Retry(attempts, now + delay, retry.last_start if again and retry else None)

    def _save(self) -> None:
        if not self.layout.live:
            return
        body = {unit: asdict(retry) for unit, retry in sorted(self.schedule.items())}
        try:
            write_atomic(self.layout.path(SCHEDULE_FILE), json.dumps(body, indent=2) + "\n", mode=0o644)
        except (OSError, OctobrixError) as error:
            log.warning("cannot write %s: %s", self.layout.path(SCHEDULE_FILE), error)


def failed_units(
    query: Callable[[Sequence[str]], UnitProps], units: Sequence[str]
) -> dict[str, systemd.UnitProperties]:
    """The failed ones among units, with their properties."""
    props = query(list(units)) if units else {}
    return {unit: props[unit] for unit in units if unit in props and props[unit].failed}
