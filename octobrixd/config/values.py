"""What one value of /etc/octobrix.toml may be: names, serial numbers, USB ports, ports, addresses,
requirements, sizes; each check raises ValueError with the sentence the user reads (config/model.py adds
the key path and line)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Strict

from octobrixd.config.requirements import PLUGIN_URL_RE, REQUIREMENT_RE
from octobrixd.names import device_link

DEFAULT_OCTOPRINT = "octoprint==1.11.8"

# Instance names become systemd instance names, user names (octobrix-NAME, at most 32 chars),
# file names and /dev/octobrix/NAME links, so only the boring characters are allowed.
NAME_MAX = 23
NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\Z")

# USB serial numbers end up inside a double-quoted udev match. udev treats * ? [ ] | as
# glob syntax there and has no escape for '"', so only characters real boards use are allowed.
SERIAL_MAX = 126
SERIAL_RE = re.compile(rf"^[A-Za-z0-9._:-]{{1,{SERIAL_MAX}}}\Z")

# The KERNELS value of a USB device: bus-port[.port...], at most 7 tiers of hubs.
USB_PORT_RE = re.compile(r"^[1-9][0-9]{0,2}-[1-9][0-9]?(?:\.[1-9][0-9]?){0,6}\Z")


RESOLUTION_RE = re.compile(r"^(?P<width>[1-9][0-9]{1,4})x(?P<height>[1-9][0-9]{1,4})\Z")
MAX_WIDTH, MAX_HEIGHT = 7680, 4320

# Standard rates plus the 250000 that Marlin boards commonly use.
BAUDRATES = (2400, 9600, 19200, 38400, 57600, 115200, 230400, 250000, 460800, 500000, 921600, 1000000)

PORT_MIN, PORT_MAX = 1024, 65535
USB2_NOTE = "ports below 1024 need root, and OctoPrint runs unprivileged"

# A camera's V4L2 name (sysfs "name", what `v4l2-ctl --info` calls the card) goes into a
# double-quoted ATTR{name}=="..." udev match: no quotes or escapes, nothing udev reads as glob
# syntax (* ? [ ] |) or substitution (% $), no control characters. The kernel keeps 63 bytes of it.
DEVICE_NAME_BAD = frozenset('"\\*?[]|%$')
DEVICE_NAME_MAX = 63

# V4L2 control names as v4l2-ctl --list-ctrls prints them (focus_absolute, auto_exposure...).
CONTROL_RE = re.compile(r"^[a-z][a-z0-9_]*\Z")
# VIDIOC_S_CTRL takes a signed 32-bit value.
CONTROL_MIN, CONTROL_MAX = -(2**31), 2**31 - 1

# A DNS name (RFC 1123 labels) for public_host; IP addresses are checked with ipaddress.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*\Z")


@dataclass(frozen=True)
class Shape:
    """What a value may be, in words, for the config reference (docs/config.md, made by
    config/reference.py). Validation ignores it: the checks below are what decide."""

    text: str


class PixelFormat(StrEnum):
    MJPEG = "mjpeg"
    YUYV = "yuyv"


def _check_requirement(value: str) -> str:
    if not REQUIREMENT_RE.match(value):
        raise ValueError(
            f"{value!r} is not a pip requirement of the form NAME==VERSION "
            '(for example "octoprint==1.11.8"); URLs, paths and pip options are not accepted'
        )
    return value


def _check_plugin(value: str) -> str:
    if PLUGIN_URL_RE.match(value):
        return value
    if not REQUIREMENT_RE.match(value):
        raise ValueError(
            f"{value!r} is not a plugin: use NAME==VERSION from PyPI or the plugin's https:// archive URL "
            "(as plugins.octoprint.org lists it); paths and pip options are not accepted"
        )
    return value


def _check_octoprint_requirement(value: str) -> str:
    match = REQUIREMENT_RE.match(value)
    if not match:
        return _check_requirement(value)
    if match["name"].lower().replace("_", "-") != "octoprint":
        raise ValueError(f'{value!r} does not install OctoPrint; use for example "{DEFAULT_OCTOPRINT}"')
    return value


# A USB root hub's "serial" attribute is its controller's PCI address: a rule matching it
# would match every device on that controller.
PCI_ADDRESS_RE = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]\Z")


def _check_serial(value: str) -> str:
    if PCI_ADDRESS_RE.match(value):
        raise ValueError(
            f"{value!r} is a USB controller's address, not a device's serial number: it would match every "
            "device on that controller — use the serial `octobrixctl discover` shows, or usb_port"
        )
    if not SERIAL_RE.match(value):
        bad = sorted({c for c in value if not re.match(r"[A-Za-z0-9._:-]", c)})
        shown = " ".join(repr(c) for c in bad) if bad else "nothing"
        raise ValueError(
            f"contains {shown}, which cannot be matched safely in a udev rule "
            f"(letters, digits and . _ : - only, at most {SERIAL_MAX}) — if the board really reports this, "
            "bind it by usb_port instead (see `octobrixctl discover`)"
            if bad
            else "must not be empty — bind a board without a serial number by usb_port"
        )
    return value


def _check_usb_port(value: str) -> str:
    if not USB_PORT_RE.match(value):
        raise ValueError(
            f'{value!r} is not a USB port path like "1-1.2" (bus-port.port…); '
            "`octobrixctl discover` shows the port of each plugged-in device"
        )
    return value


def _check_port(value: int) -> int:
    if not PORT_MIN <= value <= PORT_MAX:
        raise ValueError(f"{value} is outside {PORT_MIN}–{PORT_MAX} ({USB2_NOTE})")
    return value


def _check_listen(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(
            f'{value!r} is not an IP address; use "::" for all addresses (IPv4 and IPv6) '
            'or "127.0.0.1" for this computer only'
        ) from None
    return value


def _check_public_host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not HOSTNAME_RE.match(value):
            raise ValueError(
                f"{value!r} is not a host name or IP address: write only the name (farm.local) or the address "
                "(192.168.1.20) your browser uses to reach this computer, without http:// or a port"
            ) from None
    return value


def _bad_name_characters(value: str) -> str | None:
    """The characters of a V4L2 name that a udev match cannot hold, shown; None when it has none."""
    bad = sorted({c for c in value if c in DEVICE_NAME_BAD or not c.isprintable()})
    return " ".join(repr(c) for c in bad) or None


def device_name_problem(value: str) -> str | None:
    """Why a V4L2 name cannot go into a udev rule's ATTR{name} match, or None when it can."""
    shown = _bad_name_characters(value)
    if shown:
        return f"contains {shown}, which cannot be matched safely in a udev rule"
    if not value.strip() or value != value.strip() or len(value.encode()) > DEVICE_NAME_MAX:
        return f"{value!r} is not a V4L2 device name: 1–{DEVICE_NAME_MAX} characters, no spaces at either end"
    return None


