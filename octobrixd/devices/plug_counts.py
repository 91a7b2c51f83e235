"""How often each configured printer and camera was plugged in and unplugged, as octobrixd saw it.

octobrixd counts every add and remove udev reports for a configured device (not the devices it
finds already present when it starts) into a small world-readable file with names and numbers only,
so the unprivileged web service can serve them as Prometheus counters without any more rights, and
the counts go on from where they were after a restart of either service or of the computer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from octobrixd.system import paths
from octobrixd.system.fsutil import write_atomic
from octobrixd.system.paths import Layout

log = logging.getLogger(__name__)

STATE_FILE = paths.STATE_DIR / ".plugs.json"


@dataclass(frozen=True)
class PlugCount:
    plugged: int = 0
    unplugged: int = 0


def parse(text: str) -> dict[str, PlugCount]:
    """name -> counts; whatever in the file is not a count is left out (a hand-edited file never breaks a scrape)."""
    try:
        body: Any = json.loads(text)
    except ValueError:
        return {}
    devices = body.get("devices") if isinstance(body, dict) else None
    if not isinstance(devices, dict):
        return {}
    out = {}
    for name, row in devices.items():
        if not isinstance(row, dict):
            continue
        plugged, unplugged = row.get("plugged", 0), row.get("unplugged", 0)
        if all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (plugged, unplugged)):
            out[str(name)] = PlugCount(plugged, unplugged)
    return out


def dump(counts: Mapping[str, PlugCount]) -> str:
    devices = {name: {"plugged": c.plugged, "unplugged": c.unplugged} for name, c in sorted(counts.items())}
    return json.dumps({"devices": devices}, indent=2) + "\n"


def counted(counts: Mapping[str, PlugCount], name: str, plugged: bool) -> dict[str, PlugCount]:
    before = counts.get(name, PlugCount())
    after = (
        PlugCount(before.plugged + 1, before.unplugged) if plugged else PlugCount(before.plugged, before.unplugged + 1)
    )
    return {**counts, name: after}


def read_counts(layout: Layout) -> dict[str, PlugCount]:
    try:
        return parse(layout.path(STATE_FILE).read_text(encoding="utf-8"))
    except OSError:
        return {}


def count(layout: Layout, name: str, plugged: bool) -> None:
    """One plug or unplug of device NAME, added to the file. A count that cannot be written is logged, never fatal."""
    try:
        write_atomic(layout.path(STATE_FILE), dump(counted(read_counts(layout), name, plugged)), mode=0o644)
    except OSError as error:
        log.warning("cannot count the plug of %s in %s: %s", name, layout.path(STATE_FILE), error)
