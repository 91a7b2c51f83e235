"""`octobrixctl status`: every printer and camera at a glance (the rows: octobrixd/farm/status.py)."""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import TYPE_CHECKING

from octobrixd.cliargs import add_config_argument
from octobrixd.config.view import FarmView, load_view
from octobrixd.errors import ConfigError, OctobrixError
from octobrixd.farm import backup_state
from octobrixd.farm.manifest import read_manifest
from octobrixd.farm.status import (
    CameraStatus,
    Failure,
    PrinterStateFetcher,
    PrinterStatus,
    UnitStatus,
    collect,
    drift_notes,
    fetch_printer_state,
    query_units,
    removed_printers,
    settling,
)
from octobrixd.instances import recovery
from octobrixd.instances.credentials import CredentialsNeedRootError, read_credentials
from octobrixd.names import octoprint_unit, streamer_unit
from octobrixd.system.paths import Layout
from octobrixd.system.systemd import UnitState, journal_tail
from octobrixd.urls import public_host_of

if TYPE_CHECKING:
    from octobrixd.config.model import Config

JSON_VERSION = 1
# The farm is listed, from the last config that applied, but the config file has mistakes.
EXIT_CONFIG_ERRORS = 3
NEEDS_ROOT_NOTE = (
    "printer states (Operational, Printing 42%...) need the root-only OctoPrint logins: "
    "`sudo octobrixctl status` adds them"
)


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
    return row.state if row.state != UnitState.ACTIVE else f"active ({row.sub_state})"


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
    from octobrixd.config.applied import last_applied
    from octobrixd.config.model import load_config

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
    parser.add_argument("--json", action="store_true", help="machine-readable output (schema in docs/json.md)")
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
