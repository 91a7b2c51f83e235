"""What a check found, in one record: doctor's checks, the advisors (USB bandwidth, venvs, backups)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    name: str  # what was looked at: "backups", "printer1 venv", "USB bandwidth"
    ok: bool
    detail: str  # what was found, said so a maker understands it
    fix: str | None = None  # what the user should do; set whenever ok is False
