"""The "found" list: printer boards and cameras plugged in now that no config entry binds, each with
the entry octobrix proposes for it. octobrixd builds it from its own scan (sysfs and udev only, no
serial port is ever opened) and publishes it, world-readable and without secrets, for the web
service; an add request names a device by the id given here, never by what it says it is.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from octobrixd.config.model import Config
from octobrixd.devices.inventory import BusType, Device, MatchKey
from octobrixd.devices.suggestions import (
    CAMERA_PORT_START,
    PRINTER_PORT_START,
    Allocator,
    first_ports,
    suggest_match,
    suggest_mode,
)
from octobrixd.names import DeviceKind
from octobrixd.system.fsutil import write_atomic
from octobrixd.system.paths import Layout

RUN_DIR = PurePosixPath("run/octobrix")
FOUND_FILE = RUN_DIR / "found.json"
JSON_VERSION = 1


def device_id(device: Device) -> str:
    """Stable while the device stays in its port; says nothing an outsider could forge into a match."""
    text = f"{device.kind}|{device.sys_path}|{device.serial or ''}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Found:
    id: str
    kind: DeviceKind
    node: str
    label: str
    vendor: str | None
    product: str | None
    vid_pid: str | None  # None off USB
    serial: str | None
    usb_port: str | None  # None: a camera that is not on USB
    driver: str | None
    match_key: MatchKey
    match_value: str
    # For a board bound by its USB port: why its serial number cannot be used, and what that means.
    why_port: str | None
    port_note: str | None
    proposed_name: str
    proposed_port: int
    # Cameras: the mode octobrix would stream.
    camera_mode: Mapping[str, Any] | None = None
    # Set when no entry can bind it at all (a port path deeper than octobrix accepts, a camera off
    # USB whose V4L2 name another camera has): why, and what to do.
    cannot_bind: str | None = None
    cannot_bind_hint: str | None = None
    bus_type: BusType = BusType.USB
    # For a camera bound by its V4L2 name: what that means.
    name_note: str | None = None

    @property
    def where(self) -> str:
        return f"USB port {self.usb_port}" if self.usb_port is not None else self.bus_type.off_usb

    @property
    def note(self) -> str | None:
        """What its binding means, for the comment of the entry that adds it."""
        return self.port_note or self.name_note

    def entry(self, port: int) -> dict[str, Any]:
        """The values of the config entry that binds this device on the given port."""
        values: dict[str, Any] = {str(self.match_key): self.match_value}
        if self.camera_mode is not None:
            values.update(self.camera_mode)
        values["port"] = port
        return values

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": str(self.kind),
            "node": self.node,
            "label": self.label,
            "vendor": self.vendor,
            "product": self.product,
            "vid_pid": self.vid_pid,
            "serial": self.serial,
            "usb_port": self.usb_port,
            "bus_type": str(self.bus_type),
            "where": self.where,
            "driver": self.driver,
            "bound_by": str(self.match_key),
            "match": self.match_value,
            "why_port": self.why_port,
            "port_note": self.port_note,
            "name_note": self.name_note,
            "proposed_name": self.proposed_name,
            "proposed_port": self.proposed_port,
            "camera_mode": dict(self.camera_mode) if self.camera_mode is not None else None,
            "cannot_bind": self.cannot_bind,
            "cannot_bind_hint": self.cannot_bind_hint,
        }


def _port_note(device: Device, port: str) -> str:
    thing = "board" if device.kind is DeviceKind.PRINTER else "camera"
    return (
        f"bound by USB port {port}: the name follows the cable, not the {thing}; "
        f"whatever is plugged into that port gets it, so keep this {thing} there"
    )


def _name_note(name: str) -> str:
    return (
        f"bound by its V4L2 name {name!r} (it is not on USB): any video device with that name gets it, "
        "so another one named the same would take it"
    )


def build_found(devices: Iterable[Device], config: Config | None) -> tuple[Found, ...]:
    """The unbound devices of one scan, each with a proposed name and the next free port.

    devices must come from one scan: serial uniqueness was judged among them. A board's second
    serial port is not listed (the udev rule links its first one, the printer's)."""
    allocator = Allocator(config)
    unbound, _seconds = first_ports([d for d in devices if not d.bound_to])
    found = []
    for device in unbound:
        match = suggest_match(device)
        mode = None
        if device.kind is DeviceKind.PRINTER:
            name, port = allocator.name("printer"), allocator.port(PRINTER_PORT_START)
        else:
            name, port = allocator.name("cam"), allocator.port(CAMERA_PORT_START)
            camera = suggest_mode(device.video)
            mode = {"resolution": camera.resolution, "fps": camera.fps, "format": camera.format}
        usb = device.usb
        found.append(
            Found(
                id=device_id(device),
                kind=device.kind,
                node=device.node,
                label=device.label,
                vendor=usb.manufacturer if usb is not None else None,
                # Off USB the V4L2 name is all the device says of itself.
                product=usb.product if usb is not None else device.video_name,
                vid_pid=usb.vid_pid if usb is not None else None,
                serial=device.serial,
                usb_port=usb.port if usb is not None else None,
                driver=device.driver,
                match_key=match.key,
                match_value=match.value,
                why_port=match.why_port,
                port_note=_port_note(device, match.value) if match.key is MatchKey.USB_PORT else None,
                proposed_name=name,
                proposed_port=port,
                camera_mode=mode,
                cannot_bind=match.cannot_bind,
                cannot_bind_hint=match.remedy,
                bus_type=device.bus_type,
                name_note=_name_note(match.value) if match.key is MatchKey.DEVICE_NAME else None,
            )
        )
    return tuple(found)


def found_json(found: Iterable[Found], setting_up: Mapping[str, str] | None = None, *, now: float | None = None) -> str:
    body = {
        "version": JSON_VERSION,
        "updated": time.time() if now is None else now,
        "found": [item.to_json() for item in found],
        # Added, their apply not done yet: name -> "printer" or "camera".
        "setting_up": dict(setting_up or {}),
    }
    return json.dumps(body, indent=1) + "\n"


def publish(layout: Layout, found: Iterable[Found], setting_up: Mapping[str, str] | None = None) -> None:
    """World-readable on purpose: it says only what `octobrixctl discover` tells any user."""
    path = layout.path(FOUND_FILE)
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    write_atomic(path, found_json(found, setting_up), mode=0o644)
