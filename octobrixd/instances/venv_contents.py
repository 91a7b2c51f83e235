"""What is really installed in a printer's venv, read from its dist-info metadata (OctoPrint is never
started for it): the OctoPrint version, the config's plugins, and what the user added through
OctoPrint's Plugin Manager.

A distribution is the user's when the config did not ask for it, OctoPrint (or a config plugin) does
not depend on it, it is an OctoPrint plugin (an `octoprint.plugin` entry point) or was asked for by
name (pip's REQUESTED marker), and something other than octobrix installed it (octobrix uses uv,
the Plugin Manager pip) or octobrix carried it before (the instance's carried-plugins list).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from octobrixd.config.requirements import PLUGIN_URL_RE, REQUIREMENT_RE
from octobrixd.instances.instance import Instance
from octobrixd.system import nofollow
from octobrixd.system.nofollow import UnsafePathError
from octobrixd.system.paths import Layout

if TYPE_CHECKING:
    from octobrixd.config.model import Config
    from octobrixd.config.view import FarmView

# What `uv venv --seed` puts in every venv; never the user's plugins.
SEED = frozenset({"pip", "setuptools", "wheel"})
PLUGIN_ENTRY_POINT = "octoprint.plugin"
CARRIED_FILE = "carried-plugins.json"
OCTOBRIX_INSTALLER = "uv"
# A dist-info file is a few kB (RECORD of a big project a few hundred): more is not metadata.
METADATA_LIMIT = 4 * 1024 * 1024
_NAME_RE = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")
_HEADER_RE = re.compile(r"^(Name|Version|Requires-Dist):[ \t]*(.*?)\r?$", re.MULTILINE | re.IGNORECASE)
_CLAUSE_RE = re.compile(r"(===|==|~=|!=|<=|>=|<|>)\s*([A-Za-z0-9.*+!_-]+)")
_VERSION_RE = re.compile(
    r"^v?(\d+(?:\.\d+)*)(?:[-_.]?(a|b|c|rc|alpha|beta)[-_.]?(\d*))?(?:[-_.]?post(\d+))?(?:[-_.]?dev(\d+))?$"
)


class PluginSource(StrEnum):
    CONFIG = "config"
    PLUGIN_MANAGER = "plugin-manager"


def canonical(name: str) -> str:
    """PEP 503 normalised project name: `OctoPrint_MFATOTP` and `octoprint-mfatotp` are one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Dist:
    name: str
    version: str
    path: Path  # its .dist-info folder
    requires: tuple[str, ...]  # canonical names it depends on (extras left out)
    is_plugin: bool
    requested: bool
    url: str | None  # PEP 610 direct_url.json: where it was installed from, when not an index
    installer: str = ""  # "uv" when octobrix put it there, "pip" for OctoPrint's Plugin Manager

    @property
    def key(self) -> str:
        return canonical(self.name)


def _below(base: PurePosixPath, name: str) -> PurePosixPath:
    return base / name if base.parts else PurePosixPath(name)


def _folders(top: Path, base: PurePosixPath) -> list[tuple[str, os.stat_result]]:
    """The names in top/base with their lstat, nothing followed; [] where it cannot be read: a link or
    a file where a folder should be, missing, or not ours to read (status and the overview without
    root)."""
    try:
        return nofollow.list_dir(top, base if base.parts else "")
    except (OSError, UnsafePathError):
        return []


def _site_packages_at(top: Path, venv: PurePosixPath) -> PurePosixPath | None:
    """venv/lib/python3*/site-packages below top, each a real folder (a link there is no site-packages)."""
    lib = _below(venv, "lib")
    found = sorted(n for n, info in _folders(top, lib) if n.startswith("python3") and stat.S_ISDIR(info.st_mode))
    for name in reversed(found):
        if any(n == "site-packages" and stat.S_ISDIR(i.st_mode) for n, i in _folders(top, lib / name)):
            return lib / name / "site-packages"
    return None


def site_packages(venv: Path) -> Path | None:
    """None also where the state dir is not ours to read (status and the overview without root). venv
    itself is trusted (root's name for it); nothing below it is followed."""
    found = _site_packages_at(venv, PurePosixPath())
    return venv / found if found is not None else None


