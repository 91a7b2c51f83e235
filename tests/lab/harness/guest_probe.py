"""What a soak looks at in a guest: a unit's main process, its memory and open descriptors, and how
many processes run; read from /proc and systemctl, as an administrator would."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Protocol


class Guest(Protocol):
    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]: ...


def main_pid(guest: Guest, unit: str) -> int:
    return int(guest.run(["systemctl", "show", "-p", "MainPID", "--value", unit]).stdout)


def rss_kib(guest: Guest, unit: str) -> int:
    status = guest.run(["cat", f"/proc/{main_pid(guest, unit)}/status"]).stdout
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def fd_count(guest: Guest, unit: str) -> int:
    return len(guest.run(["ls", f"/proc/{main_pid(guest, unit)}/fd"]).stdout.split())


def process_count(guest: Guest) -> int:
    return len(guest.run(["ps", "-e", "-o", "pid="]).stdout.split())


def failed_units(guest: Guest) -> str:
    return guest.run(["systemctl", "--failed", "--no-legend", "--plain"]).stdout.strip()
