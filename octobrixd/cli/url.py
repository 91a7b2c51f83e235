"""`octobrixctl url [NAME...]`: where a browser reaches the farm, or printers NAME; the address the
installer ends with (octobrixd/urls.py builds it, as it builds status's and export's)."""

from __future__ import annotations

import argparse
import sys

from octobrixd.cliargs import add_config_argument, printers_named
from octobrixd.config.model import load_config
from octobrixd.urls import browser_addresses, printer_url, public_host_of


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Print where a browser reaches the farm, one address a line, each followed by what it leads to: "
        "the front door (http://HOST[:PORT]/), or with the front door off each printer's own port. "
        "With NAMEs, those printers' OctoPrints."
    )
    add_config_argument(parser)
    parser.add_argument("names", nargs="*", metavar="NAME", help="only these printers")


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    host = public_host_of(config)
    if args.names:
        chosen = printers_named(config, args.config, args.names, "show")
        rows = [(printer_url(config, name, host, config.printers[name].port), name) for name in chosen]
    else:
        rows = browser_addresses(config, host)
    if not rows:
        print(
            f"no printers in {args.config} yet, and its front door is off: each printer will be at its own port",
            file=sys.stderr,
        )
    width = max((len(url) for url, _what in rows), default=0)
    for url, what in rows:
        print(f"{url.ljust(width)}  {what}")
    return 0
