"""Hotplug as frozen records: what the udev monitor saw, in the terms octobrixd acts on. USB boards
and cameras, and cameras that are not on USB (a capture card, `modprobe v4l2loopback`) alike.

udev has already run octobrix's rules when the monitor reports a device, so a configured device
arrives with OCTOBRIX_NAME and OCTOBRIX_KIND set and its /dev/octobrix link in place. On
"remove", sysfs is gone: only the event's properties are read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pyudev

from octobrixd.names import KIND_PROPERTY, NAME_PROPERTY, SUBSYSTEMS, DeviceKind, Subsystem

log = logging.getLogger(__name__)


class Action(StrEnum):
    ADD = "add"
    REMOVE = "remove"
    CHANGE = "change"
    OTHER = "other"


@dataclass(frozen=True)
class DeviceEvent:
    action: Action
    subsystem: str
    devnode: str | None
    name: str | None
    kind: DeviceKind | None  # from the rules' marks: None for a device no entry binds
    usb: bool
    # For a device no config entry binds: the entry that would (one line), else None.
    suggestion: str | None = None


Suggest = Callable[[Any], str | None]


def record(device: Any, action: str | None, suggest: Suggest | None = None) -> DeviceEvent:
    properties = device.properties
    name = properties.get(NAME_PROPERTY)
    usb = properties.get("ID_BUS") == "usb" or "usb" in (properties.get("ID_PATH") or "")
    try:
        kind_of_action = Action(action or "")
    except ValueError:
        kind_of_action = Action.OTHER
    suggestion = None
    # A video node need not be on USB to be a camera (its V4L2 name binds it); a tty must: ttyS0 and
    # the like are never printer ports, so they are not even described.
    describable = usb or str(device.subsystem) == Subsystem.VIDEO
    if name is None and describable and kind_of_action is Action.ADD and suggest is not None:
        try:
            suggestion = suggest(device)
        except Exception:
            # A suggestion is a courtesy: a device we cannot describe must not stop the daemon.
            log.exception("could not describe %s", device.device_node)
    return DeviceEvent(
        action=kind_of_action,
        subsystem=str(device.subsystem),
        devnode=device.device_node,
        name=name,
        kind=_kind(properties.get(KIND_PROPERTY)),
        usb=usb,
        suggestion=suggestion,
    )


def _kind(marked: str | None) -> DeviceKind | None:
    try:
        return DeviceKind(marked or "")
    except ValueError:
        return None


class HotplugMonitor:
    """udev's netlink monitor for ttys and video devices; its fd goes into the daemon's select()."""

    def __init__(self, suggest: Suggest | None = None, context: Any = None) -> None:
        self.context = context or pyudev.Context()
        self.suggest = suggest
        self.monitor = pyudev.Monitor.from_netlink(self.context)
        for subsystem in SUBSYSTEMS:
            self.monitor.filter_by(subsystem)
        self.monitor.start()

    def fileno(self) -> int:
        fd: int = self.monitor.fileno()
        return fd

    def drain(self) -> list[DeviceEvent]:
        events = []
        while (device := self.monitor.poll(timeout=0)) is not None:
            events.append(record(device, device.action, self.suggest))
        return events

    def present(self) -> Iterator[DeviceEvent]:
        """Configured devices already plugged in at start, as if they had just been added."""
        for subsystem in SUBSYSTEMS:
            for device in self.context.list_devices(subsystem=subsystem):
                if device.properties.get(NAME_PROPERTY):
                    yield record(device, "add")
