"""Which venv a printer should run, and whether it runs it: read from the config and the venv link,
nothing built. instances/venvs.py builds and swaps venvs; doctor, status and the plan's comparison
read through this module, so a reader never imports the builder.
"""

from __future__ import annotations

import hashlib
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from octobrixd.config.model import Config
from octobrixd.instances.instance import VENVS, Instance
from octobrixd.system.paths import Layout

# In a venv whose build finished: a build killed half-way has none.
COMPLETE_MARKER = ".octobrix-complete"
# What octobrix names a venv folder: its digest, maybe with a suffix (`-1`); never `.` or `..`.
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


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
    """The venv folder the `venv` link names, read as text and never followed: only a link to
    `venvs/<plain name>` counts (octobrix writes no other); anything else is no current venv."""
    try:
        text = str(venv_link(layout, name).readlink())
    except OSError:  # none, or not a link
        return None
    parts = PurePosixPath(text).parts
    if len(parts) != 2 or parts[0] != VENVS or not _PLAIN.fullmatch(parts[1]):
        return None
    return venvs_dir(layout, name) / parts[1]


def is_complete(venv: Path) -> bool:
    """venv is a folder (not a link) whose build finished: it holds the marker, a regular file."""
    try:
        return stat.S_ISDIR(venv.lstat().st_mode) and stat.S_ISREG((venv / COMPLETE_MARKER).lstat().st_mode)
    except OSError:
        return False


def is_current(layout: Layout, spec: VenvSpec) -> bool:
    target = current_venv(layout, spec.name)
    # A rebuild of the same requirements (drift repair) goes to DIGEST-1 beside the running DIGEST.
    return target is not None and target.name.partition("-")[0] == spec.digest and is_complete(target)
