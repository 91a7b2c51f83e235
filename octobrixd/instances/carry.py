"""Carry the user's own plugins (installed through OctoPrint's Plugin Manager) into a new venv.

Each plugin is tried from where it came from, same version: its PyPI release, the archive URL it
was installed from (PEP 610 direct_url.json), or, on an offline farm, the wheels folder only. When
that source is gone (the Plugin Manager installs from a temporary download that it deletes), the
installed copy itself is packed into a wheel and installed from that. Plugins are added in one go
with the config's requirements; if that fails, the venv is built from the config alone and each
plugin is added on its own, never changing what the config installed, so one plugin that no longer
fits costs only itself. Those that could not be carried are named in one message.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import logging
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from octobrixd.errors import CommandError
from octobrixd.instances.venv_contents import Dist, canonical
from octobrixd.system.fsutil import write_atomic

log = logging.getLogger(__name__)

STATE_VERSION = 1
# pip's and uv's own bookkeeping: an installer writes its own, and a stale direct_url would lie.
_INSTALLER_FILES = frozenset({"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"})


class Source(StrEnum):
    INDEX = "index"
    WHEELS = "wheels"
    URL = "url"
    INSTALLED_COPY = "installed copy"


class Builder(Protocol):
    """The venv being built: instances/venvs.py's uv calls, or a test's stand-in."""

    def fresh(self) -> None: ...  # an empty venv again
    def install(self, requirements: Sequence[str], constraints: Path | None) -> None: ...  # CommandError
    def installed(self) -> dict[str, str]: ...  # name -> version of what the venv holds now


@dataclass(frozen=True)
class Carried:
    name: str
    version: str
    source: Source


@dataclass(frozen=True)
class NotCarried:
    name: str
    version: str
    reason: str


@dataclass(frozen=True)
class CarryResult:
    carried: tuple[Carried, ...] = ()
    not_carried: tuple[NotCarried, ...] = ()

    def message(self, printer: str) -> str | None:
        if not self.not_carried:
            return None
        names = ", ".join(f"{p.name} {p.version} ({p.reason})" for p in self.not_carried)
        return (
            f"{printer}: could not carry into its new OctoPrint the plugins installed through OctoPrint: {names}. "
            "Their settings are kept; install them again in OctoPrint's Plugin Manager once a version fits"
        )

    def to_json(self, octoprint: str | None) -> str:
        body = {
            "version": STATE_VERSION,
            "octoprint": octoprint,
            "carried": [asdict(c) for c in self.carried],
            "not_carried": [asdict(n) for n in self.not_carried],
        }
        return json.dumps(body, indent=2, sort_keys=True) + "\n"


def _local_file(url: str) -> Path | None:
    parsed = urlparse(url)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else None


def _sources(dist: Dist, wheels: str | None, scratch: Path) -> Iterator[tuple[str, Source]]:
    """(requirement, source) to try for dist, best first; the installed copy is packed only if reached."""
    if wheels is not None:
        yield f"{dist.name}=={dist.version}", Source.WHEELS
    elif dist.url is None:
        yield f"{dist.name}=={dist.version}", Source.INDEX
    else:
        local = _local_file(dist.url)
        if local is None or local.is_file():
            yield f"{dist.name} @ {dist.url}", Source.URL
    try:
        yield str(repack(dist, scratch)), Source.INSTALLED_COPY
    except (OSError, ValueError) as error:
        log.warning("cannot pack the installed %s %s into a wheel: %s", dist.name, dist.version, error)


def _reason(error: Exception) -> str:
    if isinstance(error, CommandError):
        lines = [line.strip() for line in error.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {error.returncode}"
    return str(error)


def carry(
    builder: Builder, base: Sequence[str], plugins: Sequence[Dist], scratch: Path, wheels: str | None
) -> CarryResult:
    """Install base (the config's requirements; its failure raises) plus as many of plugins as fit."""
    if not plugins:
        builder.install(base, None)
        return CarryResult()
    first = {p.key: next(_sources(p, wheels, scratch), None) for p in plugins}
    together = [chosen[0] for chosen in first.values() if chosen is not None]
    try:
        builder.install([*base, *together], None)
    except CommandError as error:
        log.info("the config's requirements and the user's plugins do not install together (%s); one by one", error)
    else:
        carried = [Carried(p.name, p.version, chosen[1]) for p in plugins if (chosen := first[p.key]) is not None]
        missing = [NotCarried(p.name, p.version, "nothing to install it from") for p in plugins if first[p.key] is None]
        return CarryResult(tuple(carried), tuple(missing))
    builder.fresh()
    builder.install(base, None)
    # What the config installed stays exactly as it is: a plugin must fit it, not the other way round.
    constraints = scratch / "constraints.txt"
    constraints.write_text("".join(f"{n}=={v}\n" for n, v in sorted(builder.installed().items())), encoding="utf-8")
    carried_list: list[Carried] = []
    failed: list[NotCarried] = []
    for plugin in plugins:
        reason = "nothing to install it from"
        for requirement, source in _sources(plugin, wheels, scratch):
            try:
                builder.install([requirement], constraints)
            except CommandError as error:
                reason = _reason(error)
                continue
            carried_list.append(Carried(plugin.name, plugin.version, source))
            break
        else:
            failed.append(NotCarried(plugin.name, plugin.version, reason))
    return CarryResult(tuple(carried_list), tuple(failed))


def save(path: Path, result: CarryResult, octoprint: str | None) -> None:
    """Remembered beside the venv, for the next build and for later upgrades."""
    write_atomic(path, result.to_json(octoprint), mode=0o644)


# --- packing an installed distribution into a wheel ---


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def _wheel_tag(wheel_text: str | None) -> str:
    for line in (wheel_text or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Tag" and value.strip():
            return value.strip()
    return "py3-none-any"


def repack(dist: Dist, dest: Path) -> Path:
    """A wheel of dist made from its installed files (as its RECORD lists them); scripts and data
    outside site-packages are left out: an installer makes the scripts again from the entry points."""
    site = dist.path.parent
    record = (dist.path / "RECORD").read_text(encoding="utf-8")
    wheel_file = dist.path / "WHEEL"
    wheel_text = wheel_file.read_text(encoding="utf-8") if wheel_file.exists() else None
    tag = _wheel_tag(wheel_text)
    dist_info = f"{canonical(dist.name).replace('-', '_')}-{dist.version}.dist-info"
    target = dest / f"{canonical(dist.name).replace('-', '_')}-{dist.version.replace('-', '_')}-{tag}.whl"
    dest.mkdir(parents=True, exist_ok=True)
    rows: list[list[str]] = []
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for row in csv.reader(io.StringIO(record)):
            if not row or row[0].startswith(("..", "/")) or "__pycache__" in row[0]:
                continue
            relative = Path(row[0])
            if relative.parent == Path(dist.path.name):
                if relative.name in _INSTALLER_FILES:
                    continue
                name = f"{dist_info}/{relative.name}"
            else:
                name = row[0]
            data = (site / relative).read_bytes()
            archive.writestr(name, data)
            rows.append([name, _record_hash(data), str(len(data))])
        if wheel_text is None:
            wheel_text = f"Wheel-Version: 1.0\nGenerator: octobrix\nRoot-Is-Purelib: true\nTag: {tag}\n"
            archive.writestr(f"{dist_info}/WHEEL", wheel_text)
            rows.append([f"{dist_info}/WHEEL", _record_hash(wheel_text.encode()), str(len(wheel_text))])
        rows.append([f"{dist_info}/RECORD", "", ""])
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(rows)
        archive.writestr(f"{dist_info}/RECORD", out.getvalue())
    if not any(r[0] == f"{dist_info}/METADATA" for r in rows):
        raise ValueError(f"{dist.path} has no METADATA in its RECORD")
    return target
