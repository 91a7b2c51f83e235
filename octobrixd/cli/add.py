"""`octobrixctl add`: the board or camera plugged in next (or one plugged in already) joins the farm,
with the same checks and the same config edit as the overview page's Add button."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from octobrixd.adding.found import Found, build_found, device_id
from octobrixd.adding.requests import AddRequest, perform
from octobrixd.cli.discover import wait_for_device
from octobrixd.cliargs import add_config_argument, add_root_argument
from octobrixd.config.model import Config, load_config
from octobrixd.devices import v4l2
from octobrixd.devices.inventory import Device, scan
from octobrixd.errors import OctobrixError
from octobrixd.names import DeviceKind
from octobrixd.system import systemd
from octobrixd.system.paths import Layout

DAEMON_UNIT = "octobrixd.service"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Add a printer board or camera to the config: the one you plug in next, or one plugged in "
        "already (--device). octobrixd then sets it up. Its serial port is never opened."
    )
    parser.add_argument("--name", help="its name in the farm (default: asked, or the proposed one)")
    parser.add_argument("--port", type=int, help="its OctoPrint's or stream's port (default: the next free one)")
    parser.add_argument("--printer", metavar="NAME", help="a camera: the printer whose OctoPrint shows it")
    parser.add_argument(
        "--device", metavar="NODE", help="one plugged in already (/dev/ttyUSB0, or an id of the overview's found list)"
    )
    parser.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="give up waiting for a plug after this long (default: never)"
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="every board and camera plugged in and not in the farm yet, each with its proposed name and port"
        " (asked once)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the entry it would write, change nothing")
    add_config_argument(parser)
    add_root_argument(parser)


def describe(item: Found) -> str:
    what = "printer board" if item.kind is DeviceKind.PRINTER else "camera"
    if item.usb_port is None:
        driver = f", driver {item.driver}" if item.driver else ""
        lines = [f"Found: {what} {item.node}, {item.label}{driver}, {item.where}"]
    else:
        lines = [
            f"Found: {what} {item.node}, {item.label} ({item.vid_pid}, {item.driver or 'no driver'}) "
            f"on USB port {item.usb_port}, serial {item.serial or '(none)'}"
        ]
    if item.cannot_bind:
        lines.append(f"  it cannot be bound: {item.cannot_bind}; {item.cannot_bind_hint}")
    elif item.port_note:
        lines.append(f"  {item.why_port}: {item.port_note}")
    elif item.name_note:
        lines.append(f"  {item.name_note}")
    return "\n".join(lines)


def _pick(devices: tuple[Device, ...], found: tuple[Found, ...], wanted: str) -> str:
    """The id of the device named by node or id; a bound one keeps its id, so the add says who binds it."""
    for device in devices:
        if wanted in (device.node, device_id(device)):
            return device_id(device)
    raise OctobrixError(
        f"--device: {wanted} is not a plugged-in printer board or camera",
        hint="`octobrixctl discover` lists what is plugged in"
        + (f" (found now: {', '.join(f.node for f in found)})" if found else ""),
    )


def _ask_name(item: Found) -> str:
    if not sys.stdin.isatty():
        return item.proposed_name
    answer = input(f"Name for it [{item.proposed_name}]: ").strip()
    return answer or item.proposed_name


def _confirm_all(count: int) -> bool:
    if not sys.stdin.isatty():
        return True
    answer = input(f"Add {'it' if count == 1 else f'these {count}'} to the farm? [Y/n] ").strip().lower()
    return answer in ("", "y", "yes")


def add_all(
    found: Sequence[Found],
    devices: Sequence[Device],
    config_path: Path,
    *,
    printer: str | None = None,
    confirm: Callable[[int], bool] = _confirm_all,
    dry_run: bool = False,
) -> list[str]:
    """Every found device with its proposed name and port, after one question; the lines to print.

    Each is one add, checked and written like any other: a refusal stops there, with the ones
    before it added. The proposed names and ports of one found list never clash with each other."""
    addable = [item for item in found if item.cannot_bind is None]
    said = [
        f"skipped {item.node}: it cannot be bound: {item.cannot_bind}; {item.cannot_bind_hint}"
        for item in found
        if item.cannot_bind
    ]
    if not addable:
        raise OctobrixError(
            "nothing is plugged in that is not in the farm yet" + (f" ({said[0]})" if said else ""),
            hint="plug the boards and cameras in first; `octobrixctl discover` lists what is plugged in",
        )
    cameras = [item for item in addable if item.kind is DeviceKind.CAMERA]
    if printer is not None and len(cameras) != 1:
        raise OctobrixError(
            f"--printer {printer}: --all would add {len(cameras)} cameras, so which one it shows is not clear",
            hint="add that camera by `octobrixctl add --device NODE --printer NAME`, the rest with --all",
        )
    for item in addable:
        section = "printers" if item.kind is DeviceKind.PRINTER else "cameras"
        print(f"{describe(item)}\n  -> [{section}.{item.proposed_name}] on port {item.proposed_port}")
    if not dry_run and not confirm(len(addable)):
        return [*said, "nothing added"]
    for item in addable:
        shows = printer if item.kind is DeviceKind.CAMERA else None
        request = AddRequest(item.id, item.proposed_name, None, shows)
        said.append(perform(request, config_path, found=found, devices=devices, dry_run=dry_run))
    return said


def _main_all(args: argparse.Namespace, context: object, config: Config, layout: Layout) -> int:
    if args.name or args.port or args.device:
        raise OctobrixError(
            "--all adds every device with its proposed name and port: it takes no --name, --port or --device",
            hint="add one device with its own name by `octobrixctl add --device NODE --name NAME` instead",
        )
    inventory = scan(context, config=config, layout=layout, query_formats=v4l2.query_formats)
    said = add_all(build_found(inventory.devices, config), inventory.devices, args.config,
                   printer=args.printer, dry_run=args.dry_run)  # fmt: skip
    print("\n".join(said))
    if not args.dry_run and said[-1] != "nothing added":
        if layout.live:
            systemd.try_reload([DAEMON_UNIT])
        print("Follow them with `octobrixctl status`; the farm page shows their cards.")
    return 0


def main(args: argparse.Namespace) -> int:
    import pyudev  # noqa: PLC0415 — keeps `octobrixctl --help` working without libudev

    config = load_config(args.config)
    layout = Layout(args.root)
    context = pyudev.Context()
    if args.all:
        return _main_all(args, context, config, layout)
    if args.device is None:

        def ready() -> None:
            print("Plug in the printer board or camera now (Ctrl-C to stop)...", file=sys.stderr, flush=True)

        try:
            device = wait_for_device(context, config=config, layout=layout, timeout=args.timeout, on_ready=ready)
        except KeyboardInterrupt:
            return 130
        if device is None:
            raise OctobrixError(
                f"nothing was plugged in within {args.timeout:g} s",
                hint="plug it in after the 'Plug in' line appears, or name one plugged in already with --device",
            )
        wanted = device.node
    else:
        wanted = args.device
    # A fresh scan: uniqueness, bindings and the next free port are judged against everything now.
    inventory = scan(context, config=config, layout=layout, query_formats=v4l2.query_formats)
    found = build_found(inventory.devices, config)
    chosen = _pick(inventory.devices, found, wanted)
    item = next((f for f in found if f.id == chosen), None)
    if item is not None:
        print(describe(item))
    name = args.name or (_ask_name(item) if item is not None else "")
    request = AddRequest(chosen, name, args.port, args.printer)
    said = perform(request, args.config, found=found, devices=inventory.devices, dry_run=args.dry_run)
    print(said)
    if args.dry_run:
        return 0
    if layout.live:
        systemd.try_reload([DAEMON_UNIT])
    print(f"Follow it with `octobrixctl status {name}`; the farm page shows its card.")
    return 0
