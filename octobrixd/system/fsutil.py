"""Atomic file writes: a reader sees the old file or the new one, never half of one.

A write is two steps, so a caller can write many files all-or-nothing: stage() puts the text in a
temp file beside the target and syncs it (this is where a full disk fails, before anything
changed), commit() renames it over the target. A temp file a killed process left behind is named
`.NAME.XXXXXXXX.tmp`; leftover_temps() finds them so the next run can remove them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from octobrixd.errors import OctobrixError

log = logging.getLogger(__name__)

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OctobrixError):
    """A file could not be written for lack of space (or quota) on its filesystem."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mount = mount_point(path)
        super().__init__(
            f"cannot write {path}: no space left on {self.mount}",
            hint=f"free some space on {self.mount} (`df -h {self.mount}` shows how much is left) and try again",
        )


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem path is (or would be) on."""
    current = path.resolve()
    while not current.exists():
        current = current.parent
    while not os.path.ismount(current):
        current = current.parent
    return current


@contextlib.contextmanager
def disk_full_explained(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        if error.errno in DISK_FULL:
            raise DiskFullError(path) from error
        raise


def stage(path: Path, text: str, *, mode: int = 0o644) -> Path:
    """Write text to a synced temp file beside path and return it; path itself is not touched."""
    with disk_full_explained(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fchmod(handle.fileno(), mode)
                os.fsync(handle.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                Path(tmp_name).unlink()
            raise
    return Path(tmp_name)


def commit(temp: Path, path: Path, *, uid: int = -1, gid: int = -1) -> None:
    """Rename a staged temp file over path, atomically, and sync the directory."""
    with disk_full_explained(path):
        if uid != -1 or gid != -1:
            os.chown(temp, uid, gid)
        temp.replace(path)
        fsync_dir(path.parent)


def write_atomic(path: Path, text: str, *, mode: int = 0o644, uid: int = -1, gid: int = -1) -> None:
    """Write text to path via a temp file in the same directory, fsync, rename, fsync the directory."""
    temp = stage(path, text, mode=mode)
    try:
        commit(temp, path, uid=uid, gid=gid)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def leftover_temps(path: Path) -> list[Path]:
    """Temp files of path that a killed writer left behind (stage() names them so)."""
    pattern = f".{glob.escape(path.name)}.{'?' * 8}.tmp"
    return sorted(path.parent.glob(pattern)) if path.parent.is_dir() else []


def fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_file(path: Path) -> bool:
    """Remove path if it exists; prune the directory if that left it empty. True if removed."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    prune_empty_dir(path.parent)
    return True


def prune_empty_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        directory.rmdir()


@contextlib.contextmanager
def exclusive_lock(path: Path, waiting_for: str) -> Iterator[None]:
    """Hold an flock on path for the block; logs once that it waits for WAITING_FOR when another holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for %s to finish (%s)", waiting_for, path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
