"""udev rules: a stable /dev/octobrix/NAME link, owner and marks for every configured device."""

from __future__ import annotations

from octobrixd.config.model import Camera, Config, Printer
from octobrixd.names import (
    KIND_PROPERTY,
    MODEM_IGNORE_PROPERTY,
    NAME_PROPERTY,
    DeviceKind,
    Subsystem,
    instance_user,
    udev_symlink,
)
from octobrixd.render.common import header

PRINTER_NODES = f'SUBSYSTEM=="{Subsystem.TTY}", KERNEL=="ttyACM[0-9]*|ttyUSB[0-9]*"'
# index 0 is the capture node; UVC cameras also expose a metadata node that cannot stream.
CAMERA_NODES = f'SUBSYSTEM=="{Subsystem.VIDEO}", KERNEL=="video[0-9]*", ATTR{{index}}=="0"'


def _marks(name: str, kind: DeviceKind) -> str:
    """The properties hotplug reads back: which entry a device is."""
    return f'ENV{{{NAME_PROPERTY}}}="{name}", ENV{{{KIND_PROPERTY}}}="{kind}"'


def _match(entry: Printer | Camera) -> tuple[str, str]:
    """The parent match and a human description. Values were validated to be glob- and quote-free."""
    if isinstance(entry, Camera) and entry.device_name is not None:
        # The video device's own attribute: built-in, CSI and loopback cameras have no USB parent.
        return f'ATTR{{name}}=="{entry.device_name}"', f"V4L2 device name {entry.device_name!r}"
    if entry.usb_port is None:
        # SUBSYSTEMS and ATTRS must hold on one parent: the USB device itself, not a hub above it.
        return f'SUBSYSTEMS=="usb", ATTRS{{serial}}=="{entry.serial}"', f"USB serial number {entry.serial}"
    # The interfaces of the device at exactly this port ("1-1.2:1.0"); matching "1-1.2" itself
    # would also match every device behind a hub plugged into that port.
    return f'KERNELS=="{entry.usb_port}:*"', f"USB port {entry.usb_port} (follows the cable, not the board)"


# A board with two serial ports (two CDC ACM functions, an FT2232...) has two tty nodes under one
# USB device: both match its serial or port, and the link would go to whichever udev handled last.
# The first interface (00, set by systemd's 60-serial.rules) gets the link; a tty on another
# interface gets it only at a lower priority, for composite boards whose serial port is not first.
FIRST_INTERFACE = 'ENV{ID_USB_INTERFACE_NUM}=="00"'
OTHER_INTERFACE = 'ENV{ID_USB_INTERFACE_NUM}!="00"'
OTHER_INTERFACE_PRIORITY = 'OPTIONS+="link_priority=-10"'


def _printer_rule(name: str, printer: Printer) -> str:
    match, described = _match(printer)
    actions = (
        f'SYMLINK+="{udev_symlink(name)}", OWNER="{instance_user(name)}", GROUP="dialout", MODE="0660", '
        # ModemManager probes new serial ports with AT commands, which confuses printer firmware.
        f'ENV{{{MODEM_IGNORE_PROPERTY}}}="1", {_marks(name, DeviceKind.PRINTER)}'
    )
    return (
        f"# printer {name}: {described}; of several serial ports on the board, the first\n"
        f"{PRINTER_NODES}, {match}, {FIRST_INTERFACE}, {actions}\n"
        f"{PRINTER_NODES}, {match}, {OTHER_INTERFACE}, {actions}, {OTHER_INTERFACE_PRIORITY}\n"
    )


def _camera_rule(name: str, camera: Camera) -> str:
    match, described = _match(camera)
    return (
        f"# camera {name}: {described}\n"
        f'{CAMERA_NODES}, {match}, SYMLINK+="{udev_symlink(name)}", '
        f'OWNER="{instance_user(name)}", GROUP="video", MODE="0660", '
        f"{_marks(name, DeviceKind.CAMERA)}\n"
    )


def render_udev_rules(config: Config) -> str:
    parts = [header(config.source)]
    for name, printer in sorted(config.printers.items()):
        if not printer.virtual:
            parts.append(_printer_rule(name, printer))
    for name, camera in sorted(config.cameras.items()):
        parts.append(_camera_rule(name, camera))
    return "\n".join(parts)