def _requires(lines: Iterable[str]) -> tuple[str, ...]:
    out = []
    for line in lines:
        requirement, _, marker = line.partition(";")
        if "extra" in marker:
            continue  # only wanted with an extra nobody asked for
        found = _NAME_RE.match(requirement)
        if found:
            out.append(canonical(found[1]))
    return tuple(out)


def _read(top: Path, relative: PurePosixPath) -> bytes | None:
    """A metadata file of a dist-info folder, or None: missing, unreadable, or a link or FIFO planted
    there by the printer's user (treated as absent: what it would say cannot be trusted anyway)."""
    try:
        return nofollow.read_bytes(top, relative, limit=METADATA_LIMIT)
    except (OSError, UnsafePathError):
        return None


def _direct_url(top: Path, folder: PurePosixPath) -> str | None:
    data = _read(top, folder / "direct_url.json")
    try:
        body = json.loads(data) if data is not None else None
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    url = body.get("url")
    return url if isinstance(url, str) and "archive_info" in body else None


def _headers(top: Path, folder: PurePosixPath) -> dict[str, list[str]]:
    """The METADATA fields octobrix needs, from the header part only, by one regex over it: the email
    parser importlib.metadata uses costs ~1 ms a distribution, and a venv with OctoPrint has ~75."""
    data = _read(top, folder / "METADATA") or b""
    header = data.split(b"\n\n", 1)[0].decode("utf-8", "replace")
    fields: dict[str, list[str]] = {}
    for key, value in _HEADER_RE.findall(header):
        fields.setdefault(key.lower(), []).append(value.strip())
    return fields


def _is_plugin(top: Path, folder: PurePosixPath) -> bool:
    data = _read(top, folder / "entry_points.txt")
    return data is not None and f"[{PLUGIN_ENTRY_POINT}]" in data.decode("utf-8", "replace").replace(" ", "")


def _installer(top: Path, folder: PurePosixPath) -> str:
    data = _read(top, folder / "INSTALLER")
    return data.decode("utf-8", "replace").strip() if data is not None else ""


def read_venv_at(top: Path, venv: PurePosixPath) -> dict[str, Dist]:
    """Every distribution installed in the venv top/venv, by canonical name; {} when it has no
    site-packages. top is root's folder (a printer's state_dir); every name below it is opened without
    following links, and only regular files are read: a dist-info folder that is a link is skipped, a
    metadata file that is a link or FIFO counts as absent."""
    packages = _site_packages_at(top, venv)
    if packages is None:
        return {}
    folders = [n for n, info in _folders(top, packages) if n.endswith(".dist-info") and stat.S_ISDIR(info.st_mode)]
    found: dict[str, Dist] = {}
    for entry in folders:
        folder = packages / entry
        # One listing, not an open that fails per missing file; only regular files count.
        present = {n for n, info in _folders(top, folder) if stat.S_ISREG(info.st_mode)}
        fields = _headers(top, folder) if "METADATA" in present else {}
        name, version = (fields.get("name") or [""])[0], (fields.get("version") or [""])[0]
        if not name or not version:
            continue
        found[canonical(name)] = Dist(
            name=name,
            version=version,
            path=top / folder,
            requires=_requires(fields.get("requires-dist", ())),
            is_plugin="entry_points.txt" in present and _is_plugin(top, folder),
            requested="REQUESTED" in present,
            url=_direct_url(top, folder) if "direct_url.json" in present else None,
            installer=_installer(top, folder) if "INSTALLER" in present else "",
        )
    return found


def read_venv(venv: Path) -> dict[str, Dist]:
    """read_venv_at for a venv folder root names itself (a build's target, an imported OctoPrint's):
    venv is trusted, nothing below it is followed."""
    return read_venv_at(venv, PurePosixPath())


def requirement_name(requirement: str) -> str | None:
    """The project a config requirement names: "OctoPrint-X==1", "OctoPrint-X @ https://..."; None for
    a bare archive URL (its project is known only once installed)."""
    if PLUGIN_URL_RE.match(requirement):
        name, at, _url = requirement.partition("@")
        return canonical(name.strip()) if at else None
    found = REQUIREMENT_RE.match(requirement)
    return canonical(found["name"]) if found else None


def _url_of(requirement: str) -> str | None:
    if not PLUGIN_URL_RE.match(requirement):
        return None
    return requirement.partition("@")[2].strip() if "@" in requirement else requirement.strip()


