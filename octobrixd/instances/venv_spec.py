"""Which venv a printer should run, and whether it runs it: read from the config and the venv link,
nothing built. instances/venvs.py builds and swaps venvs; doctor, status and the plan's comparison
read through this module, so a reader never imports the builder.
"""

from __future__ import annotations

import hashlib
import stat
from dataclasses import dataclass, field
from pathlib import Path

from octobrixd.config.model import Config
from octobrixd.instances.instance import Instance
from octobrixd.system import nofollow
from octobrixd.system.paths import Layout

# In a venv whose build finished: a build killed half-way has none.
COMPLETE_MARKER = ".octobrix-complete"
# What octobrix names a venv folder: its digest, maybe with a suffix (`-1`); never `.` or `..`.


@dataclass(frozen=True)
class VenvSpec:
    name: str
    requirements: tuple[str, ...]
    # Why it is built, for --dry-run; drift: only the venv's contents changed, not the config.
    reason: str = field(default="", compare=False)
    drift: bool = field(default=False, compare=False)
    # Another OctoPrint's venv whose Plugin Manager plugins come along (`import`): used while the
    # instance has no venv of its own yet.
    carry_from: Path | None = field(default=None, compare=False)

    @property
    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.requirements).encode()).hexdigest()[:16]


def venv_spec(config: Config, name: str) -> VenvSpec:
    return VenvSpec(name, (config.octoprint_requirement(name), *config.printers[name].plugins))


def venvs_dir(layout: Layout, name: str) -> Path:
    return Instance(name, layout).venvs


def venv_link(layout: Layout, name: str) -> Path:
    return Instance(name, layout).venv


def current_venv(layout: Layout, name: str) -> Path | None:
    """The venv folder root's `venv` link names (Instance.active_venv_dir: its text, never followed)."""
    active = Instance(name, layout).active_venv_dir()
    return None if active is None else Instance(name, layout).state_dir / active


def is_complete(venv: Path) -> bool:
    """venv is a folder (not a link) whose build finished: it holds the marker, a regular file."""
    try:
        return stat.S_ISDIR(venv.lstat().st_mode) and stat.S_ISREG((venv / COMPLETE_MARKER).lstat().st_mode)
    except OSError:
        return False


def is_current(layout: Layout, spec: VenvSpec) -> bool:
    instance = Instance(spec.name, layout)
    active = instance.active_venv_dir()
    # A rebuild of the same requirements (drift repair) goes to DIGEST-1 beside the running DIGEST.
    if active is None or active.name.partition("-")[0] != spec.digest:
        return False
    # The marker root left in a finished build, looked at without following anything in the venv.
    return nofollow.is_regular_file(instance.state_dir, active / COMPLETE_MARKER)
