"""What a rollback needs, kept before every upgrade: the venv the printer ran (octobrix keeps the
previous venv beside the new one), its config.yaml and users.yaml, and its pin in the config.

Kept under a root-only folder (/var/lib/octobrix/.upgrades), which no printer's user can write: the
OctoPrint being upgraded cannot change where a rollback points. Still, a point is checked when read (its
venv one plain name under the printer's venvs/), and the files it keeps are read from and put back into
the basedir without following a link there (system/nofollow).
"""

from __future__ import annotations

import datetime
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from octobrixd.errors import OctobrixError
from octobrixd.instances.instance import BASEDIR, CONFIG_YAML, USERS_YAML, VENVS, Instance
from octobrixd.instances.venv_contents import current_venv
from octobrixd.instances.venv_spec import COMPLETE_MARKER, venv_link, venvs_dir
from octobrixd.system import nofollow, paths
from octobrixd.system.fsutil import write_atomic
from octobrixd.system.paths import Layout

POINTS_DIR = paths.STATE_DIR / ".upgrades"
POINT_FILE = "point.json"
KEPT_FILES = (CONFIG_YAML, USERS_YAML)
FORMAT = 1


@dataclass(frozen=True)
class Point:
    name: str
    venv: str  # the folder under venvs/ the printer ran
    version: str | None  # its OctoPrint
    requirement: str  # what the config asked for then
    own_pin: str | None  # printers.NAME.octoprint as it was (None: it used [octobrix] octoprint)
    target: str  # what it was upgraded to
    made: str


def folder(layout: Layout, name: str) -> Path:
    """The point `rollback NAME` goes back to."""
    return layout.path(POINTS_DIR / name)


def pending(layout: Layout, name: str) -> Path:
    """The point of the upgrade under way: it becomes folder() only once the upgrade passed its check,
    so a failed upgrade leaves the point of the last good one as it was."""
    return layout.path(POINTS_DIR / f"{name}.pending")


def _kept_in_basedir(kept: str) -> PurePosixPath:
    return PurePosixPath(BASEDIR, kept)


def save(layout: Layout, point: Point, where: Path) -> None:
    """Copies config.yaml and users.yaml (root only) into where, then the point itself.

    Each is read from the basedir without following a link: a link or FIFO planted there refuses the
    upgrade (UnsafePathError names it) before anything changed; a missing one is not kept."""
    state_dir = Instance(point.name, layout).state_dir
    contents: dict[str, bytes | None] = {}
    for kept in KEPT_FILES:
        try:
            contents[kept] = nofollow.read_bytes(state_dir, _kept_in_basedir(kept))
        except FileNotFoundError:
            contents[kept] = None
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True, exist_ok=True)
    where.parent.chmod(0o700)
    where.chmod(0o700)
    for kept, data in contents.items():
        if data is not None:
            nofollow.write_atomic(where, kept, data, mode=0o600)
        else:
            nofollow.remove(where, kept)
    write_atomic(where / POINT_FILE, json.dumps({"format": FORMAT, **asdict(point)}, indent=2) + "\n", mode=0o600)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _plain_name(text: str) -> bool:
    return bool(text) and "/" not in text and text not in (".", "..") and "\0" not in text


def _valid(body: object, name: str) -> Point | None:
    """The point body holds, if it is one this octobrix wrote for printer NAME."""
    if not isinstance(body, dict) or body.pop("format", None) != FORMAT:
        return None
    try:
        point = Point(**body)
    except TypeError:
        return None
    texts = (point.name, point.venv, point.requirement, point.target, point.made)
    optional = (point.version, point.own_pin)
    if not all(isinstance(t, str) for t in texts) or not all(t is None or isinstance(t, str) for t in optional):
        return None
    # The venv to go back to is one folder of this printer's venvs/: never a path elsewhere.
    if point.name != name or not _plain_name(point.venv):
        return None
    return point


def load(layout: Layout, name: str) -> Point | None:
    path = folder(layout, name) / POINT_FILE
    try:
        body = json.loads(nofollow.read_text(layout.path(POINTS_DIR), PurePosixPath(name, POINT_FILE)))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise OctobrixError(
            f"the rollback point of {name} ({path}) cannot be read: {error}",
            hint=f"`octobrixctl upgrade {name} --to octoprint==VERSION` moves it to the version you want",
        ) from None
    point = _valid(body, name)
    if point is None:
        raise OctobrixError(
            f"the rollback point of {name} ({path}) is not one this octobrix wrote",
            hint=f"`octobrixctl upgrade {name} --to octoprint==VERSION` moves it to the version you want",
        )
    return point


def previous_venv(layout: Layout, point: Point) -> Path:
    """The venv to go back to; it must still be a complete venv of this printer's."""
    candidate = venvs_dir(layout, point.name) / PurePosixPath(point.venv).name
    marker = PurePosixPath(VENVS, candidate.name, COMPLETE_MARKER)
    if not _plain_name(point.venv) or not nofollow.is_regular_file(Instance(point.name, layout).state_dir, marker):
        raise OctobrixError(
            f"{point.name}'s previous OctoPrint ({candidate}) is no longer there",
            hint=f"`octobrixctl upgrade {point.name} --to {point.requirement}` builds it again",
        )
    return candidate


def running_venv(layout: Layout, name: str) -> Path | None:
    """state_dir/venvs/DIR the printer runs, read from its venv link's text (Instance.active_venv_dir)."""
    return current_venv(layout, name)


def swap_venv(layout: Layout, name: str, target: Path) -> None:
    """Point the printer's venv link at target, atomically (as venvs.provision does)."""
    link = venv_link(layout, name)
    temporary = link.with_name(".venv.rollback")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(Path(VENVS) / target.name)
    temporary.replace(link)


def promote(layout: Layout, name: str) -> None:
    """The pending point becomes the one `rollback` goes back to."""
    shutil.rmtree(folder(layout, name), ignore_errors=True)
    pending(layout, name).rename(folder(layout, name))


def restore_files(layout: Layout, point: Point, where: Path, uid: int, gid: int) -> None:
    """config.yaml and users.yaml back from where, as they were, owned by the instance: each written new
    beside its name in the basedir and renamed over it, so a link planted there is replaced, never
    written through."""
    state_dir = Instance(point.name, layout).state_dir
    for kept in KEPT_FILES:
        try:
            data = nofollow.read_bytes(where, kept)
        except FileNotFoundError:
            continue
        nofollow.write_atomic(state_dir, _kept_in_basedir(kept), data, mode=0o600, uid=uid, gid=gid)


def forget(where: Path) -> None:
    shutil.rmtree(where, ignore_errors=True)
