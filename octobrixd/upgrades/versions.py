"""Which OctoPrint release a printer can move to: read from the package index (pip's own listing)
or, on a farm without internet, from the names of the files in the `wheels` folder. Pure apart from
the two readers at the end."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from octobrixd.config.requirements import REQUIREMENT_RE
from octobrixd.errors import CommandError, OctobrixError
from octobrixd.instances.venv_contents import canonical, satisfies, version_key
from octobrixd.system.command import run

log = logging.getLogger(__name__)

PROJECT = "octoprint"
# OctoPrint-1.11.8-py3-none-any.whl, octoprint-1.11.7.tar.gz, OctoPrint-1.11.7.zip
_DIST_FILE_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9_.-]+?)-(?P<version>\d[A-Za-z0-9_.!+]*?)(?:-[^-]+-[^-]+-[^-]+\.whl|\.tar\.gz|\.zip)$"
)
_AVAILABLE_RE = re.compile(r"^Available versions:\s*(.*)$", re.MULTILINE)
SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def is_final(version: str) -> bool:
    """A release, not a pre-release (2.0.0rc3) or a development build."""
    key = version_key(version)
    return key is not None and key[1] == (3, 0) and key[3] == (1, 0)


def major(version: str) -> int | None:
    key = version_key(version)
    return key[0][0] if key is not None else None


def newest(versions: Iterable[str], *, same_major_as: str | None = None) -> str | None:
    """The newest final release among versions (of the major version of same_major_as, if given)."""
    wanted = major(same_major_as) if same_major_as is not None else None
    candidates = [v for v in set(versions) if is_final(v) and (wanted is None or major(v) == wanted)]
    return max(candidates, key=lambda v: version_key(v) or ((), (0, 0), 0, (0, 0)), default=None)


def files_in_folder(filenames: Iterable[str]) -> dict[str, dict[str, str]]:
    """What a wheels folder holds, from its file names: canonical project -> {version: file name}."""
    out: dict[str, dict[str, str]] = {}
    for filename in sorted(filenames):
        found = _DIST_FILE_RE.match(filename)
        if found:
            out.setdefault(canonical(found["name"]), {}).setdefault(found["version"], filename)
    return out


def versions_in_folder(filenames: Iterable[str], project: str = PROJECT) -> list[str]:
    """The versions of project (OctoPrint unless told) a wheels folder holds, from its file names."""
    found = files_in_folder(filenames).get(canonical(project), {})
    return sorted(found, key=lambda v: version_key(v) or ((), (0, 0), 0, (0, 0)))


def versions_in_pip_listing(text: str) -> list[str]:
    """`pip index versions octoprint` says `Available versions: 1.11.8, 1.11.7, ...`."""
    found = _AVAILABLE_RE.search(text)
    if not found:
        return []
    return [v.strip() for v in found[1].split(",") if v.strip()]


def pinned_version(requirement: str) -> str | None:
    """The version an exact pin names: "octoprint==1.11.7" -> "1.11.7"; None for a range."""
    found = re.fullmatch(r"\s*[A-Za-z0-9._-]+\s*===?\s*([A-Za-z0-9.+!_-]+)\s*", requirement)
    return found[1] if found else None


def target_for(to: str | None, running: str | None, available: Iterable[str]) -> str | None:
    """The requirement to pin: --to as given, or the newest release of the running major version;
    None when there is nothing newer to move to."""
    if to is not None:
        return to
    if running is None:
        return None
    best = newest(available, same_major_as=running)
    if best is None or (version_key(best) or ()) <= (version_key(running) or ()):
        return None
    return f"{PROJECT}=={best}"


def check_to(value: str, name: str) -> str:
    """--to checked like the config key it becomes (printers.NAME.octoprint)."""
    match = REQUIREMENT_RE.match(value.strip())
    if not match or canonical(match["name"]) != PROJECT:
        raise OctobrixError(
            f"--to {value!r}: printers.{name}.octoprint must be a pip requirement of OctoPrint, "
            "like octoprint==1.11.8 (no URLs, paths or pip options)",
            hint="`octobrixctl upgrade --check` lists the releases each printer can move to",
        )
    return value.strip()


def expected_version(requirement: str, available: Iterable[str]) -> str | None:
    """The version a requirement will install: its exact pin, else the newest available that fits."""
    pinned = pinned_version(requirement)
    if pinned is not None:
        return pinned
    fitting = [v for v in available if satisfies(v, requirement) and is_final(v)]
    return newest(fitting)


# --- the readers ---


def wheels_listing(folder: Path) -> list[str]:
    try:
        return [p.name for p in folder.iterdir()]
    except OSError as error:
        raise OctobrixError(
            f"cannot read the wheels folder {folder}: {error.strerror}",
            hint="check [octobrix] wheels in /etc/octobrix.toml",
        ) from None


def pip_options() -> list[str]:
    """pip's general options, wherever it runs: no questions, no nagging about its own version, the
    system's CAs (a proxy's too)."""
    cert = ["--cert", str(SYSTEM_CA)] if SYSTEM_CA.exists() else []
    return ["--disable-pip-version-check", "--no-input", *cert]


def own_pip() -> list[str]:
    """octobrix's own pip, in its own venv (root's): asking the index needs no printer's venv, and root
    never runs a printer's Python."""
    return [sys.executable, "-I", "-m", "pip", *pip_options()]


def last_line(error: CommandError) -> str:
    lines = [line.strip() for line in error.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else str(error)


class NotOnIndex(OctobrixError):
    """The index answered, and has no such project (a plugin published only as an archive)."""


def from_index(project: str = PROJECT, shown: str = "OctoPrint") -> list[str]:
    """What the package index offers of project (asked by octobrix's own pip)."""
    try:
        done = run([*own_pip(), "index", "versions", project], timeout=120)
    except CommandError as error:
        if "No matching distribution found" in error.stderr:
            raise NotOnIndex(f"{shown} is not on the package index") from None
        raise OctobrixError(
            f"cannot ask the package index for {shown}'s releases: {last_line(error)}",
            hint="check the network, or set [octobrix] wheels to a folder of wheels",
        ) from None
    return versions_in_pip_listing(done.stdout)
