"""Config entries for devices that no entry binds yet: how each would be bound (serial or USB port,
and why; a camera not on USB by its V4L2 name), a camera's mode, the next free ports, and the TOML
that `discover --toml`, `add` and the daemon's log line show. Pure: devices and config in,
suggestions out."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from octobrixd.config.model import Config
from octobrixd.config.values import SERIAL_RE, USB_PORT_RE, device_name_problem
from octobrixd.devices.inventory import Device, MatchKey, VideoInfo
from octobrixd.devices.serials import placeholder_reason
from octobrixd.devices.v4l2 import FrameSize
from octobrixd.names import DeviceKind
from octobrixd.system.paths import DEFAULT_CONFIG


@dataclass(frozen=True)
class Suggestion:
    key: MatchKey
    value: str
    why_port: str | None  # why a serial number could not be used, for a port binding
    # Set when no entry can bind the device: why, and what the user can do about it.
    cannot_bind: str | None = None
    remedy: str | None = None


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
    """Serial number when it is present, unique and safe in a udev rule; the USB port otherwise;
    the V4L2 name for a camera that is not on USB."""
    if device.usb is None:
        return _name_match(device)
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
    port = device.usb.port
    if not USB_PORT_RE.match(port):
        return Suggestion(
            MatchKey.USB_PORT,
            port,
            why,
            cannot_bind=f"{why}, and its port path {port!r} is deeper than octobrix accepts",
            remedy="plug it into a port nearer the computer",
        )
    return Suggestion(MatchKey.USB_PORT, port, why)


# Off USB the name is all there is: renaming is the only way to tell two such cameras apart.
_RENAME = "rename it where its driver allows (v4l2loopback: the card_label module option)"


def _name_match(device: Device) -> Suggestion:
    """A camera not on USB has no serial number or port: its V4L2 name, if it is one a udev rule
    can match and no other attached camera has."""
    name = device.video_name or ""
    match = Suggestion(MatchKey.DEVICE_NAME, name, None)
    if not name:
        return replace(
            match,
            cannot_bind="it is not on USB and its driver gives it no V4L2 name to be bound by",
            remedy=f"`v4l2-ctl --info -d {device.node}` shows what its driver reports; {_RENAME}",
        )
    problem = device_name_problem(name)
    if problem is not None:
        return replace(match, cannot_bind=f"its V4L2 name {name!r} cannot bind it: {problem}", remedy=_RENAME)
    if device.name_shared_with:
        return replace(
            match,
            cannot_bind=f"its V4L2 name {name!r} is also the name of {', '.join(device.name_shared_with)}, "
            "so an entry bound by that name would take whichever udev handled last",
            remedy="give them different names where their drivers allow (v4l2loopback: the card_label "
            "module option), or unplug the other one",
        )
    return match


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
    # Only validated serials, port paths, V4L2 names (no quote, backslash or control character)
    # and fixed words get here: no escaping needed.
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


def _about(device: Device) -> str:
    """The entry's first comment: what the device is and where."""
    if device.usb is None:
        driver = f", driver {device.driver}" if device.driver else ""
        return f"# {_comment(device.label)}{driver}, {device.where}, now {device.node}"
    return (
        f"# {_comment(device.label)} ({device.usb.vid_pid}, {device.driver or 'no driver'}) "
        f"on {device.where}, now {device.node}"
    )


def _binding_comments(device: Device, match: Suggestion) -> list[str]:
    """Why a port or name binding, and what it means: both bind something other than the device."""
    if match.key is MatchKey.DEVICE_NAME:
        return [
            "# Bound by its V4L2 name: it is not on USB, so it has no serial number or USB port.",
            "# Any video device with this name gets this entry, so another one named the same would",
            "# take it (`v4l2-ctl --list-devices` shows the names).",
        ]
    if match.key is MatchKey.USB_PORT:
        thing = "board" if device.kind is DeviceKind.PRINTER else "camera"
        return [
            f"# Bound by USB port because {_comment(match.why_port or '')}.",
            "# A port binding follows the cable, not the board: this name belongs to whatever is",
            f"# plugged into port {match.value}; keep this {thing} in that port.",
        ]
    return []


def suggest_entry(device: Device, allocator: Allocator) -> SuggestedEntry:
    """The TOML table that would bind one device, with comments saying what it is and why."""
    match = suggest_match(device)
    lines = [_about(device)]
    if match.cannot_bind is not None:
        lines += [
            f"# Cannot be bound: {_comment(match.cannot_bind)}.",
            f"# What to do: {_comment(match.remedy or '')}.",
        ]
        return SuggestedEntry(tuple(lines), ())
    lines += _binding_comments(device, match)
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
    boards = [(d, d.usb.port) for d in devices if d.kind is DeviceKind.PRINTER and d.usb is not None]
    for device, port in boards:
        if _interface_of(device.sys_path) < _interface_of(first.setdefault(port, device).sys_path):
            first[port] = device
    seconds = [(d, first[port]) for d, port in boards if first[port] is not d]
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
            parts.append(f"# {device.node} ({_comment(device.label)}) is already bound by {names}.\n")
    unbound, second_ports = first_ports([d for d in devices if not d.bound_to])
    for device, first in second_ports:
        # One board, one entry: the udev rule links its first serial port only.
        parts.append(
            f"# {device.node} is another serial port of the board at {first.node}: that one is the printer's.\n"
        )
    if not devices:
        parts.append("# No printer board or camera is plugged in.\n")
    elif not unbound:
        parts.append(f"# Every attached printer board and camera is already in {source}.\n")
    else:
        parts.insert(0, f"# Add these to {source}, then run `sudo octobrixctl apply`.\n")
        parts += [suggest_entry(device, allocator).text for device in unbound]
    return "\n".join(parts)
