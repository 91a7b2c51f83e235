"""`octobrixctl import [--from SOURCE] [--dry-run]`: move a farm in from octoprint_deploy, KIAUH or a
plain OctoPrint. The dry run shows everything the real run does."""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Callable
from types import ModuleType

from octobrixd.cliargs import add_config_argument, add_root_argument
from octobrixd.config.edit import checked, edited
from octobrixd.config.model import load_config
from octobrixd.errors import OctobrixError
from octobrixd.importers import kiauh, octoprint_deploy, plain
from octobrixd.importers.move import going_back, run_import
from octobrixd.importers.plan import ImportPlan, make_import_plan
from octobrixd.importers.sources import Found, Source
from octobrixd.instances.instance import Instance
from octobrixd.names import octoprint_unit
from octobrixd.system.paths import Layout

READERS: dict[Source, ModuleType] = {
    Source.OCTOPRINT_DEPLOY: octoprint_deploy,
    Source.KIAUH: kiauh,
    Source.OCTOPRINT: plain,
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Move printers in from octoprint_deploy, KIAUH or a plain OctoPrint: config entries under their old "
        "names, their settings, users, uploads, timelapses and plugins; the old units are disabled, their files kept."
    )
    add_config_argument(parser)
    add_root_argument(parser)
    parser.add_argument("--from", dest="source", choices=[s.value for s in Source], help="which tool (default: found)")
    parser.add_argument("--dry-run", action="store_true", help="show everything it would do, change nothing")


def detect(layout: Layout) -> Source:
    # octoprint_deploy's list names its instances, the ~/.octoprint it started from included.
    if octoprint_deploy.present(layout):
        return Source.OCTOPRINT_DEPLOY
    found = [source for source in (Source.KIAUH, Source.OCTOPRINT) if READERS[source].present(layout)]
    if not found:
        raise OctobrixError(
            "found no octoprint_deploy farm, KIAUH OctoPrint or ~/.octoprint on this computer",
            hint="name the tool with --from if its files are there",
        )
    if len(found) > 1:
        raise OctobrixError(
            f"found both {' and '.join(found)} OctoPrints here",
            hint="import one at a time: --from kiauh or --from octoprint",
        )
    return found[0]


def describe(plan: ImportPlan, config_text: str, new_text: str, layout: Layout) -> list[str]:
    lines = []
    for move in plan.printers:
        old = move.old
        bound = (
            f"serial {old.serial}" if "serial" in move.entry else f"USB port {old.usb_port}" if "usb_port" in move.entry
            else "virtual"
        )  # fmt: skip
        lines.append(f"printer {move.name}: from {old.name} ({old.unit}, port {old.port}, {bound})")
        lines.append(
            f"  copy {old.basedir} ({move.size.text()}: settings, users, uploads, timelapses, plugin data) "
            f"into {Instance(move.name, layout).basedir}"
        )
        lines.append(
            f"  OctoPrint {move.octoprint or '(none found)'} from {old.venv}"
            + (f"; carry its plugins {', '.join(move.plugins)}" if move.plugins else "; no plugins of the user's there")
        )
        for skipped in move.size.skipped:
            lines.append(f"  leave out {skipped}")
        for link in move.size.links:
            lines.append(f"  keep as a link, not followed: {link}")
        lines.append(f"  start {octoprint_unit(move.name)}; once it answers, disable {old.unit} (its files stay)")
    for camera in plan.cameras:
        lines.append(f"camera {camera.name}: from {camera.old.name} ({camera.old.unit}, port {camera.entry['port']}); "
                     f"disable {camera.old.unit}")  # fmt: skip
    diff = difflib.unified_diff(
        config_text.splitlines(keepends=True), new_text.splitlines(keepends=True), "config now", "config after"
    )
    lines.append("config entries:")
    lines += [line.rstrip("\n") for line in diff]
    return lines


def main(args: argparse.Namespace) -> int:
    layout = Layout(args.root)
    if layout.live and not args.dry_run and os.geteuid() != 0:
        raise OctobrixError(
            "import writes the config, builds OctoPrints and stops the old units: run it as root",
            hint="sudo octobrixctl import (or first `octobrixctl import --dry-run`)",
        )
    config = load_config(args.config)
    source = Source(args.source) if args.source else detect(layout)
    found: Found = READERS[source].discover(layout)
    plan = make_import_plan(found, config, layout)
    say: Callable[[str], None] = print
    for message in plan.messages:
        say(f"note: {message}")
    if plan.empty:
        already = f" (already moved in: {', '.join(plan.done)})" if plan.done else ""
        say(f"Nothing left to import from {source}{already}.")
        return 0
    text = args.config.read_text(encoding="utf-8")
    new_text = edited(text, plan.edits())
    checked(new_text, str(args.config))  # a plan whose config would not load fails here, dry run or not
    if args.dry_run:
        say(f"Would import from {source} (dry run: nothing is changed):")
        for line in describe(plan, text, new_text, layout):
            say(line)
        say(f"then `octobrixctl apply`; {going_back(plan, args.config)}")
        return 0
    run_import(plan, args.config, layout, say)
    names = ", ".join(m.name for m in plan.printers) or "none"
    say(f"Imported from {source}: printers {names}; {len(plan.cameras)} cameras. {going_back(plan, args.config)}")
    return 0
