"""octobrixctl: the user's interface. Errors end in one line plus a hint; tracebacks only with --debug."""

from __future__ import annotations

import argparse
import importlib
import keyword
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, cast

from octobrixd import __version__
from octobrixd.cliargs import add_config_argument, add_root_argument
from octobrixd.errors import ConfigError, OctobrixError
from octobrixd.system.paths import DEFAULT_CONFIG, Layout

# Each command imports what it needs when it runs: `status` must not pay at every start for
# apply, the renderers and every other subcommand's module (most of its run time before).
if TYPE_CHECKING:
    from octobrixd.config.model import Config
    from octobrixd.system.systemd import UnitProperties

log = logging.getLogger("octobrixctl")

# Subcommands that live in their own modules (_subcommand imports them), with their one-line help.
MODULE_COMMANDS: dict[str, str] = {
    "status": "one line per printer and camera: service, resources, printer state, URL",
    "discover": "list plugged-in printer boards and cameras, with config entries for them",
    "add": "add the printer board or camera plugged in next (or --device) to the farm",
    "kmod": "the patched uvcvideo driver for several cameras per USB bus: status, install",
    "doctor": "check the config, devices, udev rules and common troublemakers; say what to do",
    "backup": "OctoPrint's own backup of each printer, into /var/backups/octobrix",
    "restore": "a printer's settings, users, uploads and plugins back from a backup",
    "export": "the file FDM Monster or OctoFarm imports, with keys of its own (needs root)",
    "upgrade": "move printers to a newer OctoPrint; checked, undone if it fails",
    "rollback": "a printer back on the OctoPrint and settings before its upgrade",
    "import": "move printers in from octoprint_deploy, KIAUH or a plain OctoPrint",
    "url": "where a browser reaches the farm: the front door, or each printer's own port",
}


class Subcommand(Protocol):
    """What each module of MODULE_COMMANDS has."""

    def configure_parser(self, parser: argparse.ArgumentParser) -> None: ...

    def main(self, args: argparse.Namespace) -> int: ...


def command_module(name: str) -> str:
    """The module of `octobrixctl NAME`: octobrixd/cli/NAME.py, with a trailing _ for a Python keyword."""
    return f"octobrixd.cli.{name}_" if keyword.iskeyword(name) else f"octobrixd.cli.{name}"


def _subcommand(name: str) -> Subcommand:
    """The module of subcommand NAME, imported only when it is asked for."""
    if name not in MODULE_COMMANDS:
        raise KeyError(f"no subcommand module for {name!r}")
    return cast("Subcommand", importlib.import_module(command_module(name)))


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _summary(config: Config) -> str:
    printers = ", ".join(sorted(config.printers)) or "none"
    cameras = ", ".join(sorted(config.cameras)) or "none"
    return (
        f"{_plural(len(config.printers), 'printer')} ({printers}), {_plural(len(config.cameras), 'camera')} ({cameras})"
    )


def camera_warnings(config: Config, layout: Layout) -> list[str]:
    """What will keep cameras from streaming although the config is valid: they never fail a command."""
    from octobrixd.cameras.bandwidth import advise_system
    from octobrixd.cameras.streams import missing_programs

    if not config.cameras:
        return []
    warnings = advise_system(config, layout).warnings()
    if layout.live:
        # Under --root the scratch tree has no programs to look for.
        warnings += missing_programs(config, layout)
    return warnings


def warn(lines: list[str]) -> None:
    for line in lines:
        print(f"warning: {line}", file=sys.stderr)


