"""The system steps of an apply as data: apply_plan runs them, --dry-run lists them, so the two agree."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from octobrixd.system.paths import Layout


class Stage(StrEnum):
    """Where in an apply a step runs, each once what it needs is in place."""

    USERS = "users"  # after the sysusers file is written, before the state folders
    VENVS = "venvs"  # before any other file changes: a failed install leaves the system as it was
    SEED = "seed"  # after the files: the instances' accounts and keys
    SYSTEM = "system"  # last, on a live system only: drivers, systemd, udev, the front door


@dataclass(frozen=True)
class Doing:
    """What a step acts on: the apply's layout and the restarts held back for a print."""

    layout: Layout
    deferred: tuple[str, ...]


@dataclass(frozen=True)
class Step:
    """One system step of an apply: the commands it runs (as --dry-run lists them) and how it runs them."""

    stage: Stage
    says: tuple[str, ...]
    act: Callable[[Doing], None]
    live_only: bool = True
