"""The last backup of each printer, kept so `status` and `doctor` can show a failed one.

A small world-readable file (names, times, file names and error lines; never a secret), so that
`octobrixctl status` run without root sees it too.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from octobrixd.system import paths
from octobrixd.system.fsutil import write_atomic
from octobrixd.system.paths import Layout

if TYPE_CHECKING:
    from octobrixd.config.model import Config
    from octobrixd.config.view import FarmView

STATE_FILE = paths.STATE_DIR / ".backups.json"


@dataclass(frozen=True)
class LastBackup:
    name: str
    when: str
    ok: bool
    file: str | None = None
    error: str | None = None
    scheduled: bool = False


def read_state(layout: Layout, relative: PurePosixPath = STATE_FILE) -> dict[str, LastBackup]:
    try:
        body: Any = json.loads(layout.path(relative).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    printers = body.get("printers") if isinstance(body, dict) else None
    if not isinstance(printers, dict):
        return {}
    out = {}
    for name, row in printers.items():
        try:
            out[name] = LastBackup(**row)
        except TypeError:
            continue
    return out


def record(layout: Layout, results: list[LastBackup]) -> None:
    state = read_state(layout)
    state.update({row.name: row for row in results})
    body = {"printers": {name: asdict(row) for name, row in sorted(state.items())}}
    write_atomic(layout.path(STATE_FILE), json.dumps(body, indent=2) + "\n", mode=0o644)


def now_text() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def failures(layout: Layout, config: Config | FarmView) -> list[LastBackup]:
    """The configured printers whose last backup failed."""
    state = read_state(layout)
    return [row for name, row in sorted(state.items()) if name in config.printers and not row.ok]


def health(layout: Layout, config: Config | None) -> list[tuple[bool, str, str | None]]:
    """(ok, detail, fix) for doctor: one row, failed if any printer's last backup failed."""
    if config is None:
        return []
    state = read_state(layout)
    failed = failures(layout, config)
    if failed:
        detail = "\n".join(f"{row.name}: the backup of {row.when} failed: {row.error}" for row in failed)
        return [(False, detail, "see `journalctl -u octobrix-backup.service`; `sudo octobrixctl backup NAME` retries")]
    if not state:
        return [(True, f"no backup made yet (schedule: {config.octobrix.backup_schedule})", None)]
    latest = max(row.when for row in state.values())
    return [(True, f"last backups all succeeded (latest {latest})", None)]


def status_lines(layout: Layout, config: Config | FarmView, names: list[str]) -> list[str]:
    return [
        f"backup of {row.name} failed at {row.when}: {row.error} (`sudo octobrixctl backup {row.name}` retries)"
        for row in failures(layout, config)
        if not names or row.name in names
    ]
