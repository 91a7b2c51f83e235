"""The last backup of each printer, kept so `status` and `doctor` can show a failed one.

A small world-readable file (names, times, file names and error lines; never a secret), so that
`octobrixctl status` run without root sees it too.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from octobrixd.errors import OctobrixError
from octobrixd.findings import Finding
from octobrixd.system import paths
from octobrixd.system.fsutil import write_atomic
from octobrixd.system.paths import Layout

if TYPE_CHECKING:
    from octobrixd.config.model import Config
    from octobrixd.config.view import FarmView

STATE_FILE = paths.STATE_DIR / ".backups.json"
CHECK = "backups"
# Where record() keeps a file it could not read, before it starts a new one.
UNREADABLE_SUFFIX = ".unreadable"

log = logging.getLogger(__name__)


class UnreadableStateError(OctobrixError):
    """The file is there but is not a record octobrix wrote: never read as "no backups"."""


@dataclass(frozen=True)
class LastBackup:
    name: str
    when: str
    ok: bool
    file: str | None = None
    error: str | None = None
    scheduled: bool = False


def read_state(layout: Layout, relative: PurePosixPath = STATE_FILE) -> dict[str, LastBackup]:
    """The last backup of each printer; {} before the first backup. Raises UnreadableStateError
    when the file exists but cannot be read as the record, rather than report "no backups"."""
    path = layout.path(relative)
    try:
        body: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise _unreadable(path, str(error)) from None
    printers = body.get("printers") if isinstance(body, dict) else None
    if not isinstance(printers, dict):
        raise _unreadable(path, 'no "printers" table')
    out = {}
    for name, row in printers.items():
        try:
            out[name] = LastBackup(**row)
        except TypeError:
            raise _unreadable(path, f"the entry of {name!r} is not a backup record") from None
    return out


def _unreadable(path: os.PathLike[str], why: str) -> UnreadableStateError:
    kept = f"{os.fspath(path)}{UNREADABLE_SUFFIX}"
    return UnreadableStateError(
        f"the record of the last backups, {os.fspath(path)}, cannot be read: {why}",
        hint=f"the next backup starts a new record and keeps this one as {kept}",
    )


def record(layout: Layout, results: list[LastBackup]) -> None:
    try:
        state = read_state(layout)
    except UnreadableStateError as error:
        # Kept beside the new record for whoever wants to look, never silently overwritten.
        path = layout.path(STATE_FILE)
        path.replace(f"{path}{UNREADABLE_SUFFIX}")
        log.warning("%s; kept as %s%s, starting a new record", error.message, path, UNREADABLE_SUFFIX)
        state = {}
    state.update({row.name: row for row in results})
    body = {"printers": {name: asdict(row) for name, row in sorted(state.items())}}
    write_atomic(layout.path(STATE_FILE), json.dumps(body, indent=2) + "\n", mode=0o644)


def now_text() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def failures(layout: Layout, config: Config | FarmView) -> list[LastBackup]:
    """The configured printers whose last backup failed."""
    return _failed(read_state(layout), config)


def _failed(state: dict[str, LastBackup], config: Config | FarmView) -> list[LastBackup]:
    return [row for name, row in sorted(state.items()) if name in config.printers and not row.ok]


def health(layout: Layout, config: Config | None) -> list[Finding]:
    """For doctor: one finding, failed if any printer's last backup failed."""
    if config is None:
        return []
    try:
        state = read_state(layout)
    except UnreadableStateError as error:
        return [Finding(CHECK, False, error.message, error.hint)]
    failed = _failed(state, config)
    if failed:
        detail = "\n".join(f"{row.name}: the backup of {row.when} failed: {row.error}" for row in failed)
        fix = "see `journalctl -u octobrix-backup.service`; `sudo octobrixctl backup NAME` retries"
        return [Finding(CHECK, False, detail, fix)]
    if not state:
        return [Finding(CHECK, True, f"no backup made yet (schedule: {config.octobrix.backup_schedule})")]
    latest = max(row.when for row in state.values())
    return [Finding(CHECK, True, f"last backups all succeeded (latest {latest})")]


def status_lines(layout: Layout, config: Config | FarmView, names: list[str]) -> list[str]:
    try:
        failed = failures(layout, config)
    except UnreadableStateError as error:
        return [f"{error.message} ({error.hint})"]
    return [
        f"backup of {row.name} failed at {row.when}: {row.error} (`sudo octobrixctl backup {row.name}` retries)"
        for row in failed
        if not names or row.name in names
    ]
