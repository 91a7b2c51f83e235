"""Files in folders someone else can write, opened by root without following a link.

A printer's user owns its basedir, its home and the directories of its venvs, so any name in there
may be a link (to /etc/shadow, to another printer's folder), a FIFO (root would hang reading it) or
a device. Root reaches such a file from a folder only root can write (the trusted `top`, say the
printer's state directory) one name at a time, each opened with O_NOFOLLOW: a link anywhere on the
way is refused, not followed. What it opens last must be a regular file (or a directory, asked for).
Everything is done on descriptors, so a name swapped for a link half-way changes nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from octobrixd.errors import OctobrixError
from octobrixd.system.fsutil import disk_full_explained

# Read no more than this from a file a printer's user could have grown: root reads settings,
# metadata and keys here, never uploads.
READ_LIMIT = 16 * 1024 * 1024

# The flags of every open in a printer's folders, for code that walks them by descriptor itself.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO under the name opens at once (and is then refused as not a regular file).
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePathError(OctobrixError):
    """A name on the way was a link, or the file was not a regular file: refused, nothing followed."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        super().__init__(
            f"refusing {path}: {what}; octobrix never follows a link or reads a special file in a printer's folders",
            hint=f"look at `ls -l {path}`: the printer's own plugin or a user made it; move it aside by hand",
        )


def _parts(relative: PurePosixPath | str) -> tuple[str, ...]:
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or any(p in ("..", ".") for p in parts):
        raise ValueError(f"not a plain relative path: {relative!r}")
    return parts


def _open_dir_at(parent_fd: int, name: str, shown: Path) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePathError(shown, "it is a link or not a folder") from None
        raise


