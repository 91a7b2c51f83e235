"""Pack an installed distribution back into a wheel, from the files its RECORD lists.

This runs as the printer's user (`python -I -m octobrixd.instances.wheel_pack DIST_INFO NAME VERSION
DEST` prints the wheel's path): the installed copy and its RECORD are that user's to write, so what
the packing can read is bounded by what the printer could read anyway. On top of that it takes only
regular files inside the distribution's own site-packages, opened without following a link at any
step: a RECORD line naming `../../etc/shadow`, an absolute path, a symlink, a FIFO or a device is
left out of the wheel. Scripts and data outside site-packages are left out too: an installer makes
the scripts again from the entry points.
"""

from __future__ import annotations

import base64
import csv
import errno
import hashlib
import io
import os
import re
import stat
import sys
import zipfile
from pathlib import Path, PurePosixPath

from octobrixd.system import nofollow

# pip's and uv's own bookkeeping: an installer writes its own, and a stale direct_url would lie.
_INSTALLER_FILES = frozenset({"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"})
_DIRECTORY = nofollow.DIR_FLAGS
_FILE = nofollow.READ_FLAGS  # a FIFO planted under a listed name opens at once, then is refused
# Whatever the RECORD says: a file this big is not a plugin's.
MAX_FILE = 256 * 1024 * 1024


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def _wheel_tag(wheel_text: str | None) -> str:
    for line in (wheel_text or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Tag" and value.strip():
            return value.strip()
    return "py3-none-any"


def _inside(entry: str) -> tuple[str, ...] | None:
    """entry's parts when it names something below site-packages; None for anything else."""
    if not entry or entry.startswith("/") or "\\" in entry or "\0" in entry:
        return None
    parts = PurePosixPath(entry).parts
    if not parts or any(part in ("", ".", "..") for part in parts):
        return None
    return parts


def read_inside(site_fd: int, entry: str) -> bytes | None:
    """The bytes of the regular file entry names below the directory site_fd, or None when entry
    leaves it, passes a link, or is not a regular file."""
    parts = _inside(entry)
    if parts is None:
        return None
    opened: list[int] = []
    try:
        folder = site_fd
        for part in parts[:-1]:
            folder = os.open(part, _DIRECTORY, dir_fd=folder)
            opened.append(folder)
        before = os.stat(parts[-1], dir_fd=folder, follow_symlinks=False)
        if not stat.S_ISREG(before.st_mode):
            return None
        fd = os.open(parts[-1], _FILE, dir_fd=folder)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.ENXIO, errno.EACCES, errno.EPERM):
            return None
        raise
    finally:
        for descriptor in opened:
            os.close(descriptor)
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
            return None
        if now.st_size > MAX_FILE:
            raise ValueError(f"{entry} is larger than {MAX_FILE} bytes")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def repack(dist_info: Path, name: str, version: str, dest: Path) -> Path:
    """A wheel of the distribution whose .dist-info folder is dist_info, made in dest.

    Raises OSError or ValueError when it cannot be packed (no RECORD, no METADATA)."""
    site_fd = os.open(dist_info.parent, _DIRECTORY)
    try:
        return _pack(site_fd, dist_info.name, name, version, dest)
    finally:
        os.close(site_fd)


def _pack(site_fd: int, info_name: str, name: str, version: str, dest: Path) -> Path:
    record = read_inside(site_fd, f"{info_name}/RECORD")
    if record is None:
        raise ValueError(f"{info_name} has no RECORD")
    wheel_bytes = read_inside(site_fd, f"{info_name}/WHEEL")
    wheel_text = wheel_bytes.decode("utf-8") if wheel_bytes is not None else None
    tag = _wheel_tag(wheel_text)
    if not re.fullmatch(r"[A-Za-z0-9_.]+-[A-Za-z0-9_.]+-[A-Za-z0-9_.]+", tag):
        tag = "py3-none-any"
    stem = _canonical(name).replace("-", "_")
    dist_info = f"{stem}-{version}.dist-info"
    target = dest / f"{stem}-{version.replace('-', '_')}-{tag}.whl"
    if target.parent != dest or "/" in target.name:
        raise ValueError(f"{name} {version} does not make a wheel file name")
    dest.mkdir(parents=True, exist_ok=True)
    rows: list[list[str]] = []
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for row in csv.reader(io.StringIO(record.decode("utf-8"))):
            if not row or "__pycache__" in row[0]:
                continue
            parts = _inside(row[0])
            if parts is None:
                continue  # scripts and data outside site-packages, or a path that leaves it
            if len(parts) == 2 and parts[0] == info_name:
                if parts[1] in _INSTALLER_FILES:
                    continue
                member = f"{dist_info}/{parts[1]}"
            else:
                member = "/".join(parts)
            data = read_inside(site_fd, row[0])
            if data is None:
                continue  # a link, a FIFO, a device or gone: never packed
            archive.writestr(member, data)
            rows.append([member, _record_hash(data), str(len(data))])
        if wheel_text is None:
            wheel_text = f"Wheel-Version: 1.0\nGenerator: octobrix\nRoot-Is-Purelib: true\nTag: {tag}\n"
            archive.writestr(f"{dist_info}/WHEEL", wheel_text)
            rows.append([f"{dist_info}/WHEEL", _record_hash(wheel_text.encode()), str(len(wheel_text))])
        rows.append([f"{dist_info}/RECORD", "", ""])
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(rows)
        archive.writestr(f"{dist_info}/RECORD", out.getvalue())
    if not any(r[0] == f"{dist_info}/METADATA" for r in rows):
        target.unlink()
        raise ValueError(f"{info_name} has no METADATA in its RECORD")
    return target


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print("usage: python -m octobrixd.instances.wheel_pack DIST_INFO NAME VERSION DEST", file=sys.stderr)
        return 2
    dist_info, name, version, dest = argv
    try:
        print(repack(Path(dist_info), name, version, Path(dest)))
    except (OSError, ValueError, UnicodeDecodeError, csv.Error) as error:
        print(f"cannot pack the installed {name} {version}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
