"""Each printer's state directory as root keeps it, and the move of an older farm's to this layout.

/var/lib/octobrix/NAME is root:octobrix-NAME 0750, and so is its venvs/: only root makes, renames or
removes entries there, so the `venv` link root follows and the venvs it builds cannot be swapped by
the printer's user (who reads and enters them through its group). basedir/ (with basedir/plugins)
and home/ are the user's, 0700: OctoPrint's basedir, and its HOME and working directory.

A farm made before had the state directory and venvs/ as the user's. The next apply takes them back:
the directory itself, never through a link (each name is opened beneath the folder opened before it,
with O_NOFOLLOW, and changed through that descriptor), and refuses a name that should be a directory
but is a link or something else. A `venv` link the user made, or one that points anywhere but
venvs/<name>, is replaced by root's (to the same venv if that is a real directory, else removed: the
apply builds the venv again). What the old HOME left in the state directory (.cache, .local) stays
there; root never reads it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from octobrixd.errors import OctobrixError
from octobrixd.instances.instance import BASEDIR, HOME, PLUGINS, VENV, VENVS, Instance
from octobrixd.system import nofollow

ROOT_DIR_MODE = 0o750  # root:octobrix-NAME: the user reads and enters, only root writes
USER_DIR_MODE = 0o700  # octobrix-NAME's own: another instance must not read its settings, keys or uploads
_OPEN_DIR = nofollow.DIR_FLAGS
_MIGRATING_LINK = ".venv.migrate"


class Owner(StrEnum):
    ROOT = "root"
    USER = "user"


@dataclass(frozen=True)
class Wanted:
    parts: tuple[str, ...]  # names below the state directory; () is the state directory itself
    owner: Owner

    @property
    def mode(self) -> int:
        return ROOT_DIR_MODE if self.owner is Owner.ROOT else USER_DIR_MODE


# Parents before children. basedir/plugins holds octobrix's online-check plugin, and OctoPrint's
# Plugin Manager installs single-file plugins there: made before OctoPrint's first start, it is the
# instance's.
WANTED = (
    Wanted((), Owner.ROOT),
    Wanted((VENVS,), Owner.ROOT),
    Wanted((BASEDIR,), Owner.USER),
    Wanted((BASEDIR, PLUGINS), Owner.USER),
    Wanted((HOME,), Owner.USER),
)


class LinkAction(StrEnum):
    KEEP = "keep"  # root's link to venvs/<name>, or none at all
    REPOINT = "repoint"  # made by the user, or written oddly, but naming a real venvs/<name>: root makes it again
    REMOVE = "remove"  # pointing anywhere else, or not a link at all: removed, and the venv is built again


@dataclass(frozen=True)
class VenvLinkVerdict:
    action: LinkAction
    target: str | None = None  # the plain name in venvs/ for REPOINT


def _plain(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..") and "\0" not in name


def _venv_named(instance: Instance, target: str) -> str | None:
    """X when the link's target is venvs/X (or the state directory's own absolute venvs/X)."""
    for prefix in (f"{VENVS}/", f"{instance.venvs}/"):
        if target.startswith(prefix) and _plain(target[len(prefix) :]):
            return target[len(prefix) :]
    return None


def venv_link_verdict(instance: Instance, ids: tuple[int, int] | None) -> VenvLinkVerdict:
    """What the apply does with the instance's `venv` link. ids: its user's (live), or None under
    --root, where who made the link is not asked."""
    try:
        info = os.lstat(instance.venv)
    except FileNotFoundError:
        return VenvLinkVerdict(LinkAction.KEEP)
    if not stat.S_ISLNK(info.st_mode):
        return VenvLinkVerdict(LinkAction.REMOVE)
    target = str(instance.venv.readlink())
    named = _venv_named(instance, target)
    # Only a real directory in venvs/ (a link there was the user's, in the layout before).
    if named is None or not (_is_real_directory(instance.venvs) and _is_real_directory(instance.venvs / named)):
        return VenvLinkVerdict(LinkAction.REMOVE)
    if target == f"{VENVS}/{named}" and (ids is None or info.st_uid == 0):
        return VenvLinkVerdict(LinkAction.KEEP)
    return VenvLinkVerdict(LinkAction.REPOINT, named)


def _is_real_directory(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _owner_ids(wanted: Wanted, ids: tuple[int, int]) -> tuple[int, int]:
    uid, gid = ids
    return (0 if wanted.owner is Owner.ROOT else uid), gid


def state_dir_ready(instance: Instance, ids: tuple[int, int] | None) -> bool:
    """Every directory of the layout there, a directory (not a link), with its mode and (ids given:
    live) its owner, and the venv link root's: a killed apply may have left them half made, and a
    farm from before this layout has the state directory as its user's."""
    for wanted in WANTED:
        try:
            info = os.lstat(instance.state_dir.joinpath(*wanted.parts))
        except FileNotFoundError:
            return False
        if not stat.S_ISDIR(info.st_mode) or stat.S_IMODE(info.st_mode) != wanted.mode:
            return False
        if ids is not None and (info.st_uid, info.st_gid) != _owner_ids(wanted, ids):
            return False
    if any(not stat.S_ISDIR(entry.lstat().st_mode) for entry in instance.venvs.iterdir()):
        return False  # left by the user when venvs/ was its own
    return venv_link_verdict(instance, ids).action is LinkAction.KEEP


