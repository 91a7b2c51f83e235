"""`octobrixctl discover`: attached printer boards and cameras, and the entries that bind them."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from octobrixd.cameras.bandwidth import Advice, advise_system
from octobrixd.cliargs import add_config_argument, add_root_argument
from octobrixd.config.model import Config, load_config
from octobrixd.devices import v4l2
from octobrixd.devices.inventory import BusType, Device, Inventory, MatchKey, UsbDevice, read_device, scan
from octobrixd.devices.suggestions import Suggestion, suggest_entries, suggest_match
from octobrixd.errors import ConfigError, OctobrixError
from octobrixd.names import SUBSYSTEMS, DeviceKind
from octobrixd.system.paths import Layout


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "List the USB printer boards and the cameras (on USB or not) plugged in now, with what identifies "
        "each, and which config entry binds it. Serial ports are never opened (that would reset a board)."
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print everything as JSON")
    output.add_argument(
        "--toml", action="store_true", help="print config entries for the devices the config does not bind yet"
    )
    parser.add_argument(
        "--wait", action="store_true", help="wait for the next device to be plugged in and print its entry"
    )
    parser.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="with --wait: give up after this long (default: never)"
    )
    add_config_argument(parser, "the config to compare with")
    add_root_argument(parser, "read /proc under this directory instead of / (for tests)")


def load_optional_config(path: Path) -> tuple[Config | None, str | None]:
    """The config, or None with a note: discovery is most useful before there is a valid config."""
    if not path.exists():
        return None, None
    try:
        return load_config(path), None
    except ConfigError as exc:
        problems = "\n".join(f"  {problem}" for problem in exc.problems)
        return None, (
            f"warning: {path} has problems, so bindings are not shown and suggested names or ports "
            f"may clash with it (`octobrixctl check` explains):\n{problems}"
        )


# ---------------------------------------------------------------------------------------------
# Output


def _fps(rate: float) -> str:
    return f"{rate:g}"


def formats_summary(device: Device) -> str:
    video = device.video
    if video is None:
        return ""
    if not video.formats:
        return "unknown"
    parts = []
    for fmt in video.formats:
        largest = fmt.largest()
        if largest is not None:
            parts.append(f"{fmt.fourcc} {largest.resolution}@{_fps(largest.max_fps)}")
    return ", ".join(parts)


def _serial_cell(device: Device) -> str:
    if device.serial is None:
        return "(none)"
    return device.serial + (" (NOT UNIQUE)" if device.serial_shared_with else "")


def _holders_cell(device: Device) -> str:
    return ", ".join(f"{h.command}[{h.pid}]" for h in device.held_by) or "-"


def _speed(device: Device) -> str:
    usb = device.usb
    if usb is None:
        return "-" if device.bus_type is BusType.OTHER else str(device.bus_type)
    text = f"bus {usb.bus}, {usb.speed_mbps:g} Mbit/s" if usb.speed_mbps else f"bus {usb.bus}"
    return text + (f", via hub {usb.hub}" if usb.hub else "")


def _port_cell(device: Device) -> str:
    return device.usb.port if device.usb is not None else "not on USB"


def _id_cell(device: Device) -> str:
    return device.usb.vid_pid if device.usb is not None else "-"


def _device_cell(device: Device) -> str:
    # Off USB the driver is what tells a capture card from a CSI camera or a loopback device.
    if device.usb is None and device.driver:
        return f"{device.label}, driver {device.driver}"
    return device.label


def bandwidth_lines(advice: Advice) -> list[str]:
    """Each bandwidth domain with the configured cameras in it and what they reserve."""
    lines = [f"USB bandwidth of the configured cameras (uvcvideo cap: {advice.cap.payload or 'none, stock'}):"]
    for domain in advice.domains:
        verdict = "OVER BUDGET" if domain.over else "fits"
        lines.append(
            f"  {domain.label}, {domain.speed.value}: {domain.used_us:.0f} of {domain.budget_us:g} µs "
            f"per {'microframe' if domain.interval_us == 125 else 'frame'} — {verdict}"
        )
        for camera in domain.cameras:
            where = camera.placement.port + ("" if camera.placement.attached else " (from the config, not plugged in)")
            lines.append(
                f"    {camera.name:<12} {where:<14} {camera.mode:<20} reserves {camera.reserved_bytes} bytes "
                f"= {camera.bus_time_us:g} µs"
            )
    if advice.off_usb:
        lines.append(f"  not on USB, so they take no USB bandwidth: {', '.join(advice.off_usb)}")
    if advice.unplaced:
        lines.append(f"  not judged (not plugged in, and no usb_port): {', '.join(advice.unplaced)}")
    lines += [f"  warning: {text}" for text in advice.warnings()]
    return lines


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]


def render_table(inventory: Inventory, config: Config | None, config_path: Path, advice: Advice | None = None) -> str:
    lines: list[str] = []
    printer_rows = [
        [
            d.node,
            _port_cell(d),
            _id_cell(d),
            d.driver or "-",
            _serial_cell(d),
            ", ".join(d.bound_to) or "-",
            _holders_cell(d),
            d.label,
        ]
        for d in inventory.printers
    ]
    camera_rows = [
        [
            d.node,
            _port_cell(d),
            _speed(d),
            _id_cell(d),
            _serial_cell(d),
            ", ".join(d.bound_to) or "-",
            formats_summary(d),
            _device_cell(d),
        ]
        for d in inventory.cameras
    ]
    lines.append("Printer boards (USB serial ports):")
    if printer_rows:
        headers = ["NODE", "USB PORT", "ID", "DRIVER", "SERIAL", "BOUND TO", "OPEN BY", "DEVICE"]
        lines += ["  " + line for line in _table(headers, printer_rows)]
    else:
        lines.append("  none plugged in")
    lines.append("")
    lines.append("Cameras (capture nodes):")
    if camera_rows:
        headers = ["NODE", "USB PORT", "BUS", "ID", "SERIAL", "BOUND TO", "LARGEST MODES", "DEVICE"]
        lines += ["  " + line for line in _table(headers, camera_rows)]
    else:
        lines.append("  none plugged in")
    if advice is not None and advice.domains:
        lines.append("")
        lines += bandwidth_lines(advice)

    notes: list[str] = []
    unbound = [d for d in inventory.devices if not d.bound_to]
    if unbound:
        where = str(config_path) if config is not None else f"{config_path} (none loaded)"
        notes.append(
            f"{len(unbound)} of these are not in {where}: `octobrixctl discover --toml` prints entries for them."
        )
    matches = [(d, suggest_match(d)) for d in unbound]
    if any(m.key is MatchKey.USB_PORT for _, m in matches):
        notes.append(
            "Boards with no serial number, or one they share, are bound by USB port: "
            "such a name follows the cable, not the board."
        )
    if any(m.key is MatchKey.DEVICE_NAME and m.cannot_bind is None for _, m in matches):
        notes.append(
            "Cameras not on USB are bound by their V4L2 name: another video device with that name would take it."
        )
    notes += [f"{d.node} cannot be bound: {m.cannot_bind}; {m.remedy}." for d, m in matches if m.cannot_bind]
    if any(len(d.bound_to) > 1 for d in inventory.devices):
        notes.append("A device bound by more than one entry: `octobrixctl doctor` explains.")
    if not inventory.holders_complete:
        notes.append("Some processes could not be inspected: run as root to see every OPEN BY.")
    if any(d.video is not None and d.video.formats_error for d in inventory.cameras):
        errors = sorted({d.video.formats_error for d in inventory.cameras if d.video and d.video.formats_error})
        notes.append("Camera formats unknown: " + "; ".join(errors) + ".")
    if inventory.devices:
        notes.append("by-id and by-path links, all formats: `octobrixctl discover --json`.")
    if notes:
        lines.append("")
        lines += notes
    return "\n".join(lines) + "\n"


USB_JSON_KEYS = (
    "usb_port", "bus", "speed_mbps", "hub", "controller",
    "vendor_id", "product_id", "manufacturer", "product", "serial",
)  # fmt: skip


def _usb_json(usb: UsbDevice | None) -> dict[str, Any]:
    """The USB facts; every one null for a camera that is not on USB."""
    if usb is None:
        return dict.fromkeys(USB_JSON_KEYS)
    values = (usb.port, usb.bus, usb.speed_mbps, usb.hub, usb.controller, usb.vendor_id, usb.product_id,
              usb.manufacturer, usb.product, usb.serial)  # fmt: skip
    return dict(zip(USB_JSON_KEYS, values, strict=True))


def _match_json(match: Suggestion) -> dict[str, Any]:
    data: dict[str, Any] = {"key": str(match.key), "value": match.value, "why_port": match.why_port}
    if match.cannot_bind is not None:
        data |= {"cannot_bind": match.cannot_bind, "cannot_bind_hint": match.remedy}
    return data


def device_json(device: Device) -> dict[str, Any]:
    match = None if device.bound_to else suggest_match(device)
    data: dict[str, Any] = {
        "kind": str(device.kind),
        "node": device.node,
        "sys_path": device.sys_path,
        "by_id": list(device.by_id),
        "by_path": list(device.by_path),
        "bus_type": str(device.bus_type),
        **_usb_json(device.usb),
        "label": device.label,
        "serial_unique": device.serial_unique,
        "serial_shared_with": list(device.serial_shared_with),
        "driver": device.driver,
        "bound_to": list(device.bound_to),
        "held_by": [{"pid": h.pid, "command": h.command, "unit": h.unit} for h in device.held_by],
        "modemmanager_ignores": device.mm_ignored,
        "suggested_match": None if match is None else _match_json(match),
    }
    if device.video is not None:
        data["name"] = device.video.name
        data["name_shared_with"] = list(device.name_shared_with)
        data["formats"] = [
            {
                "fourcc": fmt.fourcc,
                "description": fmt.description,
                "sizes": [{"width": s.width, "height": s.height, "fps": list(s.fps)} for s in fmt.sizes],
            }
            for fmt in device.video.formats
        ]
        data["formats_error"] = device.video.formats_error
    return data


def advice_json(advice: Advice) -> dict[str, Any]:
    return {
        "uvcvideo_cap": advice.cap.payload,
        "uvcvideo_cap_from": advice.cap.source,
        "domains": [
            {
                "label": d.label,
                "speed": d.speed.name.lower(),
                "budget_us": d.budget_us,
                "used_us": d.used_us,
                "over_budget": d.over,
                "cameras": [
                    {
                        "name": c.name,
                        "usb_port": c.placement.port,
                        "attached": c.placement.attached,
                        "mode": c.mode,
                        "reserved_bytes": c.reserved_bytes,
                        "bus_time_us": c.bus_time_us,
                    }
                    for c in d.cameras
                ],
            }
            for d in advice.domains
        ],
        "not_judged": list(advice.unplaced),
        "not_on_usb": list(advice.off_usb),
        "warnings": advice.warnings(),
    }


def inventory_json(inventory: Inventory, config: Config | None, advice: Advice | None = None) -> dict[str, Any]:
    return {
        "config": config.source if config is not None else None,
        "holders_complete": inventory.holders_complete,
        "printers": [device_json(d) for d in inventory.printers],
        "cameras": [device_json(d) for d in inventory.cameras],
        "usb_bandwidth": advice_json(advice) if advice is not None else None,
    }


# ---------------------------------------------------------------------------------------------
# --wait


def _describe(device: Device) -> str:
    what = "printer board" if device.kind is DeviceKind.PRINTER else "camera"
    if device.usb is None:
        driver = f", driver {device.driver}" if device.driver else ""
        return f"Plugged in: {what} {device.node}, {device.label}{driver}, {device.where}"
    serial = device.usb.serial or "no serial number"
    return (
        f"Plugged in: {what} {device.node}, {device.label} ({device.usb.vid_pid}, "
        f"{device.driver or 'no driver'}) on {device.where}, {serial}"
    )


def wait_for_device(
    context: Any,
    *,
    config: Config | None,
    layout: Layout,
    timeout: float | None,
    on_ready: Callable[[], None] = lambda: None,
) -> Device | None:
    """Block until a printer port or camera capture node is added; None when the timeout passes."""
    import pyudev  # noqa: PLC0415 — only --wait needs the netlink monitor

    monitor = pyudev.Monitor.from_netlink(context)
    for subsystem in SUBSYSTEMS:
        monitor.filter_by(subsystem)
    monitor.start()
    on_ready()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return None
        event = monitor.poll(timeout=remaining)
        # Metadata nodes, non-USB ttys and removals are not what the user is plugging in.
        if event is None or event.action != "add" or read_device(event) is None:
            continue
        # A fresh scan: uniqueness and bindings are judged against everything attached now.
        inventory = scan(context, config=config, layout=layout, query_formats=v4l2.query_formats)
        for device in inventory.devices:
            if device.sys_path == event.sys_path:
                return device


def _main_wait(args: argparse.Namespace, context: Any, config: Config | None, layout: Layout) -> int:
    if not layout.path("run/udev/control").exists():
        # Without systemd-udevd (a container, a chroot) nothing announces new devices.
        print(
            "warning: udev does not seem to be running here (no /run/udev/control): "
            "a plugged-in device may never be announced",
            file=sys.stderr,
        )

    def ready() -> None:
        print("Waiting for a printer board or camera to be plugged in (Ctrl-C to stop)...", file=sys.stderr, flush=True)

    device = wait_for_device(context, config=config, layout=layout, timeout=args.timeout, on_ready=ready)
    if device is None:
        raise OctobrixError(
            f"nothing was plugged in within {args.timeout:g} s",
            hint="plug the board or camera in after the 'Waiting' line appears; "
            "if it never shows up, check the cable and `dmesg`",
        )
    entry = suggest_entries([device], config, target=str(args.config))
    if args.json:
        print(json.dumps({"device": device_json(device), "entry": entry}, indent=2))
    elif args.toml:
        print(entry, end="")
    else:
        print(_describe(device))
        print()
        print(entry, end="")
    return 0


def main(args: argparse.Namespace) -> int:
    import pyudev  # noqa: PLC0415 — keeps `octobrixctl --help` working without libudev

    config, note = load_optional_config(args.config)
    if note:
        print(note, file=sys.stderr)
    layout = Layout(args.root)
    context = pyudev.Context()
    try:
        if args.wait:
            return _main_wait(args, context, config, layout)
        inventory = scan(context, config=config, layout=layout, query_formats=v4l2.query_formats)
    except KeyboardInterrupt:
        return 130
    advice = advise_system(config, layout, inventory) if config is not None else None
    if args.json:
        print(json.dumps(inventory_json(inventory, config, advice), indent=2))
    elif args.toml:
        print(suggest_entries(inventory.devices, config, target=str(args.config)), end="")
    else:
        print(render_table(inventory, config, args.config, advice), end="")
    return 0
