"""The farm's state, row by row: each printer's and camera's unit, resources, device, printer state
and URL, for `octobrixctl status`, the farm page, the metrics and octobrixd's STATUS= line.

One `systemctl show` for all units (not one per unit), and the OctoPrint APIs asked in
parallel with a short timeout, so a reader stays fast as the farm grows.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from octobrixd.cameras import health as camera_health
from octobrixd.config.view import FarmView
from octobrixd.instances import recovery
from octobrixd.instances.api import ApiError, job_state
from octobrixd.instances.running import running_port
from octobrixd.instances.venv_contents import InstalledPlugin
from octobrixd.instances.venv_contents import report as venv_report
from octobrixd.names import device_link, octoprint_unit, printer_of, streamer_unit
from octobrixd.system import paths, systemd
from octobrixd.system.paths import Layout
from octobrixd.system.systemd import UnitState
from octobrixd.urls import api_base, camera_url, printer_url

if TYPE_CHECKING:
    from octobrixd.config.model import Config

CGROUP_ROOT = Path("/sys/fs/cgroup")

UnitProps = Mapping[str, systemd.UnitProperties]
PrinterStateFetcher = Callable[[str, int], tuple[str | None, float | None]]


@dataclass(frozen=True)
class UnitStatus:
    unit: str
    state: str
    sub_state: str
    pid: int | None
    uptime_seconds: float | None
    cpu_percent: float | None
    memory_bytes: int | None


@dataclass(frozen=True)
class Failure:
    """Why a failed instance is down, and when octobrixd starts it again."""

    cause: str  # "exited with status 1 (6 starts in a row)"
    log: tuple[str, ...]  # the unit's last journal lines; empty without the right to read them
    octobrixd_retries: int | None  # how often octobrixd has started it again since it began failing
    next_retry_seconds: float | None  # when octobrixd starts it again; None: not scheduled (yet)
    fix: str


@dataclass(frozen=True)
class PrinterStatus(UnitStatus):
    name: str
    device: str
    device_path: str | None
    url: str
    api_base: str | None  # url's REST API ("http://farm/prusa/api/"); None with no url ("-")
    printer_state: str | None
    progress_percent: float | None
    restart_pending: bool
    # What its venv holds (instances/venv_contents.py); null/empty where it cannot be read (not root).
    octoprint_version: str | None = None
    octoprint_requirement: str | None = None
    drift: str | None = None
    plugins: tuple[InstalledPlugin, ...] = ()
    result: str | None = None  # systemd's Result of the last run: "success", "exit-code", "signal"...
    failure: Failure | None = None  # set while the unit is failed


@dataclass(frozen=True)
class CameraStatus(UnitStatus):
    name: str
    device: str
    device_path: str
    url: str
    stream: camera_health.Health | None = None  # "streamer restarted", "re-attached", "frozen"; None: fine
    stream_note: str | None = None


def query_units(units: Sequence[str]) -> dict[str, systemd.UnitProperties]:
    """Properties of every unit from a single systemctl call."""
    return systemd.show(units)


def cgroup_memory(control_group: str, cgroup_root: Path = CGROUP_ROOT) -> int | None:
    """The cgroup's memory when systemd has no MemoryCurrent (memory accounting off, or a container
    without the memory controller): the resident memory of every process in it."""
    if not control_group:
        return None
    folder = cgroup_root / control_group.lstrip("/")
    try:
        return int((folder / "memory.current").read_text())
    except (OSError, ValueError):
        pass
    try:
        pids = [int(p) for p in (folder / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return None
    import psutil  # only for this rare case: status starts faster without it

    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total or None


def unit_status(unit: str, props: systemd.UnitProperties, now_monotonic_usec: int) -> UnitStatus:
    state = str(props.state) if props.state is not None else "unknown"
    if not props.installed:
        state = "not-installed"
    running = props.running
    # Up since it became active: while it starts (again), systemd's timestamp is its last run's.
    since = props.active_since_usec if props.state is not systemd.UnitState.ACTIVATING else None
    uptime = (now_monotonic_usec - since) / 1e6 if running and since else None
    cpu_ns = props.cpu_nsec
    cpu = round(cpu_ns / 1e9 / uptime * 100, 1) if cpu_ns is not None and uptime else None
    return UnitStatus(
        unit=unit,
        state=state,
        sub_state=props.sub_state or "unknown",
        pid=props.main_pid if running else None,
        uptime_seconds=round(uptime, 1) if uptime is not None else None,
        cpu_percent=cpu,
        memory_bytes=(props.memory_bytes or cgroup_memory(props.control_group)) if running else None,
    )


def fetch_printer_state(api_key: str | None) -> PrinterStateFetcher:
    """Ask an instance's OctoPrint for its printer's state: ("Printing", 42.0), ("Offline", None)…"""

    def fetch(_name: str, port: int) -> tuple[str | None, float | None]:
        if api_key is None:
            return None, None
        try:
            job = job_state(port, api_key)
        except ApiError as error:
            return error.summary, None
        return job.state, job.progress

    return fetch


def _venv_fields(layout: Layout, config: Config | FarmView, name: str, plugins: bool) -> dict[str, Any]:
    if name not in config.printers:
        return {}
    venv = venv_report(layout, config, name, plugins=plugins)
    return {
        "octoprint_version": venv.octoprint_version,
        "octoprint_requirement": config.octoprint_requirement(name),
        "drift": venv.drift,
        "plugins": venv.plugins,
    }


def drift_notes(printers: Sequence[PrinterStatus]) -> list[str]:
    return [
        f"{p.name}: {p.drift}; `sudo octobrixctl apply` builds it again as the config says, keeping its plugins"
        for p in printers
        if p.drift
    ]


def removed_printers(config: Config | FarmView, deferred: Sequence[str]) -> list[str]:
    """Printers taken out of the config while they printed: their OctoPrint runs on until the print
    ends, and status lists them ("removed", stop pending) so that they are not invisible meanwhile."""
    return [n for u in deferred if (n := printer_of(u)) is not None and n not in config.printers]


def _frontdoor_serves(config: Config | FarmView, layout: Layout) -> bool:
    """The front door is on and applied: its nginx site is there (status may run before apply)."""
    return config.frontdoor.enabled and layout.path(paths.NGINX_SITE).exists()


def collect(
    config: Config | FarmView,
    layout: Layout,
    props: UnitProps,
    fetchers: Mapping[str, PrinterStateFetcher],
    host: str,
    *,
    names: Sequence[str] = (),
    deferred: Sequence[str] = (),
    now_monotonic_usec: int | None = None,
    plugins: bool = True,
    journal: Callable[[str, int], list[str]] | None = None,
    retries: Mapping[str, recovery.Retry] | None = None,
) -> tuple[list[PrinterStatus], list[CameraStatus]]:
    now = now_monotonic_usec if now_monotonic_usec is not None else time.monotonic_ns() // 1000
    wall_now = time.time()
    wanted = set(names)
    printers = [n for n in sorted({*config.printers, *removed_printers(config, deferred)}) if not wanted or n in wanted]
    cameras = [n for n in sorted(config.cameras) if not wanted or n in wanted]

    def failure(unit: str) -> Failure:
        retry = (retries or {}).get(unit)
        next_try = retry.next_try if retry is not None else None
        return Failure(
            cause=recovery.cause(props.get(unit, systemd.NOTHING)),
            log=tuple(journal(unit, recovery.LOG_LINES)) if journal is not None else (),
            octobrixd_retries=retry.attempts if retry is not None else None,
            next_retry_seconds=round(max(0.0, next_try - wall_now), 1) if next_try is not None else None,
            fix=recovery.what_to_do(unit),
        )

    # The front door serves the printers and cameras of the config that applied: its site is there.
    door = _frontdoor_serves(config, layout)

    def one_printer(name: str) -> PrinterStatus:
        printer = config.printers.get(name)
        unit = octoprint_unit(name)
        base = unit_status(unit, props.get(unit, systemd.NOTHING), now)
        port = printer.port if printer is not None else 0
        if unit in deferred:
            # Until its held-back restart it still runs on the port it started with.
            port = running_port(layout, base.pid) or port
        state, progress = (None, None)
        if base.state == UnitState.ACTIVE and name in fetchers and port:
            state, progress = fetchers[name](name, port)
        link = layout.device_link(name)
        if printer is None:
            device = "removed"
        else:
            device = "virtual" if printer.virtual else ("plugged" if link.exists() else "unplugged")
        # Held back on the port it started with, or removed: the front door no longer leads there.
        url = printer_url(config, name, host, port, through_door=door and unit not in deferred) if port else "-"
        return PrinterStatus(
            **asdict(base),
            name=name,
            device=device,
            device_path=None if printer is None or printer.virtual else device_link(name),
            url=url,
            api_base=api_base(url) if port else None,
            printer_state=state,
            progress_percent=progress,
            restart_pending=unit in deferred,
            **_venv_fields(layout, config, name, plugins),
            result=props.get(unit, systemd.NOTHING).result or None,
            failure=failure(unit) if base.state == UnitState.FAILED else None,
        )

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(printers)))) as pool:
        printer_rows = list(pool.map(one_printer, printers))

    camera_rows = []
    health = camera_health.read_health(layout)
    for name in cameras:
        unit = streamer_unit(config, name)
        base = unit_status(unit, props.get(unit, systemd.NOTHING), now)
        link = layout.device_link(name)
        stream, stream_note = camera_health.stream_of(health, name, base.state)
        camera_rows.append(
            CameraStatus(
                **asdict(base),
                name=name,
                device="plugged" if link.exists() else "unplugged",
                device_path=device_link(name),
                url=camera_url(config, name, host, through_door=door),
                stream=stream,
                stream_note=stream_note,
            )
        )
    return printer_rows, camera_rows


# OctoPrint itself is not up yet.
STARTING_STATES = ("starting", "not answering")
# OctoPrint is up and its virtual printer, which always connects, is on its way.
CONNECTING_STATES = ("Offline", "Opening", "Connecting", "Detecting")


def settling(printers: Sequence[PrinterStatus], unaskable: Collection[str] = ()) -> list[str]:
    """Running instances whose OctoPrint does not answer yet, or whose virtual printer has not
    connected yet. A real printer's connection is not waited for: unplugged, it stays Offline, and
    a board that does not answer can stay "Opening serial connection" for as long as it likes.
    Printers in unaskable (no login to ask with) are never waited for."""
    waiting = []
    for row in printers:
        if row.state != UnitState.ACTIVE or row.name in unaskable:
            continue
        state = row.printer_state or "starting"
        if state.startswith(STARTING_STATES) or (row.device == "virtual" and state.startswith(CONNECTING_STATES)):
            waiting.append(row.name)
    return waiting
