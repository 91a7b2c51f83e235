"""`octobrixctl upgrade [NAME...] [--to REQUIREMENT] [--check] [--force]`."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from octobrixd.apply import printing_now
from octobrixd.cliargs import add_config_argument, printers_named
from octobrixd.config import Config, load_config
from octobrixd.errors import OctobrixError
from octobrixd.paths import Layout
from octobrixd.upgrades import engine, health, versions
from octobrixd.venvs import venv_link


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
    parser.add_argument("--check", action="store_true", help="only show what each printer runs and could move to")
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


def available(config: Config, layout: Layout, names: list[str]) -> tuple[list[str], str]:
    """OctoPrint's releases, and where they were read."""
    if config.octobrix.wheels is not None:
        folder = Path(config.octobrix.wheels)
        return versions.from_wheels(folder), f"the wheels folder {folder}"
    return versions.from_index(venv_link(layout, names[0])), "the package index"


def check_text(rows: list[Row], source: str) -> str:
    lines = []
    for row in rows:
        running = f"OctoPrint {row.running}" if row.running else "no OctoPrint yet"
        if row.target is None:
            lines.append(f"{row.name}: runs {running} ({row.requirement}); nothing newer in {source}")
        else:
            lines.append(
                f"{row.name}: runs {running} ({row.requirement}); can move to {row.target} "
                f"(from {source}): `sudo octobrixctl upgrade {row.name}`"
            )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    layout = Layout()
    names = printers_named(config, args.config, args.names, "upgrade")
    to = versions.check_to(args.to, names[0]) if args.to is not None else None
    if args.timeout <= 0:
        raise OctobrixError(f"--timeout {args.timeout:g}: must be more than 0 seconds", hint="--timeout 240")
    releases, source = available(config, layout, names)
    rows = []
    for name in names:
        running = engine.running_version(layout, name)
        target = versions.target_for(to, running, releases)
        rows.append(Row(name, running, config.octoprint_requirement(name), target))
    if args.check:
        print(check_text(rows, source))
        return 0
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
