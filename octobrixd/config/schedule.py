"""When octobrix-backup.timer runs: the `[octobrix]` backup keys and what a calendar time may be."""

from __future__ import annotations

import re

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
