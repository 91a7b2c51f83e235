"""octobrix-backup.timer's drop-in: when the scheduled backups run (config in, text out)."""

from __future__ import annotations

from pathlib import PurePosixPath

from octobrixd.config.schedule import OFF
from octobrixd.names import dropin
from octobrixd.system import paths

TIMER = "octobrix-backup.timer"
SERVICE = "octobrix-backup.service"
DROPIN = paths.UNIT_DIR / dropin(TIMER)


def render_timer_dropin(schedule: str, source_header: str) -> str:
    # The empty OnCalendar= clears the shipped timer's default before setting the configured one.
    return source_header + f"[Timer]\nOnCalendar=\nOnCalendar={schedule}\n"


def timer_files(schedule: str, has_printers: bool, source_header: str) -> dict[PurePosixPath, str]:
    """The timer's drop-in, or nothing when backups are off: apply then disables the timer."""
    if schedule == OFF or not has_printers:
        return {}
    return {DROPIN: render_timer_dropin(schedule, source_header)}