def _strays(venvs_fd: int) -> list[str]:
    """What in venvs/ is not a directory: root builds only directories there, so a link, file or
    device is what the user left when venvs/ was its own."""
    names = os.listdir(venvs_fd)  # a descriptor: names below it, never through a link
    return [name for name in names if not stat.S_ISDIR(os.lstat(name, dir_fd=venvs_fd).st_mode)]


def ensure_state_dir(instance: Instance, ids: tuple[int, int] | None) -> None:
    """Make the instance's state directory as WANTED says, taking it (and venvs/) back from the
    printer's user if an older octobrix gave them away, then set its venv link right. ids: its user's
    on a live system; None under --root (modes only, no owners)."""
    top = instance.state_dir.parent
    top.mkdir(parents=True, exist_ok=True)  # /var/lib/octobrix: root's, made by the package
    with contextlib.ExitStack() as stack:
        opened: dict[tuple[str, ...], int] = {}
        parent_fd = stack.enter_context(_descriptor(os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)))
        for wanted in WANTED:
            above = opened[wanted.parts[:-1]] if wanted.parts else parent_fd
            name = wanted.parts[-1] if wanted.parts else instance.state_dir.name
            path = instance.state_dir.joinpath(*wanted.parts)
            fd = stack.enter_context(_descriptor(_directory(above, name, path, wanted.mode)))
            if ids is not None:
                os.fchown(fd, *_owner_ids(wanted, ids))
            os.fchmod(fd, wanted.mode)
            opened[wanted.parts] = fd
        venvs_fd = opened[(VENVS,)]
        for stray in _strays(venvs_fd):
            os.unlink(stray, dir_fd=venvs_fd)
        _set_venv_link(instance, ids, opened[()])


@contextlib.contextmanager
def _descriptor(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _directory(parent_fd: int, name: str, path: Path, mode: int) -> int:
    """The directory NAME below parent_fd, made if missing, opened without following a link."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, mode, dir_fd=parent_fd)
    try:
        return os.open(name, _OPEN_DIR, dir_fd=parent_fd)
    except OSError as error:
        if error.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
    what = "a link" if stat.S_ISLNK(os.lstat(name, dir_fd=parent_fd).st_mode) else "not a directory"
    raise OctobrixError(
        f"{path} should be a directory but is {what}: octobrix neither follows nor replaces it",
        hint=f"see what made it, move it away (`sudo mv {path} {path}.moved`) and apply again",
    )


def _set_venv_link(instance: Instance, ids: tuple[int, int] | None, state_fd: int) -> None:
    verdict = venv_link_verdict(instance, ids)
    if verdict.action is LinkAction.REPOINT:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_MIGRATING_LINK, dir_fd=state_fd)
        os.symlink(f"{VENVS}/{verdict.target}", _MIGRATING_LINK, dir_fd=state_fd)
        os.replace(_MIGRATING_LINK, VENV, src_dir_fd=state_fd, dst_dir_fd=state_fd)
    elif verdict.action is LinkAction.REMOVE:
        # The state directory is root's by now: the name cannot change under us.
        if stat.S_ISDIR(os.lstat(VENV, dir_fd=state_fd).st_mode):
            shutil.rmtree(VENV, dir_fd=state_fd)
        else:
            os.unlink(VENV, dir_fd=state_fd)
