"""Copying an old basedir into an octobrix instance: what OctoPrint's own backup takes (settings,
users, uploads, timelapses, plugin data), not its logs or generated caches, nor old backups.

Read as root, written as the instance's user. A symbolic link is followed only where it leads to
something the old basedir's owner owns (uploads on a USB disk of theirs); one to anything else (a
link to another user's or root's file) is left out and named, so an import never hands an instance
a file its old user could not read.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

# What OctoPrint's backup leaves out too: regenerated at start, or the old instance's own backups.
LEFT_OUT = frozenset({PurePosixPath("logs"), PurePosixPath("generated"), PurePosixPath("data/backup")})


@dataclass(frozen=True)
class Survey:
    files: int = 0
    size: int = 0
    skipped: tuple[str, ...] = field(default=())

    def text(self) -> str:
        return f"{self.files} files, {self.size / 1e6:.1f} MB"


def _walk(source: Path, owner: int) -> Iterator[tuple[PurePosixPath, os.stat_result | None, str | None]]:
    """(relative path, its stat (links followed), why it is left out) for everything under source, parents first."""
    todo = [PurePosixPath(".")]
    while todo:
        relative = todo.pop()
        try:
            entries = sorted(os.scandir(source / relative), key=lambda e: e.name)
        except OSError as error:
            yield relative, None, f"cannot be read ({error.strerror})"
            continue
        for entry in entries:
            rel = relative / entry.name
            if rel in LEFT_OUT:
                continue
            try:
                info = Path(entry.path).stat()
            except OSError:
                yield rel, None, "is a broken link"
                continue
            if entry.is_symlink() and info.st_uid != owner:
                yield rel, None, f"is a link to {Path(entry.path).readlink()}, which its old user does not own"
                continue
            if stat.S_ISDIR(info.st_mode):
                yield rel, info, None
                todo.append(rel)
            elif stat.S_ISREG(info.st_mode):
                yield rel, info, None
            else:
                yield rel, None, "is not a file or folder"


def survey(source: Path) -> Survey:
    try:
        owner = source.stat().st_uid
    except OSError:
        return Survey()
    files = size = 0
    skipped = []
    for rel, info, why in _walk(source, owner):
        if why is not None:
            skipped.append(f"{source / rel} {why}")
        elif info is not None and stat.S_ISREG(info.st_mode):
            files += 1
            size += info.st_size
    return Survey(files, size, tuple(skipped))


def _copy_file(source: Path, destination: Path, size: int) -> None:
    """In the kernel, as cp does (copy_file_range: no round trip through this process, and a
    server-side copy on filesystems that have one); shutil's copy where the kernel refuses."""
    with source.open("rb") as reading, destination.open("wb") as writing:
        left = size
        try:
            while left > 0:
                done = os.copy_file_range(reading.fileno(), writing.fileno(), left)
                if done == 0:
                    break
                left -= done
        except OSError:
            reading.seek(0)
            writing.seek(0)
            writing.truncate()
            shutil.copyfileobj(reading, writing, 1 << 20)


def copy_basedir(source: Path, target: Path, uid: int = -1, gid: int = -1) -> Survey:
    """Copy source into target (made new, 0700), every file and folder handed to uid:gid."""
    owner = source.stat().st_uid
    target.mkdir(mode=0o700)
    if uid != -1:
        os.chown(target, uid, gid)
    files = size = 0
    skipped = []
    for rel, info, why in _walk(source, owner):
        if why is not None or info is None:
            skipped.append(f"{source / rel} {why}")
            continue
        destination = target / rel
        if stat.S_ISDIR(info.st_mode):
            destination.mkdir(mode=0o700)
        else:
            _copy_file(source / rel, destination, info.st_size)
            destination.chmod((stat.S_IMODE(info.st_mode) & 0o700) | 0o600)
            os.utime(destination, ns=(info.st_atime_ns, info.st_mtime_ns))
            files += 1
            size += info.st_size
        if uid != -1:
            os.chown(destination, uid, gid)
    return Survey(files, size, tuple(skipped))
