"""When octobrix-backup.timer runs: the `[octobrix]` keys and the timer's drop-in (config in, text out)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from octobrixd import paths
from octobrixd.names import dropin

TIMER = "octobrix-backup.timer"
SERVICE = "octobrix-backup.service"
DROPIN = paths.UNIT_DIR / dropin(TIMER)
OFF = "off"
DEFAULT_SCHEDULE = "daily"
DEFAULT_KEEP = 7

# A systemd calendar expression ("daily", "Sun *-*-* 03:00", "*-*-* 02,14:30") goes on one line of
# the drop-in: only the characters such expressions use, so it can never add a line of its own.
CALENDAR_RE = re.compile(r"^[A-Za-z0-9*][A-Za-z0-9 *:,./~-]{0,99}\Z")


def check_schedule(value: str) -> str:
    if value != OFF and not CALENDAR_RE.match(value):
        raise ValueError(
            f'{value!r} is not a systemd calendar time: use "daily", "weekly", "Sun 03:00", '
            f'"*-*-* 02:30" (`systemd-analyze calendar "…"` checks one), or "{OFF}" for no scheduled backups'
        )
    return value


def render_timer_dropin(schedule: str, source_header: str) -> str:
    # The empty OnCalendar= clears the shipped timer's default before setting the configured one.
    return source_header + f"[Timer]\nOnCalendar=\nOnCalendar={schedule}\n"


def timer_files(schedule: str, has_printers: bool, source_header: str) -> dict[PurePosixPath, str]:
    """The timer's drop-in, or nothing when backups are off: apply then disables the timer."""
    if schedule == OFF or not has_printers:
        return {}
    return {DROPIN: render_timer_dropin(schedule, source_header)}
