"""The manifest: what octobrix generated, the digests of the units it started, and the restarts held
back for a print. apply writes it; status, doctor and the daemon read it through this module, so a
reader never has to import the writer (and its start-up cost).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from octobrixd.errors import OctobrixError
from octobrixd.system import paths
from octobrixd.system.paths import Layout

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    files: Mapping[str, str] = field(default_factory=dict)
    units: Mapping[str, str] = field(default_factory=dict)
    # Restarts and stops held back because the printer was printing; status shows them.
    deferred: tuple[str, ...] = ()

    def to_json(self) -> str:
        body = {
            "version": MANIFEST_VERSION,
            "files": dict(self.files),
            "units": dict(self.units),
            "deferred": list(self.deferred),
        }
        return json.dumps(body, indent=2, sort_keys=True) + "\n"


def read_manifest(layout: Layout) -> Manifest:
    path = layout.path(paths.MANIFEST)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Manifest()
    except PermissionError:
        raise OctobrixError(f"{path} is readable by root only here", hint="run it as root (sudo)") from None
    except (OSError, ValueError) as exc:
        raise OctobrixError(
            f"{path} is unreadable ({exc})",
            hint="it lists the files octobrix generated; remove it and run `octobrixctl apply` again",
        ) from None
    if not isinstance(body, dict) or body.get("version") != MANIFEST_VERSION:
        raise OctobrixError(f"{path} is not a manifest this octobrix understands", hint="remove it and apply again")
    return Manifest(
        files=dict(body.get("files", {})),
        units=dict(body.get("units", {})),
        deferred=tuple(body.get("deferred", ())),
    )
