"""`octobrixctl upgrade [NAME...] [--to REQUIREMENT] [--check] [--force]`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from octobrixd.cliargs import add_config_argument, printers_named
from octobrixd.config.model import Config, load_config
from octobrixd.errors import OctobrixError
from octobrixd.instances.instance import Instance
from octobrixd.instances.running import printing_now
from octobrixd.instances.venv_contents import InstalledPlugin, canonical
from octobrixd.instances.venv_contents import report as venv_report
from octobrixd.system.paths import Layout
from octobrixd.upgrades import engine, health, plugin_check, versions
from octobrixd.upgrades.plugin_check import PluginUpdate, Source


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Move printers to another OctoPrint (no NAME: every printer; no --to: the newest release of the "
        "major version each runs), one after another and never during a print: a rollback point first, "
        "the new OctoPrint built with the printer's plugins, a restart and a health check; a printer that "
        "fails the check is put back by itself."
    )
    add_config_argument(parser)
    parser.add_argument("names", nargs="*", metavar="NAME", help="only these printers")
    parser.add_argument("--to", metavar="REQUIREMENT", help="the OctoPrint to move to, e.g. octoprint==1.11.8")
    parser.add_argument(
        "--check", action="store_true",
        help="only show what each printer runs and could move to, its plugins' updates included; changes nothing",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="with --check: the same as JSON (schema in docs/json.md)")
    parser.add_argument(
        "--force", action="store_true", help="do not wait for a print to end (a restart ends the print)"
    )
    parser.add_argument(
        "--timeout", type=float, default=health.TIME_LIMIT, metavar="SECONDS",
        help=f"how long the health check waits for each printer (default {health.TIME_LIMIT:.0f})",
    )  # fmt: skip


@dataclass(frozen=True)
class Row:
    name: str
    running: str | None
    requirement: str
    target: str | None  # None: nothing newer


def available(config: Config, layout: Layout, names: list[str]) -> tuple[list[str], Source]:
    """OctoPrint's releases, and where they were read (for the plugins too)."""
    if config.octobrix.wheels is not None:
        folder = Path(config.octobrix.wheels)
        listing = versions.wheels_listing(folder)
        return versions.versions_in_folder(listing), Source(folder, versions.files_in_folder(listing))
    return versions.from_index(), Source(None, {})


def octoprint_line(row: Row, source: str, known: bool) -> str:
    running = f"OctoPrint {row.running}" if row.running else "no OctoPrint yet"
    if not known:
        return f"{row.name}: runs {running} ({row.requirement}); newer releases unknown ({source} could not be read)"
    if row.target is None:
        return f"{row.name}: runs {running} ({row.requirement}); nothing newer in {source}"
    return (
        f"{row.name}: runs {running} ({row.requirement}); can move to {row.target} "
        f"(from {source}): `sudo octobrixctl upgrade {row.name}`"
    )


def check_text(rows: list[Row], source: str, plugins: dict[str, list[PluginUpdate]], known: bool = True) -> str:
    """Per printer its OctoPrint line, then one aligned line per plugin update (no plugin lines for a
    printer whose venv could not be read, or when the source could not)."""
    widths = plugin_check.widths_of([(plugins[r.name], r.requirement) for r in rows if r.name in plugins])
    lines = []
    for row in rows:
        lines.append(octoprint_line(row, source, known))
        if row.name in plugins:
            lines += plugin_check.plugin_lines(plugins[row.name], row.requirement, widths)
    return "\n".join(lines)


def check_json(
    rows: list[Row], source: str, plugins: dict[str, list[PluginUpdate]], errors: list[OctobrixError]
) -> str:
    body = {
        "version": plugin_check.SCHEMA_VERSION,
        "source": source,
        "errors": [{"message": e.message, "hint": e.hint} for e in errors],
        "printers": [
            {
                "name": row.name,
                "octoprint_version": row.running,
                "octoprint_requirement": row.requirement,
                "octoprint_update": row.target if not errors else None,
                "command": f"sudo octobrixctl upgrade {row.name}" if row.target and not errors else None,
                "plugins": [plugin_check.to_json(u) for u in plugins[row.name]] if row.name in plugins else None,
            }
            for row in rows
        ],
    }
    return json.dumps(body, indent=2)