def cmd_check(args: argparse.Namespace) -> int:
    from octobrixd.config.model import load_config
    from octobrixd.devices.serials import placeholder_warnings

    config = load_config(args.config)
    print(f"{args.config} is valid: {_summary(config)}")
    warn(placeholder_warnings(config) + camera_warnings(config, Layout(args.root)))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from octobrixd.config.model import load_config
    from octobrixd.render.tree import render_all
    from octobrixd.system.fsutil import write_atomic

    config = load_config(args.config)
    layout = Layout(args.root)
    if layout.live:
        raise OctobrixError(
            "render writes a tree for inspection and needs --root DIR",
            hint="to change this system use `octobrixctl apply`",
        )
    for rel, rendered in sorted(render_all(config).items()):
        write_atomic(layout.path(rel), rendered.text, mode=rendered.mode)
        print(layout.path(rel))
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from octobrixd.apply.plan import ChangeKind, apply_lock, apply_plan, make_plan, render_diff
    from octobrixd.config.applied import remember_applied
    from octobrixd.config.model import load_config
    from octobrixd.devices.serials import placeholder_warnings
    from octobrixd.farm.manifest import read_manifest
    from octobrixd.instances.instance import Instance
    from octobrixd.instances.recovery import cause

    config = load_config(args.config)
    layout = Layout(args.root)
    warn(placeholder_warnings(config) + camera_warnings(config, layout))
    with apply_lock(layout):
        previous = read_manifest(layout)
        failed = failed_instances(config) if layout.live else {}
        plan = make_plan(config, layout, previous, failed=list(failed))
        if plan.empty:
            remember_applied(layout, config)
            print(f"Nothing to do: the system already matches {args.config}.")
            return 0
        if args.dry_run:
            sys.stdout.write(render_diff(plan))
            for unit in plan.recover:
                print(f"{unit} has failed: its OctoPrint {cause(failed[unit])}; `journalctl -u {unit}` says why")
            for name in plan.state_dirs:
                print(f"would set up {Instance(name, layout).state_dir} (root's; basedir/ and home/ the printer's)")
            for leftover in plan.leftovers:
                print(f"would remove {layout.path(leftover)} (left by an interrupted apply)")
            where = "would run" if layout.live else "would run on a live system (skipped under --root)"
            for command in plan.commands():
                print(f"{where}: {command}")
            return 0
        result = apply_plan(plan, layout, previous, force=args.force)
        # status lists the farm from this copy while a later edit of the config has mistakes.
        remember_applied(layout, config)
    removed = sum(1 for change in plan.files if change.kind is ChangeKind.REMOVE)
    written = len(plan.files) - removed
    # A run that only repeats a held-back restart writes nothing: say what it did instead.
    acted = plan.restart or plan.stop or plan.start or plan.recover
    parts = [f"wrote {_plural(written, 'file')}"] if written or not acted else []
    if removed:
        parts.append(f"removed {_plural(removed, 'file')}")
    if layout.live:
        restarted = [u for u in plan.restart if u not in result.deferred]
        stopped = [u for u in plan.stop if u not in result.deferred]
        for verb, units in (("started", plan.start), ("restarted", restarted), ("stopped", stopped)):
            if units:
                parts.append(f"{verb} {' '.join(units)}")
        for unit in plan.recover:
            parts.append(f"started {unit} again (it had failed: its OctoPrint {cause(failed[unit])})")
        if result.deferred:
            parts.append(
                f"held back {' '.join(result.deferred)} (printing; octobrixd does it when the print ends, "
                "`octobrixctl apply --force` now)"
            )
    else:
        parts.append(f"left systemd and udev alone (--root {layout.root})")
    print(f"Applied {args.config}: {'; '.join(parts)}.")
    return 0


def failed_instances(config: Config) -> dict[str, UnitProperties]:
    """The configured printers' units that systemd has as failed, with their properties."""
    from octobrixd.farm.status import query_units
    from octobrixd.instances.recovery import failed_units
    from octobrixd.names import octoprint_unit

    units = [octoprint_unit(name) for name in config.printers]
    return failed_units(query_units, units)


