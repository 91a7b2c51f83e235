"""The farm on one line, for systemd's STATUS= (octobrixd sends it; `systemctl status octobrixd`
shows it): "4 printers: 3 operational, 1 unplugged; 2 cameras: 2 streaming". The rows are
status's own, so the line and `octobrixctl status` never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from octobrixd.config.model import Config
from octobrixd.errors import OctobrixError
from octobrixd.farm.status import CameraStatus, PrinterStatus, collect, fetch_printer_state, query_units
from octobrixd.instances.credentials import read_credentials
from octobrixd.names import octoprint_unit, streamer_unit
from octobrixd.system.paths import Layout
from octobrixd.system.systemd import UnitState

BUSY_STATES = ("Printing", "Pausing", "Paused", "Resuming", "Cancelling", "Finishing", "Sending", "Starting")


class Standing(StrEnum):
    """What the line counts a printer as."""

    UNPLUGGED = "unplugged"
    UNKNOWN = "state unknown"
    FAILED = "failed"
    NOT_RUNNING = "not running"
    PRINTING = "printing"
    OPERATIONAL = "operational"
    NOT_CONNECTED = "not connected"


def standing(row: PrinterStatus) -> Standing:
    if row.device == "unplugged":
        return Standing.UNPLUGGED
    if row.state == "unknown":
        return Standing.UNKNOWN
    if row.state == UnitState.FAILED:
        return Standing.FAILED
    if row.state != UnitState.ACTIVE:
        return Standing.NOT_RUNNING
    if (row.printer_state or "").startswith(BUSY_STATES):
        return Standing.PRINTING
    if row.printer_state == "Operational":
        return Standing.OPERATIONAL
    return Standing.NOT_CONNECTED


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def summary_line(printers: Sequence[PrinterStatus], cameras: Sequence[CameraStatus]) -> str:
    counts: dict[Standing, int] = {}
    for row in printers:
        counts[standing(row)] = counts.get(standing(row), 0) + 1
    text = _plural(len(printers), "printer")
    if counts:
        # Most first; a tie keeps the order the printers came in.
        text += ": " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    text += f"; {_plural(len(cameras), 'camera')}"
    if cameras:
        text += f": {sum(1 for row in cameras if row.state == 'active')} streaming"
    return text


def farm_summary(config: Config, layout: Layout) -> str:
    """The line for this config, from systemd (on the live system) and each OctoPrint."""
    units = [octoprint_unit(n) for n in config.printers] + [streamer_unit(config, n) for n in config.cameras]
    try:
        props = query_units(units) if layout.live else {}
    except OctobrixError:
        props = {}
    fetchers = {}
    for name in config.printers:
        credentials = read_credentials(layout, name)
        fetchers[name] = fetch_printer_state(credentials.api_key if credentials else None)
    printers, cameras = collect(config, layout, props, fetchers, "localhost")
    return summary_line(printers, cameras)