def _check_device_name(value: str) -> str:
    problem = device_name_problem(value)
    if problem is None:
        return value
    if _bad_name_characters(value):
        raise ValueError(f"{problem} — bind this camera by serial or usb_port instead (see `octobrixctl discover`)")
    raise ValueError(f"{problem}, exactly as `v4l2-ctl --info -d /dev/videoN` shows it as 'Card type'")


def _check_controls(value: dict[str, int]) -> dict[str, int]:
    bad = [name for name in value if not CONTROL_RE.match(name)]
    if bad:
        raise ValueError(
            f"{', '.join(map(repr, bad))}: not a V4L2 control name; use the lowercase names "
            f"`v4l2-ctl --list-ctrls -d {device_link('NAME')}` prints, like focus_absolute"
        )
    out_of_range = [name for name, number in value.items() if not CONTROL_MIN <= number <= CONTROL_MAX]
    if out_of_range:
        raise ValueError(f"{', '.join(map(repr, out_of_range))}: the value does not fit a V4L2 control (32 bits)")
    return value


def check_wheels(value: str) -> str:
    parts = value.split("/")
    if not value.startswith("/") or ".." in parts or any(ord(c) < 32 for c in value):
        raise ValueError(f'{value!r} must be an absolute folder path, like "/var/lib/octobrix/wheels"')
    return value


def check_file_path(value: str) -> str:
    parts = value.split("/")
    if not value.startswith("/") or ".." in parts or value.endswith("/") or any(ord(c) < 32 for c in value):
        raise ValueError(f'{value!r} must be an absolute file path, like "/etc/ssl/farm/fullchain.pem"')
    return value


