"""`octobrixctl export fdm-monster|octofarm [NAME…]`: the import file, with a key of the tool's own."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

from octobrixd.cliargs import add_config_argument
from octobrixd.config.model import Config, load_config
from octobrixd.errors import OctobrixError
from octobrixd.export.formats import APP_IDS, ExportedPrinter, Tool, render
from octobrixd.export.keys import revoke_tool_key, tool_key
from octobrixd.instances.api import ApiError
from octobrixd.instances.credentials import Credentials, CredentialsNeedRootError, read_credentials
from octobrixd.names import octoprint_instance
from octobrixd.system.fsutil import write_atomic
from octobrixd.system.paths import Layout
from octobrixd.urls import camera_url, printer_url


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Print the file FDM Monster (Settings > import YAML, or POST /api/server/yaml-import) or OctoFarm "
        "(printer import, JSON) takes, with an OctoPrint application key of that tool's own on every printer "
        "(needs root). --revoke removes those keys again; octobrix's own keys stay."
    )
    parser.add_argument("tool", choices=[tool.value for tool in Tool], help="the farm manager")
    parser.add_argument("names", nargs="*", metavar="NAME", help="only these printers (default: every printer)")
    parser.add_argument("--output", type=Path, metavar="FILE", help="write FILE (root-only: it holds keys)")
    parser.add_argument("--revoke", action="store_true", help="remove the tool's key from each printer instead")
    add_config_argument(parser)


def _chosen(config: Config, names: list[str], source: Path) -> list[str]:
    for name in names:
        if name not in config.printers:
            raise OctobrixError(f"no printer named {name} in {source}", hint="`octobrixctl status` lists them")
    return names or sorted(config.printers)


def _admin_credentials(layout: Layout, name: str, command: str) -> Credentials:
    try:
        credentials = read_credentials(layout, name)
    except CredentialsNeedRootError as error:
        raise OctobrixError(
            f"export needs root: the keys it hands out are made with each OctoPrint's admin key, readable by "
            f"root only (in {error.path.parent})",
            hint=f"sudo {command}",
        ) from None
    if credentials is None:
        raise OctobrixError(f"{name} has no admin key yet", hint="run `sudo octobrixctl apply` first")
    return credentials


def _unreachable(name: str, error: ApiError) -> OctobrixError:
    return OctobrixError(
        f"cannot ask {name}'s OctoPrint for a key: {error}",
        hint=f"see `octobrixctl status {name}`; `sudo systemctl start {octoprint_instance(name)}` starts it",
    )


def _check_reachable(config: Config) -> None:
    if config.services_listen() != config.octobrix.listen:
        raise OctobrixError(
            "frontdoor.direct_ports: false keeps every OctoPrint's own port on this computer, and a farm manager "
            "talks to each OctoPrint on its own port",
            hint="set direct_ports = true in [frontdoor], run `sudo octobrixctl apply`, then export again",
        )
    if ipaddress.ip_address(config.octobrix.listen).is_loopback:
        raise OctobrixError(
            f"octobrix.listen: {config.octobrix.listen} keeps every OctoPrint's own port on this computer, and "
            "a farm manager talks to each OctoPrint on its own port (its live socket cannot pass the front "
            "door's farm login)",
            hint='set listen = "::" in [octobrix], run `sudo octobrixctl apply`, then export again',
        )


def main(args: argparse.Namespace) -> int:
    tool = Tool(args.tool)
    config = load_config(args.config)
    layout = Layout()
    names = _chosen(config, list(args.names), args.config)
    command = " ".join(["octobrixctl", "export", tool.value, *args.names, *(["--revoke"] if args.revoke else [])])
    admins = {name: _admin_credentials(layout, name, command) for name in names}
    if args.revoke:
        for name in names:
            try:
                removed = revoke_tool_key(config.printers[name].port, admins[name].api_key, tool)
            except ApiError as error:
                raise _unreachable(name, error) from None
            print(f"{name}: {APP_IDS[tool]}'s key {'revoked' if removed else 'was not there'}")
        return 0
    _check_reachable(config)
    host = config.octobrix.public_host or "localhost"
    printers = []
    for name in names:
        printer = config.printers[name]
        try:
            key = tool_key(printer.port, admins[name].api_key, tool)
        except ApiError as error:
            raise _unreachable(name, error) from None
        printers.append(
            ExportedPrinter(
                name=name,
                # Each OctoPrint's own port: the tools keep a live socket to it, and the front door lets a
                # socket through only with the farm login, which they do not have.
                url=printer_url(config, name, host, printer.port, through_door=False),
                api_key=key,
                # With the front door on, the streams are behind it (their streamers on loopback).
                camera_url=camera_url(config, printer.camera, host) if printer.camera else None,
            )
        )
    text = render(tool, printers, group=host)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    write_atomic(args.output, text, mode=0o600)
    print(f"wrote {args.output}: {len(printers)} printers for {APP_IDS[tool]}", file=sys.stderr)
    return 0
