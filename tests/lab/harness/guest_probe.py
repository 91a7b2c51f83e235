"""What a soak looks at in a guest: a unit's main process, its memory and open descriptors, and how
many processes run; read from /proc and systemctl, as an administrator would."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tests.lab.harness.waiting import wait_until


class Guest(Protocol):
    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]: ...


def main_pid(guest: Guest, unit: str) -> int:
    """The unit's main process; 0 while it is not running."""
    return int(guest.run(["systemctl", "show", "-p", "MainPID", "--value", unit]).stdout)


def octoprint_pid(guest: Guest, name: str) -> int:
    """The main process of printer NAME's OctoPrint; 0 while it is not running."""
    return main_pid(guest, f"octoprint@{name}.service")


def rss_kib(guest: Guest, unit: str) -> int:
    status = guest.run(["cat", f"/proc/{main_pid(guest, unit)}/status"]).stdout
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def fd_count(guest: Guest, unit: str) -> int:
    return len(guest.run(["ls", f"/proc/{main_pid(guest, unit)}/fd"]).stdout.split())


def process_count(guest: Guest) -> int:
    return len(guest.run(["ps", "-e", "-o", "pid="]).stdout.split())


def failed_units(guest: Guest) -> str:
    return guest.run(["systemctl", "--failed", "--no-legend", "--plain"]).stdout.strip()


@dataclass(frozen=True)
class Footprint:
    """A daemon's process, memory and descriptors, and the guest's process count, at one moment."""

    pid: int
    rss_kib: int
    fds: int
    processes: int

    def __str__(self) -> str:
        return f"daemon RSS {self.rss_kib} KiB, fds {self.fds}, processes {self.processes}"


def footprint(guest: Guest, unit: str) -> Footprint:
    return Footprint(main_pid(guest, unit), rss_kib(guest, unit), fd_count(guest, unit), process_count(guest))


def assert_left_as_it_was(guest: Guest, unit: str, before: Footprint) -> Footprint:
    """After a soak: no failed unit, the daemon the same process with its descriptors back where they
    were (its worker threads may still be finishing a last round, so they get a minute), its memory
    flat, no stray processes. Returns the footprint after, for the figures."""
    assert failed_units(guest) == "", failed_units(guest)
    assert main_pid(guest, unit) == before.pid, f"{unit} never crashed"
    wait_until(f"{unit}'s descriptors back to where they were", lambda: fd_count(guest, unit) <= before.fds, 60)
    after = footprint(guest, unit)
    assert after.rss_kib - before.rss_kib < 4096, f"{unit}'s memory stays flat: {before} -> {after}"
    assert after.processes <= before.processes + 2, f"no stray processes: {before} -> {after}"
    return after
