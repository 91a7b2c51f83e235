"""Backup folders and files: names, the side file octobrix writes beside OctoPrint's zip, retention,
and the OctoPrint versions on both sides of a restore. Read-only or pure: engine does the writing."""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from octobrixd.config.model import Config
from octobrixd.errors import OctobrixError
from octobrixd.instances import versions
from octobrixd.system.paths import Layout

BACKUP_ROOT = PurePosixPath("var/backups/octobrix")
SIDE_SUFFIX = ".octobrix.json"
SIDE_VERSION = 1
# NAME-20261201-031500.zip: sorts by time within a printer's folder.
STAMP_FORMAT = "%Y%m%d-%H%M%S"
VERSION_RE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(.*)$")


def printer_folder(layout: Layout, name: str, target: Path | None = None) -> Path:
    return (target if target is not None else layout.path(BACKUP_ROOT)) / name


def zip_name(name: str, when: datetime.datetime) -> str:
    return f"{name}-{when.strftime(STAMP_FORMAT)}.zip"


def side_path(zip_path: Path) -> Path:
    return zip_path.with_name(zip_path.name.removesuffix(".zip") + SIDE_SUFFIX)


def backups_of(folder: Path, name: str) -> list[Path]:
    """The printer's backup zips in folder, oldest first."""
    pattern = re.compile(rf"^{re.escape(name)}-\d{{8}}-\d{{6}}\.zip\Z")
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if pattern.match(p.name) and p.is_file())


def to_prune(backups: list[Path], keep: int) -> list[Path]:
    """The oldest backups beyond the newest keep (backups sorted oldest first)."""
    return backups[: max(0, len(backups) - keep)]


def version_key(version: str) -> tuple[int, int, int, int]:
    """Comparable form of an OctoPrint version: 1.11.8 > 1.11.8rc1 > 1.11.7."""
    match = VERSION_RE.match(version.strip())
    if not match:
        raise OctobrixError(f"{version!r} is not an OctoPrint version", hint="is this an OctoPrint backup?")
    major, minor, patch, rest = match.groups()
    final = 0 if rest and re.match(r"^\.?(a|b|rc|dev)", rest) else 1
    return int(major), int(minor), int(patch or 0), final


def installed_octoprint(layout: Layout, name: str) -> str | None:
    """The OctoPrint version in the instance's venv, from its dist-info folder's name: nothing is run,
    nothing read (one reader of venvs for the whole of octobrix: instances/versions.py)."""
    return versions.installed_octoprint(layout, name)


def _outside(info: zipfile.ZipInfo) -> bool:
    """An entry no OctoPrint backup has: an absolute name, a `..`, a backslash, or a symbolic link."""
    name = info.filename
    parts = PurePosixPath(name).parts
    is_link = stat.S_ISLNK(info.external_attr >> 16)
    return name.startswith("/") or ".." in parts or "\\" in name or "\0" in name or is_link


@dataclass(frozen=True)
class ZipFacts:
    version: str
    excludes: tuple[str, ...]
    plugins: tuple[str, ...]
    has_users: bool


def read_zip(path: Path) -> ZipFacts:
    """What OctoPrint's own restore will look at: its metadata, config and users; else one clear error."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            odd = next((info.filename for info in archive.infolist() if _outside(info)), None)
            if odd is not None:
                raise OctobrixError(
                    f"{path} has an entry that would land outside the printer's folder or is a link ({odd!r}): "
                    "refused, nothing changed",
                    hint="OctoPrint never writes such an entry: use a backup from `octobrixctl backup` or OctoPrint",
                )
            if "metadata.json" not in names or "basedir/config.yaml" not in names:
                raise OctobrixError(
                    f"{path} is not an OctoPrint backup (no metadata.json or basedir/config.yaml in it)",
                    hint="use a zip from `octobrixctl backup` or OctoPrint's Backup & Restore page",
                )
            metadata = json.loads(archive.read("metadata.json"))
            plugin_list = json.loads(archive.read("plugin_list.json")) if "plugin_list.json" in names else []
    except FileNotFoundError:
        raise OctobrixError(
            f"{path}: no such file", hint="`ls /var/backups/octobrix/NAME/` lists the backups"
        ) from None
    except PermissionError:
        raise OctobrixError(
            f"{path}: permission denied", hint="backups hold users and keys: run it as root (sudo)"
        ) from None
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise OctobrixError(f"{path} is not a readable zip ({exc})", hint="is the file complete?") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("version"), str):
        raise OctobrixError(f"{path}: metadata.json has no OctoPrint version", hint="is this an OctoPrint backup?")
    plugins = tuple(
        sorted(str(p.get("key")) for p in plugin_list if isinstance(p, dict) and p.get("key"))
        if isinstance(plugin_list, list)
        else ()
    )
    return ZipFacts(
        version=metadata["version"],
        excludes=tuple(str(x) for x in metadata.get("excludes") or ()),
        plugins=plugins,
        has_users="basedir/users.yaml" in names,
    )


def key_fingerprint(api_key: str) -> str:
    # Tells "this farm's instance" from "another farm's" at restore, without keeping the key itself.
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def side_file(config: Config, name: str, facts: ZipFacts, when: datetime.datetime, fingerprint: str | None) -> str:
    entry = config.printers[name].model_dump(mode="json", exclude_defaults=True)
    body: dict[str, Any] = {
        "version": SIDE_VERSION,
        "printer": name,
        "created": when.isoformat(timespec="seconds"),
        "octoprint": facts.version,
        "excludes": list(facts.excludes),
        # The config entry as it was: `octobrixctl restore` on a computer without it says what to add.
        "config": {f"printers.{name}": entry},
        "plugins": {"config": list(config.printers[name].plugins), "installed": list(facts.plugins)},
        "api_key_fingerprint": fingerprint,
    }
    return json.dumps(body, indent=2, sort_keys=True) + "\n"


def read_side_file(zip_path: Path) -> dict[str, Any] | None:
    try:
        body = json.loads(side_path(zip_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None
