"""Attached printer boards and cameras, as udev and sysfs describe them.

Discovery never opens a serial port: opening one toggles DTR, which resets most printer
boards and would kill a running print. Everything here comes from udev properties, sysfs
attributes and /proc/*/fd symlinks. The only device ever opened is a camera's capture node,
to list its formats, through one replaceable function (octobrixd.v4l2.query_formats).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import stat
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from octobrixd import names
from octobrixd.config import SERIAL_RE, USB_PORT_RE, Camera, Config, Printer
from octobrixd.names import SUBSYSTEMS, Subsystem
from octobrixd.paths import DEFAULT_CONFIG, Layout
from octobrixd.serials import placeholder_reason
from octobrixd.v4l2 import FormatQuery, FormatQueryError, FrameSize, VideoFormat

# The renderer's udev rules match exactly these kernel names for printers.
PRINTER_KERNELS = ("ttyACM[0-9]*", "ttyUSB[0-9]*")


# Spelled in names.py; importable from here with the records that carry it.
DeviceKind = names.DeviceKind


class MatchKey(StrEnum):
    SERIAL = "serial"
    USB_PORT = "usb_port"


@dataclass(frozen=True)
class UsbDevice:
    """The USB device (not interface) a node belongs to: what a udev rule can match on."""

    port: str  # KERNELS of the USB device, e.g. "1-1.2": bus 1, root port 1, hub port 2
    bus: int
    speed_mbps: float | None  # 1.5, 12, 480, 5000...
    vendor_id: str  # "2c99"
    product_id: str
    manufacturer: str | None  # the device's own strings, None when it has none
    product: str | None
    serial: str | None
    hwdb_name: str | None  # udev's hardware database name, for devices without strings
    # The host controller's driver (xhci_hcd, ehci-pci...): it decides which cameras share bandwidth.
    controller: str | None = None

    @property
    def hub(self) -> str | None:
        """The port path of the hub this device is plugged into; None on a root port."""
        return self.port.rsplit(".", 1)[0] if "." in self.port else None

    @property
    def vid_pid(self) -> str:
        return f"{self.vendor_id}:{self.product_id}"

    @property
    def label(self) -> str:
        """A name a user recognises the device by."""
        if self.manufacturer and self.product:
            return f"{self.manufacturer} {self.product}"
        # Cheap bridges often name only themselves ("USB Serial"): udev's hwdb says more.
        return self.hwdb_name or self.product or self.manufacturer or self.vid_pid


@dataclass(frozen=True)
class Holder:
    """A process with the device open."""

    pid: int
    command: str
    unit: str | None  # the systemd unit it runs in, from /proc/PID/cgroup


@dataclass(frozen=True)
class VideoInfo:
    name: str | None  # the V4L2 card name, e.g. "UVC Camera (046d:0825)"
    formats: tuple[VideoFormat, ...]
    formats_error: str | None  # why formats is empty, when it is


@dataclass(frozen=True)
class Device:
    kind: DeviceKind
    node: str  # /dev/ttyACM0, /dev/video0 (for cameras: the capture node only)
    sys_path: str
    by_id: tuple[str, ...]
    by_path: tuple[str, ...]
    usb: UsbDevice
    driver: str | None  # the USB interface's kernel driver: cdc_acm, ch341, ftdi_sio, uvcvideo...
    # Other attached devices of the same kind reporting the same serial number (their nodes).
    serial_shared_with: tuple[str, ...] = ()
    bound_to: tuple[str, ...] = ()  # config entries that match it; more than one is a conflict
    held_by: tuple[Holder, ...] = ()
    mm_ignored: bool = False  # ModemManager told to leave it alone (ID_MM_DEVICE_IGNORE)
    video: VideoInfo | None = None

    @property
    def serial_unique(self) -> bool:
        return self.usb.serial is not None and not self.serial_shared_with


@dataclass(frozen=True)
class Inventory:
    printers: tuple[Device, ...]
    cameras: tuple[Device, ...]
    # False when some processes' open files could not be read (not root): held_by may miss some.
    holders_complete: bool = True

    @property
    def devices(self) -> tuple[Device, ...]:
        return self.printers + self.cameras


@dataclass(frozen=True)
class Suggestion:
    key: MatchKey
    value: str
    why_port: str | None  # why a serial number could not be used, for a port binding


# ---------------------------------------------------------------------------------------------
# Reading udev


def _attr(device: Any, name: str) -> str | None:
    try:
        value = device.attributes.asstring(name)
    except (KeyError, UnicodeDecodeError, OSError):
        return None
    text = str(value).strip()
    return text or None


def _links(device: Any, prefix: str) -> tuple[str, ...]:
    # DEVLINKS rather than device.device_links: the latter needs udev's database, which a
    # umockdev testbed does not have; the property carries the same list on a real system.
    links = str(device.properties.get("DEVLINKS", "")).split()
    return tuple(sorted(link for link in links if link.startswith(prefix)))


def _speed(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _controller(usb: Any) -> str | None:
    """The driver of the first non-USB ancestor: the host controller (a PCI or platform device)."""
    for ancestor in usb.ancestors:
        if ancestor.subsystem != "usb":
            driver = ancestor.driver or ancestor.properties.get("DRIVER")
            return str(driver) if driver else None
    return None


def _usb_device(device: Any) -> UsbDevice | None:
    usb = device.find_parent("usb", "usb_device")
    if usb is None:
        return None
    port = str(usb.sys_name)
    busnum = _attr(usb, "busnum")
    bus = int(busnum) if busnum and busnum.isdigit() else int(port.split("-", 1)[0] or 0)
    hwdb = " ".join(
        str(v)
        for v in (usb.properties.get("ID_VENDOR_FROM_DATABASE"), usb.properties.get("ID_MODEL_FROM_DATABASE"))
        if v
    )
    return UsbDevice(
        port=port,
        bus=bus,
        speed_mbps=_speed(_attr(usb, "speed")),
        vendor_id=_attr(usb, "idVendor") or "????",
        product_id=_attr(usb, "idProduct") or "????",
        manufacturer=_attr(usb, "manufacturer"),
        product=_attr(usb, "product"),
        # The device's own attribute: ATTRS{serial} further up would be a hub's or the root
        # hub's (its PCI address), which would match every board on that controller.
        serial=_attr(usb, "serial"),
        hwdb_name=hwdb or None,
        controller=_controller(usb),
    )


def _interface_driver(device: Any) -> str | None:
    interface = device.find_parent("usb", "usb_interface")
    driver = interface.driver if interface is not None else None
    return str(driver) if driver else device.properties.get("ID_USB_DRIVER")


def _is_capture_node(device: Any) -> bool:
    # UVC cameras have a second, metadata-only node that cannot stream. udev's v4l_id says
    # which is which; without it (no udev database) the capture node is the one with index 0.
    caps = device.properties.get("ID_V4L_CAPABILITIES")
    if caps is not None:
        return ":capture:" in str(caps)
    return _attr(device, "index") in (None, "0")


def _read(device: Any, kind: DeviceKind) -> Device | None:
    node = device.device_node
    usb = _usb_device(device)
    if node is None or usb is None:
        return None
    video = None
    if kind is DeviceKind.CAMERA:
        video = VideoInfo(
            name=_attr(device, "name") or device.properties.get("ID_V4L_PRODUCT"),
            formats=(),
            formats_error="not queried",
        )
    return Device(
        kind=kind,
        node=str(node),
        sys_path=str(device.sys_path),
        by_id=_links(device, "/dev/serial/by-id/" if kind is DeviceKind.PRINTER else "/dev/v4l/by-id/"),
        by_path=_links(device, "/dev/serial/by-path/" if kind is DeviceKind.PRINTER else "/dev/v4l/by-path/"),
        usb=usb,
        driver=_interface_driver(device),
        mm_ignored=device.properties.get("ID_MM_DEVICE_IGNORE") == "1",
        video=video,
    )


def read_device(device: Any) -> Device | None:
    """One pyudev device as a printer port or camera, or None if it is neither."""
    subsystem = device.subsystem
    if subsystem == Subsystem.TTY:
        name = str(device.sys_name)
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in PRINTER_KERNELS):
            return _read(device, DeviceKind.PRINTER)
    elif subsystem == Subsystem.VIDEO and _is_capture_node(device):
        return _read(device, DeviceKind.CAMERA)
    return None


def _natural(text: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


# ---------------------------------------------------------------------------------------------
# Who has a device open: /proc/PID/fd symlinks, never the device itself


def _unit_of(cgroup_text: str) -> str | None:
    for line in cgroup_text.splitlines():
        path = line.split(":", 2)[-1]
        units = [part for part in path.split("/") if part.endswith((".service", ".scope"))]
        if units:
            return units[-1]
    return None


def find_holders(nodes: Iterable[str], proc: Path) -> tuple[dict[str, tuple[Holder, ...]], bool]:
    """Map each node to the processes that have it open; the flag is False if some were unreadable."""
    wanted: dict[str, str] = {}
    by_rdev: dict[int, str] = {}
    for node in nodes:
        wanted[node] = node
        wanted[os.path.realpath(node)] = node
        # A process in another mount namespace shows another path; the device number still matches.
        with contextlib.suppress(OSError):
            info = Path(node).stat()
            if stat.S_ISCHR(info.st_mode):
                by_rdev[info.st_rdev] = node
    found: dict[str, list[Holder]] = defaultdict(list)
    complete = True
    try:
        pids = [entry.name for entry in proc.iterdir() if entry.name.isdigit()]
    except OSError:
        return {}, False
    for pid in pids:
        fd_dir = proc / pid / "fd"
        try:
            fds = list(fd_dir.iterdir())
        except PermissionError:
            complete = False
            continue
        except OSError:  # the process exited meanwhile
            continue
        hits: set[str] = set()
        for fd in fds:
            try:
                target = str(fd.readlink())
            except OSError:
                continue
            if target in wanted:
                hits.add(wanted[target])
            elif by_rdev and target.startswith("/dev/"):
                with contextlib.suppress(OSError):
                    info = fd.stat()
                    if stat.S_ISCHR(info.st_mode) and info.st_rdev in by_rdev:
                        hits.add(by_rdev[info.st_rdev])
        if not hits:
            continue
        command = _read_text(proc / pid / "comm").strip() or "?"
        holder = Holder(int(pid), command, _unit_of(_read_text(proc / pid / "cgroup")))
        for node in hits:
            found[node].append(holder)
    return {node: tuple(sorted(h, key=lambda h: h.pid)) for node, h in found.items()}, complete


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# Putting it together


def binds(entry: Printer | Camera, usb: UsbDevice, video_name: str | None = None) -> bool:
    """Whether a config entry's match selects this USB device (what its udev rule will do).

    video_name is a camera node's V4L2 name, which a camera entry may match instead.
    """
    if isinstance(entry, Printer) and entry.virtual:
        return False
    if isinstance(entry, Camera) and entry.device_name is not None:
        return video_name is not None and entry.device_name == video_name
    if entry.serial is not None:
        return entry.serial == usb.serial
    return entry.usb_port is not None and entry.usb_port == usb.port


def _entries(config: Config, kind: DeviceKind) -> dict[str, Printer] | dict[str, Camera]:
    return config.printers if kind is DeviceKind.PRINTER else config.cameras


def complete(
    devices: Iterable[Device],
    *,
    config: Config | None,
    layout: Layout,
    query_formats: FormatQuery | None,
) -> Inventory:
    """Add what needs every device at once: serial uniqueness, bindings, holders, formats."""
    devices = sorted(devices, key=lambda d: _natural(d.node))
    serial_owners: dict[tuple[DeviceKind, str], set[tuple[str, str]]] = defaultdict(set)
    for device in devices:
        if device.usb.serial is not None:
            serial_owners[(device.kind, device.usb.serial)].add((device.usb.port, device.node))
    holders, holders_complete = find_holders((d.node for d in devices), layout.path("proc"))

    done: list[Device] = []
    for device in devices:
        shared: tuple[str, ...] = ()
        if device.usb.serial is not None:
            owners = serial_owners[(device.kind, device.usb.serial)]
            # Several nodes of one USB device share its serial harmlessly; other devices do not.
            shared = tuple(sorted(node for port, node in owners if port != device.usb.port))
        bound: tuple[str, ...] = ()
        if config is not None:
            entries = _entries(config, device.kind)
            video_name = device.video.name if device.video is not None else None
            bound = tuple(sorted(n for n, entry in entries.items() if binds(entry, device.usb, video_name)))
        video = device.video
        if video is not None and query_formats is not None:
            try:
                video = replace(video, formats=query_formats(device.node), formats_error=None)
            except FormatQueryError as exc:
                video = replace(video, formats=(), formats_error=str(exc))
        done.append(
            replace(
                device,
                serial_shared_with=shared,
                bound_to=bound,
                held_by=holders.get(device.node, ()),
                video=video,
            )
        )
    return Inventory(
        printers=tuple(d for d in done if d.kind is DeviceKind.PRINTER),
        cameras=tuple(d for d in done if d.kind is DeviceKind.CAMERA),
        holders_complete=holders_complete,
    )


def scan(
    context: Any,
    *,
    config: Config | None = None,
    layout: Layout | None = None,
    query_formats: FormatQuery | None = None,
) -> Inventory:
    """Every attached USB printer port and camera capture node. context: a pyudev.Context."""
    found: list[Device] = []
    for subsystem in SUBSYSTEMS:
        for udev_device in context.list_devices(subsystem=subsystem):
            device = read_device(udev_device)
            if device is not None:
                found.append(device)
    return complete(found, config=config, layout=layout or Layout(), query_formats=query_formats)


# ---------------------------------------------------------------------------------------------
# Config entries for devices that no entry binds yet

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
