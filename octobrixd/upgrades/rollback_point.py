"""What a rollback needs, kept before every upgrade: the venv the printer ran (octobrix keeps the
previous venv beside the new one), its config.yaml and users.yaml, and its pin in the config.

Kept under a root-only folder, not in the instance's own state directory: the OctoPrint being
upgraded cannot change where a rollback points.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from octobrixd.errors import OctobrixError
from octobrixd.instances.instance import CONFIG_YAML, USERS_YAML, VENVS, Instance
from octobrixd.instances.venv_spec import COMPLETE_MARKER, venv_link, venvs_dir
from octobrixd.system import paths
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


def save(layout: Layout, point: Point, where: Path) -> None:
    """Copies config.yaml and users.yaml (root only) into where, then the point itself."""
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True, exist_ok=True)
    where.parent.chmod(0o700)
    where.chmod(0o700)
    for kept in KEPT_FILES:
        source = Instance(point.name, layout).basedir / kept
        target = where / kept
        if source.exists():
            fresh = target.with_name(f".{kept}.new")
            shutil.copy2(source, fresh)
            fresh.chmod(0o600)
            fresh.replace(target)
        else:
            target.unlink(missing_ok=True)
    write_atomic(where / POINT_FILE, json.dumps({"format": FORMAT, **asdict(point)}, indent=2) + "\n", mode=0o600)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def load(layout: Layout, name: str) -> Point | None:
    try:
        body = json.loads((folder(layout, name) / POINT_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise OctobrixError(
            f"the rollback point of {name} ({folder(layout, name) / POINT_FILE}) cannot be read: {error}",
            hint=f"`octobrixctl upgrade {name} --to octoprint==VERSION` moves it to the version you want",
        ) from None
    body.pop("format", None)
    try:
        return Point(**body)
    except TypeError:
        raise OctobrixError(
            f"the rollback point of {name} is not one this octobrix wrote",
            hint=f"`octobrixctl upgrade {name} --to octoprint==VERSION` moves it to the version you want",
        ) from None


def previous_venv(layout: Layout, point: Point) -> Path:
    """The venv to go back to; it must still be a complete venv of this printer's."""
    candidate = venvs_dir(layout, point.name) / PurePosixPath(point.venv).name
    if not (candidate / COMPLETE_MARKER).exists():
        raise OctobrixError(
            f"{point.name}'s previous OctoPrint ({candidate}) is no longer there",
            hint=f"`octobrixctl upgrade {point.name} --to {point.requirement}` builds it again",
        )
    return candidate


def running_venv(layout: Layout, name: str) -> Path | None:
    link = venv_link(layout, name)
    return link.resolve() if link.is_symlink() else None


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
    """config.yaml and users.yaml back from where, as they were, owned by the instance."""
    for kept in KEPT_FILES:
        source = where / kept
        if not source.exists():
            continue
        target = Instance(point.name, layout).basedir / kept
        temporary = target.with_name(f".{kept}.rollback")
        shutil.copyfile(source, temporary)
        temporary.chmod(0o600)
        if uid != -1:
            os.chown(temporary, uid, gid)
        temporary.replace(target)


def forget(where: Path) -> None:
    shutil.rmtree(where, ignore_errors=True)
