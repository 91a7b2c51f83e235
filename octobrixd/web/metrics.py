"""GET /metrics: the farm for Prometheus, in its text exposition format (prometheus-client).

`render` is pure: the config, what the overview's last round asked (web/overview.py, whose cache
/metrics shares, so a scrape asks nothing a browser asked in the last 2 s, and nothing is asked
while nobody scrapes) and a few facts read from files go in, the exposition text comes out.
`scrape` is the thin layer that reads those files.

Counters are never kept in this service's memory, so they survive its restarts: restarts are
systemd's NRestarts, plugs and unplugs octobrixd's own counts (devices/plug_counts.py, a world-readable file).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from octobrixd.config.applied import applied_path
from octobrixd.config.model import Config, load_config
from octobrixd.devices.plug_counts import PlugCount, read_counts
from octobrixd.errors import OctobrixError
from octobrixd.farm.backup_state import LastBackup, UnreadableStateError, read_state
from octobrixd.system.paths import Layout
from octobrixd.system.systemd import NOTHING, UnitState
from octobrixd.web.overview import Asked, CardState, WebContext, card_state, overview_of

CONTENT_TYPE = CONTENT_TYPE_LATEST
# While a job runs (or is paused), its progress and time left are series; otherwise they are absent.
_JOB_STATES = (CardState.PRINTING, CardState.PAUSED)


@dataclass(frozen=True)
class FarmFacts:
    """What /metrics says of the farm beyond the overview's round of asks."""

    config_valid: bool
    applied_at: float | None  # when the last config applied (wall clock), None: never
    backups: Mapping[str, LastBackup] = field(default_factory=dict)
    plugs: Mapping[str, PlugCount] = field(default_factory=dict)
    now: float = 0.0


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _when(text: str) -> float | None:
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _gauge(name: str, documentation: str, *labels: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"octobrix_{name}", documentation, labels=list(labels))


def _counter(name: str, documentation: str, *labels: str) -> CounterMetricFamily:
    return CounterMetricFamily(f"octobrix_{name}", documentation, labels=list(labels))


def _plug_families(kind: str, there: str) -> tuple[GaugeMetricFamily, CounterMetricFamily, CounterMetricFamily]:
    return (
        _gauge(f"{kind}_device_plugged", f"1 if {there}", kind),
        _counter(f"{kind}_plugs", f"how often the {kind} was plugged in", kind),
        _counter(f"{kind}_unplugs", f"how often the {kind} was unplugged", kind),
    )