def config_names(requirements: Sequence[str], dists: Mapping[str, Dist]) -> set[str]:
    """Canonical names of what the config's requirements installed (bare URLs matched by their URL)."""
    names = {n for r in requirements if (n := requirement_name(r)) is not None}
    urls = {u for r in requirements if (u := _url_of(r)) is not None and requirement_name(r) is None}
    names |= {key for key, dist in dists.items() if dist.url in urls}
    return names


def dependency_closure(roots: Iterable[str], dists: Mapping[str, Dist]) -> set[str]:
    seen: set[str] = set()
    todo = [r for r in roots if r in dists]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [r for r in dists[name].requires if r in dists and r not in seen]
    return seen


def user_plugins(
    dists: Mapping[str, Dist], requirements: Sequence[str], carried_before: Iterable[str] = ()
) -> list[Dist]:
    """What the user installed besides the config (through OctoPrint's Plugin Manager, typically)."""
    ours = dependency_closure(config_names(requirements, dists), dists) | SEED
    remembered = {canonical(n) for n in carried_before}
    candidates = [
        d
        for key, d in dists.items()
        if key not in ours
        and (d.is_plugin or d.requested or key in remembered)
        # octobrix installs with uv: what uv installed and octobrix did not carry came from the config
        # (a plugin since taken out of it, which must go).
        and (d.installer != OCTOBRIX_INSTALLER or key in remembered)
    ]
    # A plugin another one of them depends on comes back with it: carry the top ones only.
    needed_by_others = {r for d in candidates for r in d.requires}
    return sorted((d for d in candidates if d.key not in needed_by_others or d.is_plugin), key=lambda d: d.key)


# --- versions (PEP 440, the subset pinned requirements use) ---


def version_key(version: str) -> tuple[tuple[int, ...], tuple[int, int], int, tuple[int, int]] | None:
    found = _VERSION_RE.match(version.strip().lower())
    if not found:
        return None
    release = tuple(int(p) for p in found[1].split("."))
    while len(release) > 1 and release[-1] == 0:
        release = release[:-1]
    pre_rank = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2}
    dev = (0, int(found[5])) if found[5] is not None else (1, 0)
    if found[2]:
        pre = (pre_rank[found[2]], int(found[3] or 0))
    else:
        pre = (3, 0) if found[5] is None or found[4] is not None else (-1, 0)  # 1.0.dev1 < 1.0a1
    post = int(found[4]) if found[4] is not None else -1
    return release, pre, post, dev


def satisfies(version: str, requirement: str) -> bool | None:
    """Whether version meets requirement's specifiers; None when either cannot be read."""
    have = version_key(version)
    if have is None:
        return None
    for operator, wanted in _CLAUSE_RE.findall(requirement):
        if operator in ("==", "!=") and wanted.endswith(".*"):
            prefix = tuple(int(p) for p in wanted[:-2].split(".") if p.isdigit())
            release = have[0] + (0,) * len(prefix)
            match = release[: len(prefix)] == prefix
            if match != (operator == "=="):
                return False
            continue
        if operator == "===":
            if version.strip() != wanted:
                return False
            continue
        want = version_key(wanted)
        if want is None:
            return None
        if operator == "~=":
            parts = tuple(int(p) for p in _VERSION_RE.match(wanted.lower())[1].split("."))  # type: ignore[index]
            if have < want or have[0][: len(parts) - 1] != parts[: len(parts) - 1]:
                return False
            continue
        ok = {
            "==": have == want,
            "!=": have != want,
            "<=": have <= want,
            ">=": have >= want,
            "<": have < want,
            ">": have > want,
        }[operator]
        if not ok:
            return False
    return True


# --- what status, doctor and the plan read ---


@dataclass(frozen=True)
class InstalledPlugin:
    name: str
    version: str
    source: PluginSource


@dataclass(frozen=True)
class VenvReport:
    octoprint_version: str | None
    plugins: tuple[InstalledPlugin, ...]
    drift: str | None  # what differs from the config, in words; None when it matches


def current_venv(layout: Layout, name: str) -> Path | None:
    """The venv printer NAME runs (state_dir/venvs/DIR, from the text of its venv link); None when it has
    none or this process may not look (not root). Its folder's name is root's: a trusted top for
    read_venv and installed_versions."""
    instance = Instance(name, layout)
    try:
        active = instance.active_venv_dir()
    except OSError:
        return None
    return instance.state_dir / active if active is not None else None


