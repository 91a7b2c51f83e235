"""The running processes as /proc shows them: their names, their units and the files they hold open.

Only /proc is read, never a device a process holds: looking at who has a printer's port open must
not open it. Standard library only (the lab VM runs `kmod status` from a bare python3 with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Process:
    path: Path  # /proc/PID, under the layout's root

    @property
    def pid(self) -> int:
        return int(self.path.name)

    def _text(self, name: str) -> str:
        try:
            return (self.path / name).read_text(encoding="utf-8", errors="replace")
        except OSError:  # exited meanwhile, or not ours to read
            return ""

    @property
    def command(self) -> str:
        return self._text("comm").strip() or "?"

    @property
    def unit(self) -> str | None:
        """The systemd unit (service or scope) it runs in, from its cgroup path."""
        for line in self._text("cgroup").splitlines():
            path = line.split(":", 2)[-1]
            units = [part for part in path.split("/") if part.endswith((".service", ".scope"))]
            if units:
                return units[-1]
        return None

    def open_files(self) -> list[tuple[Path, str]]:
        """Each open file descriptor and what it points at; [] if the process is gone.

        Raises PermissionError for another user's process when not root: a caller that must know
        whether it saw everything tells that apart from a process that exited.
        """
        try:
            fds = list((self.path / "fd").iterdir())
        except PermissionError:
            raise
        except OSError:
            return []
        found = []
        for fd in fds:
            try:
                found.append((fd, str(fd.readlink())))
            except OSError:
                continue  # closed meanwhile
        return found


def processes(proc: Path) -> list[Process]:
    """Every process in proc (a /proc directory); raises OSError when proc itself cannot be read."""
    return [Process(entry) for entry in proc.iterdir() if entry.name.isdigit()]
