"""Attached printer boards and cameras, as udev and sysfs describe them.

Discovery never opens a serial port: opening one toggles DTR, which resets most printer
boards and would kill a running print. Everything here comes from udev properties, sysfs
attributes and /proc/*/fd symlinks. The only device ever opened is a camera's capture node,
to list its formats, through one replaceable function (octobrixd.devices.v4l2.query_formats).
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

from octobrixd.config.model import Camera, Config, Printer
from octobrixd.devices.v4l2 import FormatQuery, FormatQueryError, VideoFormat
from octobrixd.names import SUBSYSTEMS, DeviceKind, Subsystem
from octobrixd.system.paths import Layout
from octobrixd.system.processes import processes

# The renderer's udev rules match exactly these kernel names for printers.
PRINTER_KERNELS = ("ttyACM[0-9]*", "ttyUSB[0-9]*")


class MatchKey(StrEnum):
    SERIAL = "serial"
    USB_PORT = "usb_port"
    DEVICE_NAME = "device_name"  # a camera's V4L2 name: for cameras that are not on USB


class BusType(StrEnum):
    """What a device hangs off: USB, or for a camera that is not on USB, what its driver sits on."""

    USB = "usb"
    PCI = "pci"  # a capture card
    PLATFORM = "platform"  # a system-on-chip camera interface (CSI)
    VIRTUAL = "virtual"  # no hardware at all: v4l2loopback
    OTHER = "other"

    @property
    def off_usb(self) -> str:
        """Where a camera on this bus is, in words, when it is not on USB."""
        kind = {BusType.PCI: "a PCI device", BusType.PLATFORM: "a platform device", BusType.VIRTUAL: "a virtual device"}
        return f"not on USB ({kind[self]})" if self in kind else "not on USB"


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
    # None only for a camera that is not on USB; printer ports are always USB (ttyACM, ttyUSB).
    usb: UsbDevice | None
    # The USB interface's kernel driver (cdc_acm, ch341, ftdi_sio, uvcvideo...); off USB, the
    # driver of the device the video node belongs to (bcm2835-camera...), None when it has none.
    driver: str | None
    # Other attached devices of the same kind reporting the same serial number (their nodes).
    serial_shared_with: tuple[str, ...] = ()
    # Cameras: the other attached capture nodes with the same V4L2 name, which a device_name
    # entry would match as well.
    name_shared_with: tuple[str, ...] = ()
    bound_to: tuple[str, ...] = ()  # config entries that match it; more than one is a conflict
    held_by: tuple[Holder, ...] = ()
    mm_ignored: bool = False  # ModemManager told to leave it alone (ID_MM_DEVICE_IGNORE)
    video: VideoInfo | None = None
    bus_type: BusType = BusType.USB

    @property
    def serial(self) -> str | None:
        return self.usb.serial if self.usb is not None else None

    @property
    def serial_unique(self) -> bool:
        return self.serial is not None and not self.serial_shared_with

    @property
    def video_name(self) -> str | None:
        return self.video.name if self.video is not None else None

    @property
    def label(self) -> str:
        """A name a user recognises the device by: off USB, its V4L2 name."""
        if self.usb is not None:
            return self.usb.label
        return self.video_name or f"{self.bus_type} video device"

    @property
    def where(self) -> str:
        """Where it is plugged in, in words: "USB port 1-2", "not on USB (a virtual device)"."""
        return f"USB port {self.usb.port}" if self.usb is not None else self.bus_type.off_usb


@dataclass(frozen=True)
class Inventory:
    printers: tuple[Device, ...]
    cameras: tuple[Device, ...]
    # False when some processes' open files could not be read (not root): held_by may miss some.
    holders_complete: bool = True

    @property
    def devices(self) -> tuple[Device, ...]:
        return self.printers + self.cameras


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


def _off_usb(device: Any) -> tuple[BusType, str | None]:
    """What a video node that is not on USB sits on, and the driver that made it: the nearest
    ancestor with a driver (sysfs device/driver, or further up for a sub-device)."""
    if "/devices/virtual/" in str(device.sys_path):
        # v4l2loopback and the like: no parent device, so nothing in sysfs names their module.
        return BusType.VIRTUAL, None
    ancestors = list(device.ancestors)
    parent = str(ancestors[0].subsystem) if ancestors else ""
    bus = {"pci": BusType.PCI, "platform": BusType.PLATFORM}.get(parent, BusType.OTHER)
    for ancestor in ancestors:
        driver = ancestor.driver or ancestor.properties.get("DRIVER")
        if driver:
            return bus, str(driver)
    return bus, None


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
    # A tty that is not on USB (ttyS0, a Bluetooth or board UART) is never a printer port here; a
    # camera need not be on USB: its V4L2 name can bind it.
    if node is None or (usb is None and kind is DeviceKind.PRINTER):
        return None
    bus, driver = (BusType.USB, _interface_driver(device)) if usb is not None else _off_usb(device)
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
        driver=driver,
        mm_ignored=device.properties.get("ID_MM_DEVICE_IGNORE") == "1",
        video=video,
        bus_type=bus,
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
        running = processes(proc)
    except OSError:
        return {}, False
    for process in running:
        try:
            fds = process.open_files()
        except PermissionError:
            complete = False
            continue
        hits: set[str] = set()
        for fd, target in fds:
            if target in wanted:
                hits.add(wanted[target])
            elif by_rdev and target.startswith("/dev/"):
                with contextlib.suppress(OSError):
                    info = fd.stat()
                    if stat.S_ISCHR(info.st_mode) and info.st_rdev in by_rdev:
                        hits.add(by_rdev[info.st_rdev])
        if not hits:
            continue
        holder = Holder(process.pid, process.command, process.unit)
        for node in hits:
            found[node].append(holder)
    return {node: tuple(sorted(h, key=lambda h: h.pid)) for node, h in found.items()}, complete


# ---------------------------------------------------------------------------------------------
# Putting it together


def binds(entry: Printer | Camera, usb: UsbDevice | None, video_name: str | None = None) -> bool:
    """Whether a config entry's match selects this device (what its udev rule will do).

    usb is None for a camera not on USB; video_name is a camera node's V4L2 name, which a camera
    entry may match instead.
    """
    if isinstance(entry, Printer) and entry.virtual:
        return False
    if isinstance(entry, Camera) and entry.device_name is not None:
        return video_name is not None and entry.device_name == video_name
    if usb is None:
        return False
    if entry.serial is not None:
        return entry.serial == usb.serial
    return entry.usb_port is not None and entry.usb_port == usb.port


def _entries(config: Config, kind: DeviceKind) -> dict[str, Printer] | dict[str, Camera]:
    return config.printers if kind is DeviceKind.PRINTER else config.cameras


def _serial_sharers(devices: list[Device]) -> dict[str, tuple[str, ...]]:
    """Node -> the nodes of other USB devices of its kind that report its serial number."""
    owners: dict[tuple[DeviceKind, str], set[tuple[str, str]]] = defaultdict(set)
    for device in devices:
        if device.usb is not None and device.usb.serial is not None:
            owners[(device.kind, device.usb.serial)].add((device.usb.port, device.node))
    shared: dict[str, tuple[str, ...]] = {}
    for device in devices:
        if device.usb is not None and device.usb.serial is not None:
            same = owners[(device.kind, device.usb.serial)]
            # Several nodes of one USB device share its serial harmlessly; other devices do not.
            shared[device.node] = tuple(sorted(node for port, node in same if port != device.usb.port))
    return shared


def _name_sharers(devices: list[Device]) -> dict[str, tuple[str, ...]]:
    """Camera node -> the other capture nodes with its V4L2 name (on USB or not): a device_name
    rule matches every one of them."""
    named: dict[str, list[str]] = defaultdict(list)
    for device in devices:
        if device.kind is DeviceKind.CAMERA and device.video_name:
            named[device.video_name].append(device.node)
    return {node: tuple(other for other in nodes if other != node) for nodes in named.values() for node in nodes}


def complete(
    devices: Iterable[Device],
    *,
    config: Config | None,
    layout: Layout,
    query_formats: FormatQuery | None,
) -> Inventory:
    """Add what needs every device at once: serial and name uniqueness, bindings, holders, formats."""
    devices = sorted(devices, key=lambda d: _natural(d.node))
    serial_shared = _serial_sharers(devices)
    name_shared = _name_sharers(devices)
    holders, holders_complete = find_holders((d.node for d in devices), layout.path("proc"))

    done: list[Device] = []
    for device in devices:
        bound: tuple[str, ...] = ()
        if config is not None:
            entries = _entries(config, device.kind)
            bound = tuple(sorted(n for n, entry in entries.items() if binds(entry, device.usb, device.video_name)))
        video = device.video
        if video is not None and query_formats is not None:
            try:
                video = replace(video, formats=query_formats(device.node), formats_error=None)
            except FormatQueryError as exc:
                video = replace(video, formats=(), formats_error=str(exc))
        done.append(
            replace(
                device,
                serial_shared_with=serial_shared.get(device.node, ()),
                name_shared_with=name_shared.get(device.node, ()),
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
    """Every attached USB printer port and camera capture node (on USB or not). context: a pyudev.Context."""
    found: list[Device] = []
    for subsystem in SUBSYSTEMS:
        for udev_device in context.list_devices(subsystem=subsystem):
            device = read_device(udev_device)
            if device is not None:
                found.append(device)
    return complete(found, config=config, layout=layout or Layout(), query_formats=query_formats)
