"""Hand-made discovery results for tests that need devices but not udev, and what systemd says."""

from __future__ import annotations

from collections.abc import Mapping

from octobrixd.devices.inventory import BusType, Device, UsbDevice, VideoInfo
from octobrixd.devices.v4l2 import VideoFormat
from octobrixd.names import DeviceKind
from octobrixd.system.systemd import UnitProperties


def systemd_says(units: Mapping[str, Mapping[str, str]]) -> dict[str, UnitProperties]:
    """Units' properties as `systemctl show` prints them (key=value), typed as octobrix reads them."""
    return {unit: UnitProperties.parse({**props, "Id": unit}) for unit, props in units.items()}


def usb(port: str, serial: str | None = None, **kw: str | None) -> UsbDevice:
    fields: dict[str, str | None] = {"manufacturer": "Acme", "product": "Board", **kw}
    return UsbDevice(
        port=port,
        bus=int(port.split("-", maxsplit=1)[0]),
        speed_mbps=12.0,
        vendor_id="1a86",
        product_id="7523",
        manufacturer=fields["manufacturer"],
        product=fields["product"],
        serial=serial,
        hwdb_name=None,
    )


def printer(node: str, port: str, serial: str | None = None, **kw: str | None) -> Device:
    return Device(
        kind=DeviceKind.PRINTER,
        node=node,
        sys_path=f"/sys/devices/x/{port}/{node[5:]}",
        by_id=(),
        by_path=(),
        usb=usb(port, serial, **kw),
        driver="ch341",
    )


def camera(node: str, port: str, serial: str | None, formats: tuple[VideoFormat, ...] = ()) -> Device:
    return Device(
        kind=DeviceKind.CAMERA,
        node=node,
        sys_path=f"/sys/devices/x/{port}/video4linux/{node[5:]}",
        by_id=(),
        by_path=(),
        usb=usb(port, serial),
        driver="uvcvideo",
        video=VideoInfo("Cam", formats, None if formats else "no answer"),
    )


def loopback(node: str, name: str | None = "Dummy video device (0x0000)") -> Device:
    """A camera that is not on USB, as v4l2loopback makes one: a virtual device with only its V4L2 name."""
    return Device(
        kind=DeviceKind.CAMERA,
        node=node,
        sys_path=f"/sys/devices/virtual/video4linux/{node[5:]}",
        by_id=(),
        by_path=(),
        usb=None,
        driver=None,
        video=VideoInfo(name, (), "no answer"),
        bus_type=BusType.VIRTUAL,
    )
