"""`octobrixctl status`: every printer and camera at a glance.

One `systemctl show` for all units (not one per unit), and the OctoPrint APIs asked in
parallel with a short timeout, so the command stays fast as the farm grows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from octobrixd import camera_health, paths, recovery, systemd
from octobrixd.backups import state as backup_state
from octobrixd.cliargs import add_config_argument
from octobrixd.errors import ConfigError, OctobrixError
from octobrixd.farm_view import FarmView, load_view
from octobrixd.instances import CredentialsNeedRootError, read_credentials
from octobrixd.manifest import read_manifest, running_port
from octobrixd.names import device_link, octoprint_unit, printer_of, streamer_unit
from octobrixd.octoprint_api import ApiError, job_state
from octobrixd.paths import Layout
from octobrixd.systemd import journal_tail
from octobrixd.urls import camera_url, printer_url, public_host_of
from octobrixd.venv_contents import InstalledPlugin
from octobrixd.venv_contents import report as venv_report

if TYPE_CHECKING:
    from octobrixd.config import Config

JSON_VERSION = 1
# The farm is listed, from the last config that applied, but the config file has mistakes.
EXIT_CONFIG_ERRORS = 3
NEEDS_ROOT_NOTE = (
    "printer states (Operational, Printing 42%...) need the root-only OctoPrint logins: "
    "`sudo octobrixctl status` adds them"
)
SHOW_PROPERTIES = (
    "Id",
    "LoadState",
    "ActiveState",
    "SubState",
    "MainPID",
    "ActiveEnterTimestampMonotonic",
    "MemoryCurrent",
    "CPUUsageNSec",
    "ControlGroup",
    # How the last run ended, for a failed instance (recovery.cause).
    "Result",
    "ExecMainCode",
    "ExecMainStatus",
    "NRestarts",
)
# systemd prints this for "no value" in numeric properties.
UNSET = "18446744073709551615"
CGROUP_ROOT = Path("/sys/fs/cgroup")

UnitProps = Mapping[str, Mapping[str, str]]
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
    printer_state: str | None
    progress_percent: float | None
    restart_pending: bool
    # What its venv holds (venv_contents.py); null/empty where it cannot be read (not root).
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


def query_units(units: Sequence[str]) -> dict[str, dict[str, str]]:
    """Properties of every unit from a single systemctl call."""
    return systemd.show(units, SHOW_PROPERTIES)


def _int(props: Mapping[str, str], key: str) -> int | None:
    value = props.get(key, "")
    if not value or value == UNSET or not value.isdigit():
        return None
    return int(value)


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


def unit_status(unit: str, props: Mapping[str, str], now_monotonic_usec: int) -> UnitStatus:
    state = props.get("ActiveState", "unknown")
    if props.get("LoadState") == "not-found":
        state = "not-installed"
    active = state in ("active", "reloading", "deactivating")
    pid = _int(props, "MainPID") or None
    since = _int(props, "ActiveEnterTimestampMonotonic")
    uptime = (now_monotonic_usec - since) / 1e6 if active and since else None
    cpu_ns = _int(props, "CPUUsageNSec")
    cpu = round(cpu_ns / 1e9 / uptime * 100, 1) if cpu_ns is not None and uptime else None
    return UnitStatus(
        unit=unit,
        state=state,
        sub_state=props.get("SubState", "unknown"),
        pid=pid if active else None,
        uptime_seconds=round(uptime, 1) if uptime is not None else None,
        cpu_percent=cpu,
        memory_bytes=(_int(props, "MemoryCurrent") or cgroup_memory(props.get("ControlGroup", ""))) if active else None,
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
            cause=recovery.cause(props.get(unit, {})),
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
        base = unit_status(unit, props.get(unit, {}), now)
        port = printer.port if printer is not None else 0
        if unit in deferred:
            # Until its held-back restart it still runs on the port it started with.
            port = running_port(layout, base.pid) or port
        state, progress = (None, None)
        if base.state == "active" and name in fetchers and port:
            state, progress = fetchers[name](name, port)
        link = layout.device_link(name)
        if printer is None:
            device = "removed"
        else:
            device = "virtual" if printer.virtual else ("plugged" if link.exists() else "unplugged")
        return PrinterStatus(
            **asdict(base),
            name=name,
            device=device,
            device_path=None if printer is None or printer.virtual else device_link(name),
            # Held back on the port it started with, or removed: the front door no longer leads there.
            url=printer_url(config, name, host, port, through_door=door and unit not in deferred) if port else "-",
            printer_state=state,
            progress_percent=progress,
            restart_pending=unit in deferred,
            **_venv_fields(layout, config, name, plugins),
            result=props.get(unit, {}).get("Result") or None,
            failure=failure(unit) if base.state == "failed" else None,
        )

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(printers)))) as pool:
        printer_rows = list(pool.map(one_printer, printers))

    camera_rows = []
    health = camera_health.read_health(layout)
    for name in cameras:
        unit = streamer_unit(config, name)
        base = unit_status(unit, props.get(unit, {}), now)
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
        if row.state != "active" or row.name in unaskable:
            continue
        state = row.printer_state or "starting"
        if state.startswith(STARTING_STATES) or (row.device == "virtual" and state.startswith(CONNECTING_STATES)):
            waiting.append(row.name)
    return waiting


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m{int(seconds % 60):02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours < 48 else f"{hours // 24}d{hours % 24:02d}h"


def _memory(value: int | None) -> str:
    return "-" if value is None else f"{value / 1_048_576:.0f} MB"


def _service(row: UnitStatus) -> str:
    return row.state if row.state != "active" else f"active ({row.sub_state})"


def format_table(
    printers: Sequence[PrinterStatus],
    cameras: Sequence[CameraStatus],
    *,
    errors: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> str:
    """The table; config errors above it (the farm is then the last config's), notes below it."""
    return "\n".join([*errors, *_table(printers, cameras).splitlines(), *(f"note: {n}" for n in notes)])


def _table(printers: Sequence[PrinterStatus], cameras: Sequence[CameraStatus]) -> str:
    lines: list[list[str]] = []
    if printers:
        lines.append(["PRINTER", "SERVICE", "UP", "PID", "CPU", "MEMORY", "DEVICE", "STATE", "URL"])
        for p in printers:
            state = p.printer_state or "-"
            if p.progress_percent is not None and state.startswith("Printing"):
                state = f"{state} {p.progress_percent:.0f}%"
            if p.restart_pending:
                state += " (stop pending)" if p.device == "removed" else " (restart pending)"
            lines.append([
                p.name, _service(p), _duration(p.uptime_seconds), str(p.pid or "-"),
                "-" if p.cpu_percent is None else f"{p.cpu_percent}%", _memory(p.memory_bytes),
                p.device, state, p.url,
            ])  # fmt: skip
    table = "\n".join([_align(lines), *drift_notes(printers)]) if lines else ""
    if cameras:
        rows = [["CAMERA", "SERVICE", "UP", "PID", "CPU", "MEMORY", "DEVICE", "URL"]]
        for c in cameras:
            rows.append([
                c.name, c.stream or _service(c), _duration(c.uptime_seconds), str(c.pid or "-"),
                "-" if c.cpu_percent is None else f"{c.cpu_percent}%", _memory(c.memory_bytes), c.device, c.url,
            ])  # fmt: skip
        table += ("\n" if table else "") + _align(rows)
        table += "".join(f"\n{c.name}: {c.stream}: {c.stream_note}" for c in cameras if c.stream)
    for p in printers:
        if p.failure is not None:
            table += "\n\n" + format_failure(p.name, p.unit, p.failure)
    return table or "No printers or cameras are configured."


def format_failure(name: str, unit: str, failure: Failure) -> str:
    if failure.next_retry_seconds is not None:
        retry = f"octobrixd starts it again in {failure.next_retry_seconds:.0f} s"
        if failure.octobrixd_retries:
            retry += f" (it has tried {failure.octobrixd_retries} times; the delay doubles each time)"
    else:
        retry = "octobrixd starts it again after a delay"
    lines = [f"{name}: {unit} has failed: its OctoPrint {failure.cause}; {retry}."]
    if failure.log:
        lines.append(f"  last lines of its log (`journalctl -u {unit}`):")
        lines += [f"    {line}" for line in failure.log]
    else:
        lines.append(f"  its log: `sudo journalctl -u {unit} -n 50`")
    lines.append(f"  fix: {failure.fix}")
    return "\n".join(lines)


def _align(rows: list[list[str]]) -> str:
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def to_json(
    printers: Sequence[PrinterStatus],
    cameras: Sequence[CameraStatus],
    *,
    errors: Sequence[str] = (),
    notes: Sequence[str] = (),
    backup_failures: Sequence[str] = (),
) -> str:
    body = {
        "version": JSON_VERSION,
        # Mistakes in the config file; while there are any, the farm listed is the last config's that applied.
        "errors": list(errors),
        # What this listing could not show, and why (e.g. printer states without root).
        "notes": list(notes),
        "printers": [asdict(p) for p in printers],
        "cameras": [asdict(c) for c in cameras],
        # Printers whose last backup failed, one line each (empty when all went well).
        "backup_failures": list(backup_failures),
    }
    return json.dumps(body, indent=2)


def farm_config(args: argparse.Namespace, layout: Layout) -> tuple[Config | FarmView, list[str], str | None]:
    """The config the farm runs on, the config file's errors (none when it is valid) and what to do.

    A config with mistakes changes nothing, so while it has them the farm runs on the last
    config that applied: that is what status lists, with the mistakes on top. A config file
    unchanged since it last applied is not validated again: its view says the same, faster.
    """
    view = load_view(layout, args.config, socket.gethostname())
    if view is not None:
        return view, [], None
    # Validation needs pydantic, and its import is most of status's time: only when it is needed.
    from octobrixd.applied import last_applied
    from octobrixd.config import load_config

    try:
        return load_config(args.config), [], None
    except ConfigError as error:
        applied = last_applied(layout, args.config)
        if applied is None:
            if args.json:
                sys.stdout.write(to_json([], [], errors=error.problems, notes=["no config has applied yet"]) + "\n")
            raise
        saved = time.strftime("%Y-%m-%d %H:%M", time.localtime(applied.saved_at))
        hint = (
            f"hint: {error.hint or 'fix the config'}; until then the farm runs on the last config that applied "
            f"({saved}, kept in {applied.path}), listed below"
        )
        return applied.config, error.problems, hint


def asked_early(
    fetchers: Mapping[str, PrinterStateFetcher], ports: Mapping[str, int], pool: ThreadPoolExecutor
) -> dict[str, PrinterStateFetcher]:
    """fetchers, each already asking its printer's OctoPrint on the config's port in pool; collect
    uses an answer only for a unit systemd says is active, and asks anew on another port (a port
    change held back for a print)."""
    started = {
        name: (port, pool.submit(fetchers[name], name, port)) for name, port in ports.items() if name in fetchers
    }

    def answer(name: str, fetch: PrinterStateFetcher) -> PrinterStateFetcher:
        def fetch_early(_name: str, port: int) -> tuple[str | None, float | None]:
            asked_port, future = started.get(name, (None, None))
            if future is not None and asked_port == port:
                return future.result()
            return fetch(name, port)

        return fetch_early

    return {name: answer(name, fetch) for name, fetch in fetchers.items()}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output (schema in the README)")
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to SECONDS until every running OctoPrint answers (the installer uses it)",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="only these printers and cameras")


def main(args: argparse.Namespace, layout: Layout | None = None) -> int:
    """`octobrixctl status`; layout is for tests (status has no --root: it asks the running systemd)."""
    layout = layout or Layout()
    config, errors, hint = farm_config(args, layout)
    removed = removed_printers(config, read_manifest(layout).deferred)
    unknown = [n for n in args.names if n not in config.printers and n not in config.cameras and n not in removed]
    if unknown:
        raise OctobrixError(
            f"no printer or camera named {', '.join(unknown)} in {args.config}",
            hint="`octobrixctl status` with no names lists them all",
        )
    units = [octoprint_unit(n) for n in [*config.printers, *removed]]
    units += [streamer_unit(config, n) for n in config.cameras]
    fetchers: dict[str, PrinterStateFetcher] = {}
    need_root: list[str] = []
    for name in [*config.printers, *removed]:
        try:
            credentials = read_credentials(layout, name)
        except CredentialsNeedRootError:
            need_root.append(name)
            credentials = None
        except OctobrixError:
            credentials = None
        fetchers[name] = fetch_printer_state(credentials.api_key if credentials else None)
    notes = [NEEDS_ROOT_NOTE] if need_root else []
    deadline = time.monotonic() + max(0.0, args.wait)
    retries = recovery.read_schedule(layout)
    wanted = [n for n in config.printers if not args.names or n in args.names]
    while True:
        with ThreadPoolExecutor(max_workers=min(16, max(1, len(wanted)))) as pool:
            # The OctoPrints are asked while systemd is: together they were most of status's work.
            early = asked_early(fetchers, {n: config.printers[n].port for n in wanted}, pool)
            props = query_units(units)
        deferred = read_manifest(layout).deferred
        printers, cameras = collect(
            config,
            layout,
            props,
            early,
            public_host_of(config),
            names=args.names,
            deferred=deferred,
            plugins=args.json,  # the table does not show them; reading them costs ~8 ms a printer
            journal=journal_tail,
            retries=retries,
        )
        if not settling(printers, need_root) or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    failed_backups = backup_state.status_lines(layout, config, args.names)
    if args.json:
        output = to_json(printers, cameras, errors=errors, notes=notes, backup_failures=failed_backups)
    else:
        output = format_table(printers, cameras, errors=[*errors, *([hint] if hint else [])], notes=notes)
        output += "".join(f"\n{line}" for line in failed_backups)
    sys.stdout.write(output + "\n")
    return EXIT_CONFIG_ERRORS if errors else 0
