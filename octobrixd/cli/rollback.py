"""`octobrixctl rollback NAME`: the OctoPrint, settings and users a printer had before its last
upgrade, from what the upgrade kept (no network, no build)."""

from __future__ import annotations

import argparse
import os

from octobrixd.cliargs import add_config_argument, printers_named
from octobrixd.config.model import load_config
from octobrixd.errors import OctobrixError
from octobrixd.system.paths import Layout
from octobrixd.upgrades import engine


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Put printer NAME back on the OctoPrint it ran before its last `octobrixctl upgrade`, with the "
        "config.yaml and users it had then and its pin in the config; needs no network."
    )
    add_config_argument(parser)
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("--force", action="store_true", help="do not wait for a print to end (ends it)")
    parser.add_argument(
        "--no-wait", action="store_true", help="return once the old OctoPrint is started, before it answers"
    )


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    printers_named(config, args.config, [args.name], "roll back")
    if os.geteuid() != 0:
        raise OctobrixError("rollback changes a printer's OctoPrint: run it as root", hint="sudo octobrixctl rollback")
    ctx = engine.Context(args.config, Layout(), force=args.force)
    point, started, total = engine.rollback(ctx, args.name, check=not args.no_wait)
    answered = "" if args.no_wait else f", answering after {total:.1f} s"
    print(
        f"{args.name}: back on OctoPrint {point.version} ({point.requirement}) with the settings and users it had "
        f"before the upgrade to {point.target}; started in {started:.1f} s{answered}"
    )
    return 0
