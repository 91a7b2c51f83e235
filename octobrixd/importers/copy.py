"""Copying an old basedir into an octobrix instance: what OctoPrint's own backup takes (settings,
users, uploads, timelapses, plugin data), not its logs or generated caches, nor old backups.

Read as root from a folder another user owns, so any name in it may be a trap, and nothing is
followed. Every folder is opened by descriptor, one name at a time, without following a link. A
file is read only when it is a regular file its old user could read (theirs, or readable by all): a
FIFO, a device or a socket is never opened, and a root-only file (left by a `sudo octoprint` once)
is not handed to the new user; both are left out and named.

A symbolic link is copied as a link (the same target), never followed. That keeps what the user
had: the file it points to stays where it is (an import never changes the old files), and the new
OctoPrint reaches it with its own user's rights only. A link to uploads on a disk everyone may read
keeps working; a link to /etc/shadow or to another printer's folder stays a dead end. Leaving links
out instead would lose, without a trace in the new basedir, that the upload was there at all.

The copy is built inside a folder of root's (0700) and each entry is handed to the new user as it is
made, so neither user can swap a name under root's feet; the folder itself is handed over last.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from octobrixd.errors import OctobrixError
from octobrixd.system import nofollow

# What OctoPrint's backup leaves out too: regenerated at start, or the old instance's own backups.
LEFT_OUT = frozenset({PurePosixPath("logs"), PurePosixPath("generated"), PurePosixPath("data/backup")})

_DIR = nofollow.DIR_FLAGS
_READ = nofollow.READ_FLAGS
_NEW = nofollow.NEW_FILE_FLAGS


@dataclass(frozen=True)
class Survey:
    files: int = 0
    size: int = 0
    skipped: tuple[str, ...] = field(default=())
    links: tuple[str, ...] = field(default=())  # "PATH -> TARGET", copied as links

    def text(self) -> str:
        links = f", {len(self.links)} links kept as links" if self.links else ""
        return f"{self.files} files, {self.size / 1e6:.1f} MB{links}"


@dataclass
class _Tally:
    owner: int
    files: int = 0
    size: int = 0
    skipped: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    def survey(self) -> Survey:
        return Survey(self.files, self.size, tuple(self.skipped), tuple(self.links))

    def readable(self, info: os.stat_result) -> bool:
        return info.st_uid == self.owner or bool(info.st_mode & stat.S_IROTH)


@dataclass(frozen=True)
class _Target:
    fd: int
    uid: int
    gid: int


@contextlib.contextmanager
def _source_top(source: Path) -> Iterator[int]:
    """The old basedir by descriptor; a link in its place is refused (its parent is where the old tool put it)."""
    try:
        fd = os.open(source, _DIR)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise OctobrixError(
                f"{source} is a link or not a folder: octobrix never follows a link in another user's folders",
                hint=f"copy the folder it points to into {source} by hand (as its user), then import again",
            ) from None
        raise
    try:
        yield fd
    finally:
        os.close(fd)


def _walk(src: int, shown: Path, relative: PurePosixPath, tally: _Tally, target: _Target | None) -> None:
    """Everything in the folder src (shown as shown/relative) into target's folder, if any; tallied."""
    try:
        names = sorted(os.listdir(src))
    except OSError as error:
        tally.skipped.append(f"{shown / relative} cannot be read ({error.strerror})")
        return
    for name in names:
        rel = relative / name
        if rel in LEFT_OUT:
            continue
        path = shown / rel
        try:
            info = os.stat(name, dir_fd=src, follow_symlinks=False)
        except OSError as error:
            tally.skipped.append(f"{path} cannot be read ({error.strerror})")
            continue
        if stat.S_ISLNK(info.st_mode):
            _link(src, name, path, tally, target)
        elif stat.S_ISDIR(info.st_mode):
            _folder(src, name, path=path, rel=rel, shown=shown, tally=tally, target=target)
        elif not stat.S_ISREG(info.st_mode):
            tally.skipped.append(f"{path} is not a file or folder (a FIFO, device or socket): not read")
        elif not tally.readable(info):
            tally.skipped.append(f"{path} is readable by its owner (uid {info.st_uid}) only, not by the old user")
        else:
            _file(src, name, path=path, info=info, tally=tally, target=target)


