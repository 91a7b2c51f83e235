"""`octobrixctl restore NAME FILE`: a printer's settings, users, uploads and plugins back from a backup."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

from octobrixd.backups import bundle, engine
from octobrixd.cliargs import add_config_argument
from octobrixd.config.model import load_config
from octobrixd.errors import OctobrixError
from octobrixd.system.paths import Layout


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Put an OctoPrint backup zip (from `octobrixctl backup`, or OctoPrint's own Backup & Restore) into "
        "printer NAME: stop it, let OctoPrint restore it, put octobrix's settings back, start it."
    )
    add_config_argument(parser)
    parser.add_argument("name", nargs="?", metavar="NAME", help="the printer to restore into")
    parser.add_argument("file", nargs="?", type=Path, metavar="FILE", help="the backup zip")
    parser.add_argument(
        "--bundle",
        type=Path,
        metavar="FILE",
        help="a whole farm from `backup --all --bundle`: its config, logins and every printer (a fresh install)",
    )
    parser.add_argument("--force", action="store_true", help="even while the printer prints (ends the print)")


def _bundle(args: argparse.Namespace) -> int:
    if args.name or args.file:
        raise OctobrixError("--bundle restores the whole farm", hint="`octobrixctl restore --bundle FILE`, no NAME")
    if os.geteuid() != 0:
        raise OctobrixError(
            "a bundle brings logins, keys and a config: run it as root", hint="sudo octobrixctl restore"
        )
    layout = Layout()
    with engine.backup_lock(layout):
        config = bundle.restore_bundle(
            args.bundle.absolute(), args.config, layout, force=args.force, say=print, host_name=socket.gethostname()
        )
    print(f"Restored the farm from {args.bundle}: {', '.join(sorted(config.printers))}.")
    return 0


def main(args: argparse.Namespace) -> int:
    if args.bundle is not None:
        return _bundle(args)
    if args.name is None or args.file is None:
        raise OctobrixError("restore needs a printer and a backup", hint="`octobrixctl restore NAME FILE`")
    config = load_config(args.config)
    if args.name not in config.printers:
        known = ", ".join(sorted(config.printers)) or "none"
        raise OctobrixError(
            f"no printer named {args.name} in {args.config} (printers: {known})",
            hint=f"add [printers.{args.name}] (the backup's .octobrix.json beside it has its entry), "
            "run `sudo octobrixctl apply`, then restore",
        )
    if os.geteuid() != 0:
        raise OctobrixError(
            "a restore replaces a printer's users and keys: run it as root", hint="sudo octobrixctl restore"
        )
    layout = Layout()
    with engine.backup_lock(layout):
        version = engine.restore(config, layout, args.name, args.file.absolute(), force=args.force)
    print(f"Restored {args.name} from {args.file} (OctoPrint {version}); it is starting again.")
    return 0
