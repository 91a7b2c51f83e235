"""`octobrixctl backup`: OctoPrint's own backup zip of each printer, with octobrix's side file."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from octobrixd.backups import archive, bundle, engine
from octobrixd.cliargs import add_config_argument, printers_named
from octobrixd.config.model import Config, load_config
from octobrixd.errors import OctobrixError
from octobrixd.farm import backup_state as state
from octobrixd.system.paths import Layout

log = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write OctoPrint's own backup zip of each printer (no NAME: every printer) into "
        f"/{archive.BACKUP_ROOT}/NAME/, with octobrix's side file (config entry, plugins, OctoPrint version)."
    )
    add_config_argument(parser)
    parser.add_argument("names", nargs="*", metavar="NAME", help="only these printers")
    parser.add_argument(
        "--exclude", action="append", choices=engine.EXCLUDABLE, default=[], help="leave this out (repeatable)"
    )
    parser.add_argument("--to", type=Path, metavar="DIR", help="write into DIR/NAME/ instead")
    parser.add_argument("--wait", action="store_true", help="for a printer that prints, wait until its print ends")
    parser.add_argument("--keep", type=int, metavar="N", help="then keep only the newest N backups of each printer")
    parser.add_argument("--all", action="store_true", help="every printer (the same as no NAME)")
    parser.add_argument(
        "--bundle",
        type=Path,
        metavar="FILE",
        help="the whole farm in one root-only FILE: config, every printer's backup, the generated logins and keys",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable result")
    parser.add_argument(
        "--scheduled",
        action="store_true",
        help="what octobrix-backup.service runs: every printer, keeping backup_keep of each",
    )


def _check_target(target: Path) -> None:
    """A bad --to fails before any backup is made."""
    probe = target
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise OctobrixError(
            f"cannot write backups to {target} ({probe} is not a folder this user can write)",
            hint="pick another --to DIR, or run as root (sudo)",
        )


def _bundle(args: argparse.Namespace, config: Config) -> int:
    if args.names or args.exclude or args.to or args.keep or args.scheduled:
        raise OctobrixError(
            "--bundle takes the whole farm as it is", hint="`octobrixctl backup --all --bundle FILE`, nothing else"
        )
    if not config.printers:
        raise OctobrixError(f"no printers in {args.config}: nothing to bundle", hint="add a [printers.NAME] first")
    if os.geteuid() != 0:
        raise OctobrixError("a bundle holds every login and key: run it as root", hint="sudo octobrixctl backup")
    layout = Layout()
    target = args.bundle.absolute()
    with engine.backup_lock(layout):
        if args.wait:
            for name in sorted(config.printers):
                engine.wait_until_idle(layout, name, print)
        bundle.write_bundle(config, args.config, layout, target, print)
    print(f"wrote {target}: the config, {len(config.printers)} printers' backups and their logins (root only)")
    return 0


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    layout = Layout()
    if args.all and args.names:
        raise OctobrixError("--all and printer names do not go together", hint="name printers, or use --all")
    if args.bundle is not None:
        return _bundle(args, config)
    names = printers_named(config, args.config, [] if args.scheduled else args.names, "back up")
    if args.keep is not None and args.keep < 1:
        raise OctobrixError(f"--keep {args.keep}: keep at least 1", hint="--keep 7 keeps the newest seven")
    if args.to is not None:
        _check_target(args.to)
    if os.geteuid() != 0:
        raise OctobrixError(
            "backups hold every printer's users and keys: run it as root", hint="sudo octobrixctl backup"
        )
    keep = config.octobrix.backup_keep if args.scheduled else args.keep
    made: list[engine.Made] = []
    results: list[state.LastBackup] = []
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    with engine.backup_lock(layout):
        for name in names:
            try:
                if args.wait:
                    engine.wait_until_idle(layout, name, say)
                one = engine.make_backup(config, layout, name, target=args.to, excludes=tuple(args.exclude), keep=keep)
            except OctobrixError as error:
                results.append(
                    state.LastBackup(name, state.now_text(), False, error=error.message, scheduled=args.scheduled)
                )
                print(f"backup of {name} failed: {error.message}", file=sys.stderr)
                if error.hint:
                    print(f"hint: {error.hint}", file=sys.stderr)
                continue
            made.append(one)
            results.append(
                state.LastBackup(name, state.now_text(), True, file=str(one.zip_path), scheduled=args.scheduled)
            )
            if not args.json:
                pruned = f"; removed {len(one.pruned)} older" if one.pruned else ""
                print(f"{name}: {one.zip_path} ({one.size / 1e6:.1f} MB, {one.seconds:.0f} s{pruned})")
        if args.to is None:
            state.record(layout, results)
    if args.json:
        body = {
            "backups": [
                {"name": m.name, "file": str(m.zip_path), "size_bytes": m.size, "seconds": round(m.seconds, 1),
                 "pruned": [str(p) for p in m.pruned]}
                for m in made
            ],
            "failed": [{"name": r.name, "error": r.error} for r in results if not r.ok],
        }  # fmt: skip
        print(json.dumps(body, indent=2))
    return 0 if all(r.ok for r in results) else 1