def _link(src: int, name: str, path: Path, tally: _Tally, target: _Target | None) -> None:
    where = os.readlink(name, dir_fd=src)
    tally.links.append(f"{path} -> {where}")
    if target is not None:
        os.symlink(where, name, dir_fd=target.fd)
        os.chown(name, target.uid, target.gid, dir_fd=target.fd, follow_symlinks=False)


def _folder(
    src: int,
    name: str,
    *,
    path: Path,
    rel: PurePosixPath,
    shown: Path,
    tally: _Tally,
    target: _Target | None,
) -> None:
    try:
        inner = os.open(name, _DIR, dir_fd=src)
    except OSError as error:
        tally.skipped.append(f"{path} changed while it was read or cannot be opened ({error.strerror})")
        return
    try:
        if target is None:
            _walk(inner, shown, rel, tally, None)
            return
        os.mkdir(name, 0o700, dir_fd=target.fd)
        made = os.open(name, _DIR, dir_fd=target.fd)
        try:
            _walk(inner, shown, rel, tally, _Target(made, target.uid, target.gid))
            os.fchmod(made, 0o700)
            if target.uid != -1:
                os.fchown(made, target.uid, target.gid)
        finally:
            os.close(made)
    finally:
        os.close(inner)


def _file(src: int, name: str, *, path: Path, info: os.stat_result, tally: _Tally, target: _Target | None) -> None:
    if target is None:
        tally.files += 1
        tally.size += info.st_size
        return
    try:
        fd = os.open(name, _READ, dir_fd=src)
    except OSError as error:
        tally.skipped.append(f"{path} changed while it was read or cannot be opened ({error.strerror})")
        return
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino) or not stat.S_ISREG(opened.st_mode):
            tally.skipped.append(f"{path} changed while it was read: not read")
            return
        os.set_blocking(fd, True)
        out = os.open(name, _NEW, 0o600, dir_fd=target.fd)
        try:
            copied = _copy(fd, out, opened.st_size)
            os.fchmod(out, (stat.S_IMODE(opened.st_mode) & 0o700) | 0o600)
            os.utime(out, ns=(opened.st_atime_ns, opened.st_mtime_ns))
            if target.uid != -1:
                os.fchown(out, target.uid, target.gid)
        finally:
            os.close(out)
    finally:
        os.close(fd)
    tally.files += 1
    tally.size += copied


def _copy(source: int, target: int, size: int) -> int:
    """In the kernel, as cp does (copy_file_range, a server-side copy where the filesystem has one);
    read and write where the kernel refuses. The bytes copied."""
    done = 0
    try:
        while done < size:
            step = os.copy_file_range(source, target, size - done)
            if step == 0:
                break
            done += step
    except OSError:
        os.lseek(source, 0, os.SEEK_SET)
        os.lseek(target, 0, os.SEEK_SET)
        os.ftruncate(target, 0)
        done = 0
    while chunk := os.read(source, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(target, view) :]
        done += len(chunk)
    return done


def survey(source: Path) -> Survey:
    try:
        with _source_top(source) as top:
            tally = _Tally(os.fstat(top).st_uid)
            _walk(top, source, PurePosixPath(), tally, None)
    except OctobrixError as error:
        return Survey(skipped=(error.message,))
    except OSError:
        return Survey()
    return tally.survey()


def copy_basedir(source: Path, target: Path, uid: int = -1, gid: int = -1, *, owner: int | None = None) -> Survey:
    """Copy source into target (made new, 0700, in a folder of root's), every entry handed to uid:gid.
    owner: the old OctoPrint's user, when known; its basedir must be theirs."""
    with _source_top(source) as top:
        found = os.fstat(top).st_uid
        if owner is not None and found != owner:
            raise OctobrixError(
                f"{source} belongs to uid {found}, not to the user its old OctoPrint ran as (uid {owner}): not copied",
                hint=f"`ls -ld {source}`: give it back to that user, or copy what it holds by hand",
            )
        tally = _Tally(found)
        parent = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.mkdir(target.name, 0o700, dir_fd=parent)
            made = os.open(target.name, _DIR, dir_fd=parent)
        finally:
            os.close(parent)
        try:
            _walk(top, source, PurePosixPath(), tally, _Target(made, uid, gid))
            if uid != -1:
                os.fchown(made, uid, gid)
            os.fchmod(made, 0o700)
        finally:
            os.close(made)
    return tally.survey()
