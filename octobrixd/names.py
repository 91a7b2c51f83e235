"""The names octobrix gives things on the system, spelled once.

Renderers write these names into udev rules, units and sysusers; hotplug, the daemon, status and
doctor read them back. A name spelled in two places drifts (a rule says one thing, a check looks
for another), so every module takes them from here; tests/test_names.py keeps it so. This module
imports nothing of octobrix: anything may use it, including the renderers.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol


class DeviceKind(StrEnum):
    PRINTER = "printer"
    CAMERA = "camera"

    @property
    def section(self) -> str:
        """The config section whose entries bind this kind of device."""
        return "printers" if self is DeviceKind.PRINTER else "cameras"


class Subsystem(StrEnum):
    """The kernel subsystems octobrix writes rules for and watches."""

    TTY = "tty"
    VIDEO = "video4linux"


# Only these: replaying or watching every device on the machine is slow and wakes unrelated rules.
SUBSYSTEMS = tuple(Subsystem)


def kind_of_subsystem(subsystem: str) -> DeviceKind:
    """What a device of this subsystem would be configured as (a tty is a printer's port)."""
    return DeviceKind.CAMERA if subsystem == Subsystem.VIDEO else DeviceKind.PRINTER


# The udev properties octobrix's rules set on a device they bind.
NAME_PROPERTY = "OCTOBRIX_NAME"
KIND_PROPERTY = "OCTOBRIX_KIND"
# ModemManager leaves a port with this mark alone (its AT probes confuse printer firmware).
MODEM_IGNORE_PROPERTY = "ID_MM_DEVICE_IGNORE"

# The stable links, one per configured device: /dev/octobrix/NAME.
LINK_DIR = "/dev/octobrix"


def device_link(name: str) -> str:
    return f"{LINK_DIR}/{name}"


def udev_symlink(name: str) -> str:
    """The link as udev's SYMLINK+= wants it: relative to /dev."""
    return device_link(name).removeprefix("/dev/")


def instance_user(name: str) -> str:
    """The unprivileged identity an instance or streamer runs as, and that owns its device."""
    return f"octobrix-{name}"


# systemd: each printer's OctoPrint is an instance of octoprint@.service; each camera's streamer
# one of its streamer's template (ustreamer@.service...).
OCTOPRINT_TEMPLATE = "octoprint"
# The drop-in octobrix writes for a unit: the unit's settings from the config.
DROPIN_NAME = "50-octobrix.conf"


def instance(template: str, name: str) -> str:
    """`octoprint@NAME`: what a message tells the user to start or stop."""
    return f"{template}@{name}"


def unit(template: str, name: str) -> str:
    return f"{instance(template, name)}.service"


def octoprint_instance(name: str) -> str:
    return instance(OCTOPRINT_TEMPLATE, name)


def octoprint_unit(name: str) -> str:
    return unit(OCTOPRINT_TEMPLATE, name)


class StreamerOf(Protocol):
    def streamer_of(self, name: str) -> str: ...


def streamer_unit(config: StreamerOf, name: str) -> str:
    """The streamer unit of camera NAME; config is a Config or a FarmView (its streamer may differ)."""
    return unit(config.streamer_of(name), name)


def printer_of(unit_name: str) -> str | None:
    """The printer whose OctoPrint UNIT_NAME is; None for any other unit."""
    template, _, rest = unit_name.partition("@")
    return rest.removesuffix(".service") if template == OCTOPRINT_TEMPLATE and rest else None


def dropin(unit_name: str) -> str:
    """The drop-in of UNIT_NAME, relative to the unit directory."""
    return f"{unit_name}.d/{DROPIN_NAME}"