@contextlib.contextmanager
def open_dir(top: Path, relative: PurePosixPath | str = "") -> Iterator[int]:
    """A descriptor of the folder top/relative, every name below top opened without following links.
    top itself is trusted (root's own folder)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        shown = top
        for name in _parts(relative) if str(relative) not in ("", ".") else ():
            shown = shown / name
            inner = _open_dir_at(fd, name, shown)
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_file(top: Path, relative: PurePosixPath | str) -> Iterator[int]:
    """A read-only descriptor of the regular file top/relative, no link followed on the way."""
    parts = _parts(relative)
    shown = top.joinpath(*parts)
    with open_dir(top, PurePosixPath(*parts[:-1]) if len(parts) > 1 else "") as parent:
        try:
            fd = os.open(parts[-1], READ_FLAGS, dir_fd=parent)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise UnsafePathError(shown, "it is a link") from None
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UnsafePathError(shown, "it is not a regular file")
            # Opened non-blocking so a FIFO could not hang us; reads of a regular file block as usual.
            os.set_blocking(fd, True)
            yield fd
        finally:
            os.close(fd)


def read_bytes(top: Path, relative: PurePosixPath | str, *, limit: int = READ_LIMIT) -> bytes:
    """The content of the regular file top/relative (FileNotFoundError if it is not there)."""
    with open_file(top, relative) as fd:
        chunks = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    data = b"".join(chunks)
    if len(data) > limit:
        raise UnsafePathError(top.joinpath(*_parts(relative)), f"it is larger than {limit} bytes")
    return data


def read_text(top: Path, relative: PurePosixPath | str, *, limit: int = READ_LIMIT) -> str:
    return read_bytes(top, relative, limit=limit).decode("utf-8")


def lstat_at(top: Path, relative: PurePosixPath | str) -> os.stat_result:
    """lstat of top/relative, its folders opened without following links."""
    parts = _parts(relative)
    with open_dir(top, PurePosixPath(*parts[:-1]) if len(parts) > 1 else "") as parent:
        return os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)


def is_regular_file(top: Path, relative: PurePosixPath | str) -> bool:
    try:
        return stat.S_ISREG(lstat_at(top, relative).st_mode)
    except (OSError, UnsafePathError):
        return False


def list_dir(top: Path, relative: PurePosixPath | str = "") -> list[tuple[str, os.stat_result]]:
    """The names in the folder top/relative with their lstat, sorted; nothing followed."""
    with open_dir(top, relative) as fd:
        names = sorted(os.listdir(fd))  # noqa: PTH208 (a descriptor, not a path)
        return [(name, os.stat(name, dir_fd=fd, follow_symlinks=False)) for name in names]


def _file_parent(relative: PurePosixPath | str) -> tuple[tuple[str, ...], PurePosixPath | str]:
    parts = _parts(relative)
    return parts, (PurePosixPath(*parts[:-1]) if len(parts) > 1 else "")


def stage(
    top: Path,
    relative: PurePosixPath | str,
    data: bytes | str,
    *,
    mode: int = 0o600,
    uid: int = -1,
    gid: int = -1,
) -> str:
    """The first half of write_atomic: data in a new synced temp file beside top/relative, made with
    O_EXCL|O_NOFOLLOW and owned as asked already; its name is returned for commit() or discard().
    top/relative itself is not touched. A full disk is a DiskFullError."""
    parts, parent_rel = _file_parent(relative)
    shown = top.joinpath(*parts)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with open_dir(top, parent_rel) as parent, disk_full_explained(shown):
        temp = f".{parts[-1]}.{os.urandom(4).hex()}.tmp"
        fd = os.open(temp, NEW_FILE_FLAGS, 0o600, dir_fd=parent)
        try:
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view) :]
                if uid != -1 or gid != -1:
                    os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=parent)
            raise
    return temp


def commit(top: Path, relative: PurePosixPath | str, temp: str, *, uid: int = -1, gid: int = -1) -> None:
    """Rename the staged temp over top/relative (a link there is replaced, not followed); the folders
    on the way are opened again without following links. uid/gid: hand it over first (for a user made
    after staging), through a descriptor of the temp opened without following a link."""
    parts, parent_rel = _file_parent(relative)
    shown = top.joinpath(*parts)
    with open_dir(top, parent_rel) as parent, disk_full_explained(shown):
        if uid != -1 or gid != -1:
            try:
                fd = os.open(temp, READ_FLAGS, dir_fd=parent)
            except OSError as error:
                if error.errno == errno.ELOOP:
                    raise UnsafePathError(shown.with_name(temp), "it is a link") from None
                raise
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise UnsafePathError(shown.with_name(temp), "it is not a regular file")
                os.fchown(fd, uid, gid)
            finally:
                os.close(fd)
        os.rename(temp, parts[-1], src_dir_fd=parent, dst_dir_fd=parent)
        os.fsync(parent)


def discard(top: Path, relative: PurePosixPath | str, temp: str) -> None:
    """Remove a staged temp that will not be committed; quiet if it, or its folder, is gone."""
    _, parent_rel = _file_parent(relative)
    with contextlib.suppress(OSError, UnsafePathError), open_dir(top, parent_rel) as parent:
        os.unlink(temp, dir_fd=parent)


def write_atomic(
    top: Path,
    relative: PurePosixPath | str,
    data: bytes | str,
    *,
    mode: int = 0o600,
    uid: int = -1,
    gid: int = -1,
) -> None:
    """Replace top/relative with data: a new file made with O_EXCL|O_NOFOLLOW beside it (a planted
    name is never written through), synced, owned and renamed over the old name (a link there is
    replaced, not followed)."""
    temp = stage(top, relative, data, mode=mode, uid=uid, gid=gid)
    try:
        commit(top, relative, temp)
    except BaseException:
        discard(top, relative, temp)
        raise


def remove(top: Path, relative: PurePosixPath | str) -> bool:
    """Unlink the name top/relative (a link is removed itself, never what it points to); the folders on
    the way are opened without following links. False if it was not there."""
    parts, parent_rel = _file_parent(relative)
    with open_dir(top, parent_rel) as parent:
        try:
            os.unlink(parts[-1], dir_fd=parent)
        except FileNotFoundError:
            return False
        os.fsync(parent)
    return True


def prune_empty_dir(top: Path, relative: PurePosixPath | str) -> None:
    """Remove the folder top/relative if it is empty; quiet otherwise (not empty, gone, a link)."""
    parts, parent_rel = _file_parent(relative)
    with contextlib.suppress(OSError, UnsafePathError), open_dir(top, parent_rel) as parent:
        os.rmdir(parts[-1], dir_fd=parent)


def walk_files(top: Path, relative: PurePosixPath | str = "") -> Iterator[tuple[PurePosixPath, os.stat_result]]:
    """Every name below the folder top/relative (relative to top, with its lstat), depth first; folders
    are entered only when they are real folders, never through a link."""
    for name, info in list_dir(top, relative):
        below = PurePosixPath(relative) / name if str(relative) not in ("", ".") else PurePosixPath(name)
        yield below, info
        if stat.S_ISDIR(info.st_mode):
            yield from walk_files(top, below)


def make_dir(top: Path, relative: PurePosixPath | str, *, mode: int | None, uid: int = -1, gid: int = -1) -> None:
    """Make sure top/relative is a real folder (not a link) with this mode and owner; parents must exist.
    A link or a file in its place is refused. mode None: an existing folder keeps its mode, a new one
    is 0700."""
    parts = _parts(relative)
    with open_dir(top, PurePosixPath(*parts[:-1]) if len(parts) > 1 else "") as parent:
        with contextlib.suppress(FileExistsError):
            os.mkdir(parts[-1], 0o700, dir_fd=parent)
        fd = _open_dir_at(parent, parts[-1], top.joinpath(*parts))
        try:
            if uid != -1 or gid != -1:
                os.fchown(fd, uid, gid)
            if mode is not None:
                os.fchmod(fd, mode)
        finally:
            os.close(fd)
