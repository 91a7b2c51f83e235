"""A UVC camera's isochronous alternate settings, from the raw descriptors sysfs shows to everyone.

uvcvideo streams on the smallest alternate setting of the video-streaming interface whose endpoint
holds the payload it negotiated (uvc_video_start_transfer: `psize >= bandwidth`, smallest psize),
and the host controller books bus time for that endpoint's whole packet size. So what a camera
reserves is one of these sizes; reading them needs no open device node (no ioctl, no streaming):
/sys/bus/usb/devices/PORT/descriptors is the device descriptor followed by the configuration's
interface and endpoint descriptors, every alternate setting included (sysfs' ep_* folders show only
the current one).
"""

from __future__ import annotations

from pathlib import Path

DT_CONFIG = 2
DT_INTERFACE = 4
DT_ENDPOINT = 5
CLASS_VIDEO = 0x0E
SUBCLASS_STREAMING = 0x02
ISOCHRONOUS = 1


def endpoint_payload(w_max_packet_size: int) -> int:
    """Bytes per (micro)frame of one isochronous endpoint: the size times the transactions per
    microframe (usb_endpoint_maxp() * usb_endpoint_maxp_mult(), as uvc_endpoint_max_bpi() reads it
    for high speed)."""
    return (w_max_packet_size & 0x7FF) * (((w_max_packet_size >> 11) & 3) + 1)


def streaming_alt_payloads(raw: bytes) -> tuple[int, ...]:
    """The distinct isochronous payload sizes of the first video-streaming interface, smallest first."""
    sizes: set[int] = set()
    streaming: int | None = None  # interface number of the VS interface being read
    seen_config = False
    current: tuple[int, int, bool] | None = None  # (interface, alt, is video streaming)
    pos = 18 if len(raw) >= 18 and raw[1] == 1 else 0  # skip the device descriptor
    while pos + 2 <= len(raw):
        length, kind = raw[pos], raw[pos + 1]
        if length < 2 or pos + length > len(raw):
            break
        body = raw[pos : pos + length]
        if kind == DT_CONFIG:
            if seen_config:
                break  # only the first configuration: the one UVC cameras run
            seen_config = True
        elif kind == DT_INTERFACE and length >= 9:
            is_vs = body[5] == CLASS_VIDEO and body[6] == SUBCLASS_STREAMING
            current = (body[2], body[3], is_vs)
            if is_vs and streaming is None:
                streaming = body[2]
        elif kind == DT_ENDPOINT and length >= 7 and current is not None:
            interface, alt, is_vs = current
            if is_vs and interface == streaming and alt > 0 and body[3] & 3 == ISOCHRONOUS:
                sizes.add(endpoint_payload(body[4] | body[5] << 8))
        pos += length
    return tuple(sorted(size for size in sizes if size > 0))


def usb_device_dir(sys_path: str, port: str) -> Path | None:
    """The USB device folder of a node below it: /sys/devices/.../1-3.2/1-3.2:1.0/video4linux/video0 -> .../1-3.2"""
    marker = f"/{port}/"
    if marker not in sys_path + "/":
        return None
    return Path((sys_path + "/").split(marker, 1)[0] + f"/{port}")


def read_alt_payloads(sys_path: str, port: str) -> tuple[int, ...] | None:
    """The camera's alternate setting sizes, or None when its descriptors cannot be read."""
    folder = usb_device_dir(sys_path, port)
    if folder is None:
        return None
    try:
        raw = (folder / "descriptors").read_bytes()
    except OSError:
        return None
    return streaming_alt_payloads(raw) or None