class _Farm:
    """A prometheus-client collector over one scrape's records (a new registry per scrape: no state)."""

    def __init__(self, config: Config, asked: Asked, facts: FarmFacts) -> None:
        self.config, self.asked, self.facts = config, asked, facts

    def collect(self) -> Iterator[Metric]:
        yield from self._printers()
        yield from self._cameras()
        yield from self._farm()

    def _printers(self) -> Iterator[Metric]:
        up = _gauge("printer_up", "1 if the printer's OctoPrint answered this scrape", "printer")
        state = _gauge("printer_state", "1 for the printer's state as the overview says it, 0 for the others",
                       "printer", "state")  # fmt: skip
        printing = _gauge("printer_printing", "1 while the printer prints", "printer")
        progress = _gauge("printer_progress_ratio", "how much of the running print is done, 0 to 1", "printer")
        left = _gauge("printer_print_time_left_seconds", "OctoPrint's estimate of the print's time left", "printer")
        actual = _gauge("printer_temperature_celsius", "a heater's temperature", "printer", "heater")
        target = _gauge("printer_temperature_target_celsius", "a heater's target (0: off)", "printer", "heater")
        restarts = _counter("printer_restarts", "how often systemd restarted its OctoPrint (NRestarts)", "printer")
        plugged, plugs, unplugs = _plug_families("printer", "its USB device is there (not for virtual ones)")
        pending = _gauge("printer_restart_pending", "1 if a config change waits for the print to end", "printer")
        for row in self.asked.printers:
            name = row.name
            answer = self.asked.answers.get(name)
            current, _, _ = card_state(row, answer)
            ok = answer is not None and answer.error is None
            up.add_metric([name], 1.0 if ok else 0.0)
            for each in CardState:
                state.add_metric([name, str(each)], 1.0 if each is current else 0.0)
            printing.add_metric([name], 1.0 if current is CardState.PRINTING else 0.0)
            pending.add_metric([name], 1.0 if row.restart_pending else 0.0)
            if ok and answer is not None and current in _JOB_STATES:
                job_progress = (answer.job or {}).get("progress") or {}
                if (completion := _number(job_progress.get("completion"))) is not None:
                    progress.add_metric([name], completion / 100.0)
                if (seconds := _number(job_progress.get("printTimeLeft"))) is not None:
                    left.add_metric([name], seconds)
            temperatures = (answer.printer or {}).get("temperature") if ok and answer is not None else None
            for heater, reading in sorted((temperatures or {}).items()):
                if not isinstance(reading, dict) or not (heater == "bed" or heater.startswith("tool")):
                    continue
                if (value := _number(reading.get("actual"))) is not None:
                    actual.add_metric([name, heater], value)
                if (value := _number(reading.get("target"))) is not None:
                    target.add_metric([name, heater], value)
            if (count := self.asked.units.get(row.unit, NOTHING).restarts) is not None:
                restarts.add_metric([name], float(count))
            if row.device in ("plugged", "unplugged"):
                self._plugged(name, row.device, plugged, plugs, unplugs)
        yield from (up, state, printing, progress, left, actual, target, restarts, plugged, plugs, unplugs, pending)

    def _plugged(
        self, name: str, device: str, plugged: GaugeMetricFamily, plugs: CounterMetricFamily,
        unplugs: CounterMetricFamily,
    ) -> None:  # fmt: skip
        seen = self.facts.plugs.get(name, PlugCount())
        plugged.add_metric([name], 1.0 if device == "plugged" else 0.0)
        plugs.add_metric([name], float(seen.plugged))
        unplugs.add_metric([name], float(seen.unplugged))

    def _cameras(self) -> Iterator[Metric]:
        streaming = _gauge("camera_streaming", "1 if its streamer runs and the camera delivers frames", "camera")
        fps = _gauge("camera_fps", "frames per second the stream delivers (ustreamer's queued_fps)", "camera")
        clients = _gauge("camera_clients", "viewers of the stream now", "camera")
        plugged, plugs, unplugs = _plug_families("camera", "the camera is there")
        for row in self.asked.cameras:
            name = row.name
            stream = self.asked.streams.get(name)
            running = row.state == UnitState.ACTIVE and row.device == "plugged"
            online = stream.online if stream is not None else running
            streaming.add_metric([name], 1.0 if running and online else 0.0)
            if stream is not None and stream.queued_fps is not None:
                fps.add_metric([name], float(stream.queued_fps))
            if stream is not None and stream.clients is not None:
                clients.add_metric([name], float(stream.clients))
            self._plugged(name, row.device, plugged, plugs, unplugs)
        yield from (streaming, fps, clients, plugged, plugs, unplugs)

    def _farm(self) -> Iterator[Metric]:
        facts = self.facts
        valid = _gauge("config_valid", "1 if /etc/octobrix.toml passes `octobrixctl check` now")
        valid.add_metric([], 1.0 if facts.config_valid else 0.0)
        yield valid
        applied = _gauge("last_apply_timestamp_seconds", "when the last config applied (Unix time)")
        if facts.applied_at is not None:
            applied.add_metric([], facts.applied_at)
        yield applied
        age = _gauge("backup_age_seconds", "how long ago the printer's last backup ran", "printer")
        ok = _gauge("backup_ok", "1 if the printer's last backup succeeded", "printer")
        for name, last in sorted(facts.backups.items()):
            if name not in self.config.printers:
                continue
            if (when := _when(last.when)) is not None:
                age.add_metric([name], max(0.0, facts.now - when))
            ok.add_metric([name], 1.0 if last.ok else 0.0)
        yield from (age, ok)


def render(config: Config, asked: Asked, facts: FarmFacts) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Farm(config, asked, facts))
    return generate_latest(registry)


def config_valid(path: Path) -> bool:
    try:
        load_config(path)
    except (OctobrixError, OSError):
        return False
    return True


def _applied_at(context: WebContext) -> float | None:
    try:
        return applied_path(context.layout).stat().st_mtime
    except OSError:
        return None


def last_backups(layout: Layout) -> dict[str, LastBackup]:
    """The backup record; none when it cannot be read (status and doctor say why), so the farm's
    other metrics still answer."""
    try:
        return read_state(layout)
    except UnreadableStateError:
        return {}


def scrape(context: WebContext) -> bytes:
    """The body of GET /metrics: the overview's (cached) round of asks, and the farm's state files."""
    config, asked = overview_of(context).asked()
    facts = FarmFacts(
        config_valid=config_valid(Path(config.source)),
        applied_at=_applied_at(context),
        backups=last_backups(context.layout),
        plugs=read_counts(context.layout),
        now=time.time(),
    )
    return render(config, asked, facts)
