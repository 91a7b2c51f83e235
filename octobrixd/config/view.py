"""The few facts of a validated config that `octobrixctl status` lists, as plain data.

Validating /etc/octobrix.toml takes pydantic, and importing it and building the config's models was
most of status's run time (benchmarks/status.py). After every successful apply the facts are kept
beside the applied copy (config/applied.py), keyed by the config file's exact text; status reads them
while the file is unchanged since, and validates the file only when it changed. No pydantic here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from octobrixd import __version__
from octobrixd.system import paths
from octobrixd.system.fsutil import leftover_temps, write_atomic
from octobrixd.system.paths import Layout

if TYPE_CHECKING:
    from octobrixd.config.model import Config

log = logging.getLogger(__name__)

VIEW_FILE = paths.STATE_DIR / ".applied-view.json"


@dataclass(frozen=True)
class OctobrixView:
    octoprint: str
    streamer: str
    public_host: str | None
    backup_schedule: str


@dataclass(frozen=True)
class FrontDoorView:
    enabled: bool
    port: int
    https: bool = False
    https_port: int = 443


@dataclass(frozen=True)
class PrinterView:
    port: int
    door_port: int
    virtual: bool
    octoprint: str | None
    plugins: tuple[str, ...]


@dataclass(frozen=True)
class CameraView:
    port: int
    streamer: str | None


@dataclass(frozen=True)
class FarmView:
    """Answers what status asks of a Config, the same way."""

    source: str
    octobrix: OctobrixView
    frontdoor: FrontDoorView
    printers: dict[str, PrinterView]
    cameras: dict[str, CameraView]

    def octoprint_requirement(self, name: str) -> str:
        return self.printers[name].octoprint or self.octobrix.octoprint

    def streamer_of(self, name: str) -> str:
        return self.cameras[name].streamer or self.octobrix.streamer

    def door_port(self, name: str) -> int:
        return self.printers[name].door_port


def view_of(config: Config) -> FarmView:
    o = config.octobrix
    return FarmView(
        source=config.source,
        octobrix=OctobrixView(o.octoprint, str(o.streamer), o.public_host, o.backup_schedule),
        frontdoor=FrontDoorView(
            config.frontdoor.enabled, config.frontdoor.port, config.frontdoor.https, config.frontdoor.https_port
        ),
        printers={
            n: PrinterView(p.port, config.door_port(n), p.virtual, p.octoprint, tuple(p.plugins))
            for n, p in config.printers.items()
        },
        cameras={
            n: CameraView(c.port, None if c.streamer is None else str(c.streamer)) for n, c in config.cameras.items()
        },
    )


def _key(text: bytes, source: str, host_name: str) -> str:
    # Another octobrix may validate differently, and the host name is a default (public_host).
    digest = hashlib.sha256(f"{__version__}\0{source}\0{host_name}\0".encode())
    digest.update(text)
    return digest.hexdigest()


def save_view(layout: Layout, config: Config, text: str, host_name: str, mode: int) -> None:
    """Keep the facts of config, which validated from text (the config file's), for status."""
    body = {"key": _key(text.encode(), config.source, host_name), "view": asdict(view_of(config))}
    wanted, path = json.dumps(body, sort_keys=True) + "\n", layout.path(VIEW_FILE)
    for temp in leftover_temps(path):
        temp.unlink(missing_ok=True)  # of a run killed while it wrote the view
    try:
        if stat.S_IMODE(path.stat().st_mode) == mode and path.read_text(encoding="utf-8") == wanted:
            return  # an apply that changes nothing rewrites nothing
    except (OSError, UnicodeDecodeError):
        pass
    write_atomic(path, wanted, mode=mode)


def _trusted(info: os.stat_result) -> bool:
    # As root, a config others may change is refused by validation (config.check_ownership): never
    # skip that check.
    return os.geteuid() != 0 or (info.st_uid == 0 and not info.st_mode & 0o022)


def load_view(layout: Layout, path: Path, host_name: str) -> FarmView | None:
    """The farm as the config file at path says, if it is unchanged since it last applied; else None."""
    source = str(path.absolute())
    try:
        with path.open("rb") as handle:
            if not _trusted(os.fstat(handle.fileno())):
                return None
            text = handle.read()
        body = json.loads(layout.path(VIEW_FILE).read_bytes())
        if not isinstance(body, dict) or body.get("key") != _key(text, source, host_name):
            return None
        return _from_dict(body["view"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        # No view yet, or not readable: validating the config says all that needs saying.
        log.debug("no applied view of %s: %s", path, error)
        return None


def _from_dict(view: Any) -> FarmView:
    return FarmView(
        source=view["source"],
        octobrix=OctobrixView(**view["octobrix"]),
        frontdoor=FrontDoorView(**view["frontdoor"]),
        printers={
            n: PrinterView(p["port"], p["door_port"], p["virtual"], p["octoprint"], tuple(p["plugins"]))
            for n, p in view["printers"].items()
        },
        cameras={n: CameraView(**c) for n, c in view["cameras"].items()},
    )