FilePath = Annotated[str, AfterValidator(check_file_path), Shape("an absolute file path")]


MEMORY_RE = re.compile(r"^(?P<number>[1-9][0-9]{0,6})(?P<unit>[KMG])$")
MEMORY_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3}
# OctoPrint itself needs about 100 MB; less would only make it crash-loop.
MEMORY_MIN = 256 * 1024**2


def _check_memory(value: str) -> str:
    match = MEMORY_RE.match(value)
    if not match:
        raise ValueError(f'{value!r} is not a size like "512M" or "1G"')
    if int(match["number"]) * MEMORY_UNITS[match["unit"]] < MEMORY_MIN:
        raise ValueError(f"{value} is too little for OctoPrint: give it at least {MEMORY_MIN // MEMORY_UNITS['M']}M")
    return value


def _check_resolution(value: str) -> str:
    match = RESOLUTION_RE.match(value)
    if not match or int(match["width"]) > MAX_WIDTH or int(match["height"]) > MAX_HEIGHT:
        raise ValueError(f'{value!r} is not a resolution like "1280x720" (at most {MAX_WIDTH}x{MAX_HEIGHT})')
    return value


def _check_baudrate(value: int) -> int:
    if value not in BAUDRATES:
        raise ValueError(f"{value} is not a serial speed printers use ({', '.join(map(str, BAUDRATES))})")
    return value


def _check_camera_ref(value: str) -> str:
    return check_name(value)


def check_name(value: str) -> str:
    if not NAME_RE.match(value) or len(value) > NAME_MAX:
        raise ValueError(
            f"{value!r} is not a valid name: use lowercase letters, digits and dashes "
            f'(not at the start or end), at most {NAME_MAX} characters, e.g. "printer1"'
        )
    return value


OctoPrintRequirement = Annotated[
    str,
    AfterValidator(_check_octoprint_requirement),
    Shape(f'a pip requirement of OctoPrint, NAME==VERSION like "{DEFAULT_OCTOPRINT}"'),
]
Plugin = Annotated[
    str,
    AfterValidator(_check_plugin),
    Shape("NAME==VERSION from PyPI, or the plugin's https:// archive URL (as plugins.octoprint.org lists it)"),
]
MemorySize = Annotated[
    str,
    AfterValidator(_check_memory),
    Shape(f'a size like "512M" or "1G", at least {MEMORY_MIN // MEMORY_UNITS["M"]}M'),
]
Serial = Annotated[
    str, AfterValidator(_check_serial), Shape(f"letters, digits and . _ : - only, 1–{SERIAL_MAX} characters")
]
UsbPort = Annotated[str, AfterValidator(_check_usb_port), Shape('a USB port path like "1-1.2" (bus-port.port…)')]
Port = Annotated[int, Strict(), AfterValidator(_check_port), Shape(f"{PORT_MIN}–{PORT_MAX}")]
ListenAddress = Annotated[str, AfterValidator(_check_listen), Shape("an IP address")]
Resolution = Annotated[
    str, AfterValidator(_check_resolution), Shape(f'like "1280x720" (width x height), at most {MAX_WIDTH}x{MAX_HEIGHT}')
]
Baudrate = Annotated[int, Strict(), AfterValidator(_check_baudrate), Shape(f"one of {', '.join(map(str, BAUDRATES))}")]
StrictInt = Annotated[int, Strict()]
StrictBool = Annotated[bool, Strict()]
CameraRef = Annotated[str, AfterValidator(_check_camera_ref), Shape("the name of a [cameras.NAME] table")]
PublicHost = Annotated[
    str, AfterValidator(_check_public_host), Shape("a host name or an IP address, without http:// or a port")
]
DeviceName = Annotated[
    str,
    AfterValidator(_check_device_name),
    Shape(
        f"1–{DEVICE_NAME_MAX} bytes, no spaces at either end, none of "
        + " ".join(f"`{c}`" for c in sorted(DEVICE_NAME_BAD))
        + " and no control characters"
    ),
]
Controls = Annotated[
    dict[str, StrictInt],
    AfterValidator(_check_controls),
    Shape("V4L2 control names (lowercase, as `v4l2-ctl --list-ctrls` prints them), each a 32-bit value"),
]