def plugin_updates(config: Config, layout: Layout, rows: list[Row], source: Source) -> dict[str, list[PluginUpdate]]:
    """Each installed printer's plugins against source; a project asked once for the whole farm."""
    asked: dict[str, tuple[str | None, str | None]] = {}
    out = {}
    for row in rows:
        if row.running is None:
            continue  # nothing installed, or not readable without root

        def newest_of(plugin: InstalledPlugin) -> tuple[str | None, str | None]:
            key = canonical(plugin.name)
            if key not in asked:
                asked[key] = plugin_check.newest_in(source, plugin)
            return asked[key]

        report = venv_report(layout, config, row.name)  # its metadata, read
        out[row.name] = plugin_check.check_printer(
            row.name, report.plugins, requirements=config.printers[row.name].plugins, source=source,
            instance=Instance(row.name, layout), pin=row.requirement, newest_of=newest_of,
        )  # fmt: skip
    return out


def check(config: Config, layout: Layout, names: list[str], to: str | None, as_json: bool) -> int:
    """--check: what runs, what it could move to and the plugins' updates; nothing changes. A source that
    cannot be read is one error at the end (stderr), after what each printer runs."""
    errors: list[OctobrixError] = []
    try:
        releases, source = available(config, layout, names)
    except OctobrixError as error:
        errors.append(error)
        releases = []
        wheels = config.octobrix.wheels
        source = Source(Path(wheels) if wheels is not None else None, {})
    rows = []
    for name in names:
        running = engine.running_version(layout, name)
        rows.append(Row(name, running, config.octoprint_requirement(name), versions.target_for(to, running, releases)))
    plugins = plugin_updates(config, layout, rows, source) if not errors else {}
    if as_json:
        print(check_json(rows, source.label, plugins, errors))
    else:
        print(check_text(rows, source.label, plugins, known=not errors))
    for problem in errors:
        print(f"octobrixctl: {problem.message}", file=sys.stderr)
        if problem.hint:
            print(f"hint: {problem.hint}", file=sys.stderr)
    return 1 if errors else 0


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    layout = Layout()
    names = printers_named(config, args.config, args.names, "upgrade")
    to = versions.check_to(args.to, names[0]) if args.to is not None else None
    if args.timeout <= 0:
        raise OctobrixError(f"--timeout {args.timeout:g}: must be more than 0 seconds", hint="--timeout 240")
    if args.json and not args.check:
        raise OctobrixError("--json goes with --check only", hint="octobrixctl upgrade --check --json")
    if args.check:
        return check(config, layout, names, to, args.json)
    releases, found = available(config, layout, names)
    source = found.label
    rows = []
    for name in names:
        running = engine.running_version(layout, name)
        target = versions.target_for(to, running, releases)
        rows.append(Row(name, running, config.octoprint_requirement(name), target))
    if os.geteuid() != 0:
        raise OctobrixError("upgrade changes the printers' OctoPrint: run it as root", hint="sudo octobrixctl upgrade")
    todo = []
    for row in rows:
        if row.target is None:
            print(f"{row.name}: OctoPrint {row.running} is the newest release of its major version in {source}")
        elif to is None and row.running is not None and versions.pinned_version(row.target) == row.running:
            print(f"{row.name}: already on {row.target}")
        else:
            todo.append(row)
    ctx = engine.Context(args.config, layout, force=args.force, time_limit=args.timeout)
    return run_all(ctx, todo, releases)


def run_all(ctx: engine.Context, rows: list[Row], releases: list[str]) -> int:
    """One printer after another, idle ones first; the first that fails stops the rest."""
    remaining = list(rows)
    busy = printing_now(ctx.layout)
    announced: set[str] = set()
    while remaining:
        ready = [r for r in remaining if ctx.force or not busy(r.name)]
        if not ready:
            for row in remaining:
                if row.name not in announced:
                    ctx.say(f"{row.name} is printing: waiting for the print to end (--force does not wait)")
                    announced.add(row.name)
            time.sleep(engine.WAIT_POLL)
            continue
        row = ready[0]
        target = row.target or ""  # rows without a target were left out by main
        try:
            done = engine.upgrade_one(ctx, row.name, target, versions.expected_version(target, releases))
        except OctobrixError as error:
            rest = [r.name for r in remaining if r is not row]
            print(f"octobrixctl: {error.message}", file=sys.stderr)
            if error.hint:
                print(f"hint: {error.hint}", file=sys.stderr)
            stopped = health.stopped_message(row.name, rest)
            if stopped is not None:
                print(stopped, file=sys.stderr)
            return 1
        if done:
            remaining.remove(row)
    return 0
