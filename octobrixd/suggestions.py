"""Config entries for devices that no entry binds yet: how each would be bound (serial or USB port,
and why), a camera's mode, the next free ports, and the TOML that `discover --toml`, `add` and the
daemon's log line show. Pure: devices and config in, suggestions out."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from octobrixd.config import Config
from octobrixd.config_values import SERIAL_RE, USB_PORT_RE
from octobrixd.devices import Device, MatchKey, VideoInfo
from octobrixd.names import DeviceKind
from octobrixd.paths import DEFAULT_CONFIG
from octobrixd.serials import placeholder_reason
from octobrixd.v4l2 import FrameSize


@dataclass(frozen=True)
class Suggestion:
    key: MatchKey
    value: str
    why_port: str | None  # why a serial number could not be used, for a port binding


PRINTER_PORT_START = 5001
CAMERA_PORT_START = 8081
_CONFIG_FORMATS = {"MJPG": "mjpeg", "YUYV": "yuyv"}
# MJPEG fits 1280x720 into a USB 2 bus share; raw YUYV at that size hogs the bus, so aim lower.
_TARGET_SIZE = {"MJPG": (1280, 720), "YUYV": (640, 480)}
_TARGET_FPS = 15


@dataclass(frozen=True)
class CameraMode:
    format: str  # the config's value: "mjpeg" or "yuyv"
    resolution: str
    fps: int
    guessed: bool  # True when the camera's formats were unknown


def suggest_match(device: Device) -> Suggestion:
    """Serial number when it is present, unique and safe in a udev rule; the USB port otherwise."""
    serial = device.usb.serial
    if serial is None:
        why = "it reports no serial number"
    elif device.serial_shared_with:
        why = f"its serial number {serial} is also reported by {', '.join(device.serial_shared_with)}"
    elif not SERIAL_RE.match(serial):
        why = f"its serial number {serial!r} has characters a udev rule cannot match safely"
    elif (placeholder := placeholder_reason(serial)) is not None:
        # Trusting it while this board is the only one would bind the next such board instead.
        why = f"its serial number {placeholder}"
    else:
        return Suggestion(MatchKey.SERIAL, serial, None)
    return Suggestion(MatchKey.USB_PORT, device.usb.port, why)


def suggest_mode(video: VideoInfo | None) -> CameraMode:
    offered = {fmt.fourcc: fmt for fmt in (video.formats if video is not None else ())}
    for fourcc in ("MJPG", "YUYV"):
        fmt = offered.get(fourcc)
        if fmt is None or not fmt.sizes:
            continue
        max_w, max_h = _TARGET_SIZE[fourcc]
        fitting = [s for s in fmt.sizes if s.width <= max_w and s.height <= max_h]
        # The largest size within the target, else the smallest the camera has.
        size = max(fitting, key=_area) if fitting else min(fmt.sizes, key=_area)
        rate = min(size.fps, key=lambda r: (abs(r - _TARGET_FPS), -r), default=_TARGET_FPS)
        return CameraMode(_CONFIG_FORMATS[fourcc], size.resolution, max(1, int(rate)), guessed=False)
    return CameraMode("mjpeg", "640x480", _TARGET_FPS, guessed=True)


def _area(size: FrameSize) -> int:
    return size.width * size.height


def _comment(text: str) -> str:
    # Device strings come from the device itself: keep a hostile one from ending the comment.
    return "".join(c if c.isprintable() else "?" for c in text)


def _quoted(value: str) -> str:
    # Only validated serials, port paths and fixed words get here: no escaping needed.
    return f'"{value}"'


class Allocator:
    """Hands out instance names and ports that the config (and earlier suggestions) do not use."""

    def __init__(self, config: Config | None) -> None:
        self.names: set[str] = set()
        self.ports: set[int] = set()
        if config is not None:
            self.names = set(config.printers) | set(config.cameras)
            self.ports = {port for _, port in config.all_ports()}

    def name(self, prefix: str) -> str:
        number = 1
        while f"{prefix}{number}" in self.names:
            number += 1
        self.names.add(f"{prefix}{number}")
        return f"{prefix}{number}"

    def port(self, start: int) -> int:
        port = start
        while port in self.ports:
            port += 1
        self.ports.add(port)
        return port


@dataclass(frozen=True)
class SuggestedEntry:
    comments: tuple[str, ...]  # what the device is and why it is bound so, as TOML comments
    table: tuple[str, ...]  # the TOML table's lines; none when the device cannot be bound

    @property
    def text(self) -> str:
        return "\n".join((*self.comments, *self.table)) + "\n"


def one_line_entry(device: Device, config: Config | None) -> str:
    """The table that would bind one just-plugged device, on one line for the journal; "" when it is
    bound already or cannot be bound."""
    return "" if device.bound_to else " ".join(suggest_entry(device, Allocator(config)).table)


def suggest_entry(device: Device, allocator: Allocator) -> SuggestedEntry:
    """The TOML table that would bind one device, with comments saying what it is and why."""
    match = suggest_match(device)
    where = f"USB port {device.usb.port}"
    lines = [
        f"# {_comment(device.usb.label)} ({device.usb.vid_pid}, {device.driver or 'no driver'}) "
        f"on {where}, now {device.node}"
    ]
    if match.key is MatchKey.USB_PORT:
        if not USB_PORT_RE.match(device.usb.port):
            lines.append(
                f"# Cannot be bound: {_comment(match.why_port or '')}, and its port path "
                f"{device.usb.port!r} is deeper than octobrix accepts."
            )
            return SuggestedEntry(tuple(lines), ())
        lines += [
            f"# Bound by USB port because {_comment(match.why_port or '')}.",
            "# A port binding follows the cable, not the board: this name belongs to whatever is",
            f"# plugged into port {device.usb.port}; keep this board in that port."
            if device.kind is DeviceKind.PRINTER
            else f"# plugged into port {device.usb.port}; keep this camera in that port.",
        ]
    if device.kind is DeviceKind.PRINTER:
        name = allocator.name("printer")
        table = [
            f"[printers.{name}]",
            f"{match.key} = {_quoted(match.value)}",
            f"port = {allocator.port(PRINTER_PORT_START)}",
        ]
    else:
        name = allocator.name("cam")
        mode = suggest_mode(device.video)
        if mode.guessed:
            why = device.video.formats_error if device.video is not None else None
            lines += [
                "# Its formats could not be read, so these settings are a guess; check them with",
                f"# `v4l2-ctl --list-formats-ext -d {device.node}`. The query said:",
                f"# {_comment(why or 'nothing')}",
            ]
        table = [
            f"[cameras.{name}]",
            f"{match.key} = {_quoted(match.value)}",
            f"resolution = {_quoted(mode.resolution)}",
            f"fps = {mode.fps}",
            f"format = {_quoted(mode.format)}",
            f"port = {allocator.port(CAMERA_PORT_START)}",
        ]
    return SuggestedEntry(tuple(lines), tuple(table))


def _interface_of(sys_path: str) -> tuple[int, ...]:
    """(configuration, interface) of the USB interface a node is under ("1-5:1.2" -> (1, 2))."""
    found = re.search(r":(\d+)\.(\d+)/", sys_path)
    return (int(found[1]), int(found[2])) if found else ()


def first_ports(devices: list[Device]) -> tuple[list[Device], list[tuple[Device, Device]]]:
    """The devices to suggest entries for, and the (second port, first port) of boards with several."""
    first: dict[str, Device] = {}
    for device in (d for d in devices if d.kind is DeviceKind.PRINTER):
        if _interface_of(device.sys_path) < _interface_of(first.setdefault(device.usb.port, device).sys_path):
            first[device.usb.port] = device
    seconds = [(d, first[d.usb.port]) for d in devices if d.kind is DeviceKind.PRINTER and first[d.usb.port] is not d]
    return [d for d in devices if all(d is not second for second, _ in seconds)], seconds


def suggest_entries(devices: Iterable[Device], config: Config | None, *, target: str | None = None) -> str:
    """Config entries binding every device no entry binds yet, ready to paste into the config.

    devices must come from one scan (serial uniqueness is judged among them); target names the
    config file the user should paste into.
    """
    devices = list(devices)
    allocator = Allocator(config)
    source = target or (config.source if config is not None else str(DEFAULT_CONFIG))
    parts: list[str] = []
    for device in devices:
        if device.bound_to:
            names = ", ".join(f"{device.kind.section}.{name}" for name in device.bound_to)
            parts.append(f"# {device.node} ({_comment(device.usb.label)}) is already bound by {names}.\n")
    unbound, second_ports = first_ports([d for d in devices if not d.bound_to])
    for device, first in second_ports:
        # One board, one entry: the udev rule links its first serial port only.
        parts.append(
            f"# {device.node} is another serial port of the board at {first.node}: that one is the printer's.\n"
        )
    if not devices:
        parts.append("# No USB printer board or camera is plugged in.\n")
    elif not unbound:
        parts.append(f"# Every attached printer board and camera is already in {source}.\n")
    else:
        parts.insert(0, f"# Add these to {source}, then run `sudo octobrixctl apply`.\n")
        parts += [suggest_entry(device, allocator).text for device in unbound]
    return "\n".join(parts)
