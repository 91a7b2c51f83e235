"""Carry the user's own plugins (installed through OctoPrint's Plugin Manager) into a new venv.

Each plugin is tried from where it came from, same version: its PyPI release, the archive URL it
was installed from (PEP 610 direct_url.json), or, on an offline farm, the wheels folder only. When
that source is gone (the Plugin Manager installs from a temporary download that it deletes), the
installed copy itself is packed into a wheel and installed from that. The venv already holds what
the config asks for (root built it from the config alone); the plugins are user-origin code, so the
builder installs them as the printer's user, never changing what the config installed. They go in
one go; if that fails, each on its own, so one plugin that no longer fits costs only itself. Those
that could not be carried are named in one message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from octobrixd.errors import CommandError
from octobrixd.instances.venv_contents import Dist
from octobrixd.system.fsutil import write_atomic

log = logging.getLogger(__name__)

STATE_VERSION = 1


class Source(StrEnum):
    INDEX = "index"
    WHEELS = "wheels"
    URL = "url"
    INSTALLED_COPY = "installed copy"


class Builder(Protocol):
    """The venv being built, holding the config's requirements already: instances/venvs.py's uv calls
    as the printer's user, or a test's stand-in."""

    # Adds requirements, never changing what the config installed; CommandError when they do not fit.
    def install(self, requirements: Sequence[str]) -> None: ...

    # A wheel of dist's installed copy; CommandError, OSError or ValueError when it cannot be packed.
    def pack(self, dist: Dist) -> Path: ...


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


def _sources(dist: Dist, wheels: str | None, builder: Builder) -> Iterator[tuple[str, Source]]:
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
        wheel = builder.pack(dist)
    except (CommandError, OSError, ValueError) as error:
        log.warning("cannot pack the installed %s %s into a wheel: %s", dist.name, dist.version, _reason(error))
    else:
        yield str(wheel), Source.INSTALLED_COPY


def _reason(error: Exception) -> str:
    if isinstance(error, CommandError):
        lines = [line.strip() for line in error.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {error.returncode}"
    return str(error)


def carry(builder: Builder, plugins: Sequence[Dist], wheels: str | None) -> CarryResult:
    """Add as many of plugins as fit to the venv builder holds (the config's requirements already)."""
    if not plugins:
        return CarryResult()
    first = {p.key: next(_sources(p, wheels, builder), None) for p in plugins}
    together = [chosen[0] for chosen in first.values() if chosen is not None]
    try:
        if together:
            builder.install(together)
    except CommandError as error:
        log.info("the user's plugins do not install together beside the config's (%s); one by one", _reason(error))
    else:
        carried = [Carried(p.name, p.version, chosen[1]) for p in plugins if (chosen := first[p.key]) is not None]
        missing = [NotCarried(p.name, p.version, "nothing to install it from") for p in plugins if first[p.key] is None]
        return CarryResult(tuple(carried), tuple(missing))
    carried_list: list[Carried] = []
    failed: list[NotCarried] = []
    for plugin in plugins:
        reason = "nothing to install it from"
        for requirement, source in _sources(plugin, wheels, builder):
            try:
                builder.install([requirement])
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