def carried_path(layout: Layout, name: str) -> Path:
    return Instance(name, layout).state_dir / CARRIED_FILE


def _carried_entries(layout: Layout, name: str, key: str) -> list[dict[str, str]]:
    try:
        # Root's file in root's state_dir; still never followed if something else stands there.
        body = json.loads(nofollow.read_text(Instance(name, layout).state_dir, CARRIED_FILE, limit=METADATA_LIMIT))
    except (OSError, ValueError, UnsafePathError):
        return []
    entries = body.get(key) if isinstance(body, dict) else None
    return [e for e in entries or [] if isinstance(e, dict) and isinstance(e.get("name"), str)]


def read_carried(layout: Layout, name: str) -> list[dict[str, str]]:
    """The plugins octobrix carried into this instance's venv the last time it built one."""
    return _carried_entries(layout, name, "carried")


def read_not_carried(layout: Layout, name: str) -> list[dict[str, str]]:
    """The plugins the last build could not carry (each with its reason)."""
    return _carried_entries(layout, name, "not_carried")


def installed_versions(venv: Path | None) -> dict[str, str]:
    """canonical name -> version of every distribution in venv, from the dist-info folders' names alone
    (`OctoPrint-1.11.8.dist-info`): one directory listing, for status and the plan. venv is trusted (root
    names it), nothing below it is followed; {} for None."""
    if venv is None:
        return {}
    packages = _site_packages_at(venv, PurePosixPath())
    if packages is None:
        return {}
    folders = _folders(venv, packages)
    names = [n[: -len(".dist-info")] for n, info in folders if n.endswith(".dist-info") and stat.S_ISDIR(info.st_mode)]
    return {canonical(n): v for n, _, v in (entry.rpartition("-") for entry in names) if n and v}


def _written_name(requirement: str) -> str:
    return re.split(r"[\s=<>!~\[@;]", requirement.strip(), maxsplit=1)[0]


def drift_of(versions: Mapping[str, str], requirements: Sequence[str]) -> str | None:
    """How the venv's contents (canonical name -> version) differ from requirements (OctoPrint first)."""
    if not versions:
        return None  # not readable (no root) or not built: nothing to judge
    problems = []
    octoprint, *plugins = requirements
    installed = versions.get("octoprint")
    if installed is None:
        problems.append(f"OctoPrint is missing from its venv (the config asks for {octoprint})")
    elif satisfies(installed, octoprint) is False:
        problems.append(
            f"OctoPrint {installed} is installed, the config asks for {octoprint} "
            "(changed outside octobrix: OctoPrint's updater or pip)"
        )
    for requirement in plugins:
        key = requirement_name(requirement)
        if key is None:
            continue
        version = versions.get(key)
        if version is None:
            problems.append(f"plugin {requirement} from the config is not installed")
        elif not PLUGIN_URL_RE.match(requirement) and satisfies(version, requirement) is False:
            problems.append(f"{_written_name(requirement)} {version} is installed, the config asks for {requirement}")
    return "; ".join(problems) or None


def report(layout: Layout, config: Config | FarmView, name: str, *, plugins: bool = True) -> VenvReport:
    """What printer NAME's venv holds against the config; plugins=False skips listing its plugins (which
    reads every distribution's metadata, ~8 ms for OctoPrint's ~75) when only the version matters."""
    requirements = (config.octoprint_requirement(name), *config.printers[name].plugins)
    venv = current_venv(layout, name)
    versions = installed_versions(venv)
    listed: list[InstalledPlugin] = []
    if plugins and versions and venv is not None:
        dists = read_venv(venv)
        mine = config_names(requirements, dists)
        carried = [e["name"] for e in read_carried(layout, name)]
        listed = [
            InstalledPlugin(dists[k].name, dists[k].version, PluginSource.CONFIG)
            for k in sorted((mine & set(dists)) - {"octoprint"})
        ]
        listed += [
            InstalledPlugin(d.name, d.version, PluginSource.PLUGIN_MANAGER)
            for d in user_plugins(dists, requirements, carried)
        ]
    return VenvReport(versions.get("octoprint"), tuple(listed), drift_of(versions, requirements))