def cmd_credentials(args: argparse.Namespace) -> int:
    from octobrixd.config.model import load_config
    from octobrixd.instances.credentials import CredentialsNeedRootError, read_credentials, read_farm_credentials
    from octobrixd.urls import farm_base, public_host_of

    config = load_config(args.config)
    names = args.names or sorted(config.printers)
    rows = []
    host = public_host_of(config)
    if config.frontdoor.enabled and not args.names:
        farm = read_farm_credentials(Layout())
        base = farm_base(config, host)
        rows.append(
            f"farm login: {base}  user {farm.username}  password {farm.password}"
            if farm is not None
            else "farm login: not set up yet — run `sudo octobrixctl apply`"
        )
    if config.frontdoor.enabled and config.frontdoor.https and not args.names:
        from octobrixd.frontdoor.tls import read_certificate

        made = read_certificate(config, Layout())
        rows.append(
            f"https certificate: SHA-256 {made.fingerprint}  (valid until {made.expires:%Y-%m-%d}; a browser that "
            "warns about it shows this fingerprint in its certificate viewer)"
            if made is not None
            else "https certificate: not made yet — run `sudo octobrixctl apply`"
        )
    if config.frontdoor.enabled and config.frontdoor.metrics and not args.names:
        from octobrixd.frontdoor.secrets import read_metrics_token

        token = read_metrics_token(Layout())
        metrics_url = farm_base(config, host) + "metrics"
        rows.append(
            f"metrics token: {token}  (Prometheus: authorization credentials, for {metrics_url})"
            if token is not None
            else "metrics token: not made yet — run `sudo octobrixctl apply`"
        )
    for name in names:
        if name not in config.printers:
            raise OctobrixError(f"no printer named {name} in {args.config}", hint="see `octobrixctl status`")
        try:
            credentials = read_credentials(Layout(), name)
        except CredentialsNeedRootError as error:
            raise OctobrixError(
                f"credentials needs root: each OctoPrint's login is readable by root only (in {error.path.parent})",
                hint="sudo octobrixctl credentials",
            ) from None
        if credentials is None:
            rows.append(f"{name}: not set up yet — run `sudo octobrixctl apply`")
            continue
        port = config.printers[name].port
        rows.append(f"{name}: http://{host}:{port}/  user {credentials.username}  password {credentials.password}")
    print("\n".join(rows))
    return 0


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand argv names: its first word that is not an option (top-level options take no value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given argv, it imports only the module of the subcommand argv names (without, all)."""
    parser = argparse.ArgumentParser(
        prog="octobrixctl",
        description=f"Run a farm of 3D printers from one Linux computer. The farm is described in {DEFAULT_CONFIG}.",
    )
    parser.add_argument("--version", action="version", version=f"octobrix {__version__}")
    parser.add_argument("--debug", action="store_true", help="log every command run, show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = sub.add_parser("check", help="validate the config; every problem with its line")
    add_config_argument(check)
    add_root_argument(check)
    check.set_defaults(func=cmd_check)

    render = sub.add_parser("render", help="write every generated file under --root DIR, touch nothing else")
    add_config_argument(render)
    add_root_argument(render)
    render.set_defaults(func=cmd_render)

    apply = sub.add_parser("apply", help="make the system match the config")
    add_config_argument(apply)
    add_root_argument(apply)
    apply.add_argument("--dry-run", action="store_true", help="print the changes and commands, change nothing")
    apply.add_argument(
        "--force", action="store_true", help="restart instances even while their printer is printing (ends the print)"
    )
    apply.set_defaults(func=cmd_apply)

    credentials = sub.add_parser("credentials", help="the farm login, then each OctoPrint's admin login (needs root)")
    add_config_argument(credentials)
    credentials.add_argument("names", nargs="*", metavar="NAME")
    credentials.set_defaults(func=cmd_credentials)

    chosen = _command_in(argv) if argv is not None else None
    for name, help_text in MODULE_COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text)
        # argparse reads only the chosen subcommand's arguments: the others need no options.
        if chosen is None or chosen == name:
            _subcommand(name).configure_parser(sub_parser)
        sub_parser.set_defaults(func=_module_main(name))
    return parser


def _module_main(name: str) -> Callable[[argparse.Namespace], int]:
    def call(args: argparse.Namespace) -> int:
        return _subcommand(name).main(args)

    return call


def report_error(prog: str, error: OctobrixError) -> None:
    if isinstance(error, ConfigError):
        for problem in error.problems:
            print(problem, file=sys.stderr)
    else:
        print(f"{prog}: {error.message}", file=sys.stderr)
    if error.hint:
        print(f"hint: {error.hint}", file=sys.stderr)


def setup_logging(debug: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words)
    args = parser.parse_args(words)
    setup_logging(args.debug)
    try:
        status: int = args.func(args)
    except OctobrixError as error:
        if args.debug:
            raise
        report_error(parser.prog, error)
        return 1
    except KeyboardInterrupt:
        return 130
    except PermissionError as error:
        if args.debug:
            raise
        print(f"{parser.prog}: {error.strerror}: {error.filename}", file=sys.stderr)
        print("hint: run it as root (sudo), or use --root DIR to work on a scratch tree", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
