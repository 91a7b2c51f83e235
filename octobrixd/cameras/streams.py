"""Camera streams: where each is reached, which program serves it, and asking it how it is doing.

Two audiences reach a stream by different addresses. The user's browser loads the live stream
from the name it knows this computer by (`[octobrix] public_host`). OctoPrint fetches snapshots
itself, from the same computer, so it uses loopback and never depends on name resolution.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from octobrixd.config.streamers import Streamer
from octobrixd.system import loopback_http
from octobrixd.system.paths import Layout
from octobrixd.urls import PATHS, frontdoor_prefix, url_host

if TYPE_CHECKING:
    from octobrixd.config.model import Config

# Where each streamer serves what (ustreamer's HTTP API; mjpg-streamer's output_http actions).
# The programs the unit templates start: Debian's ustreamer package, and mjpg-streamer's own
# `make install` (no distribution packages it).
PROGRAMS = {
    Streamer.USTREAMER: PurePosixPath("usr/bin/ustreamer"),
    Streamer.MJPG_STREAMER: PurePosixPath("usr/local/bin/mjpg_streamer"),
}
V4L2_CTL = PurePosixPath("usr/bin/v4l2-ctl")
FFMPEG = "/usr/bin/ffmpeg"
JPEG_START = b"\xff\xd8"


def local_host(listen: str) -> str:
    """The address this computer reaches a stream listening on `listen` by."""
    address = ipaddress.ip_address(listen)
    if address.is_unspecified:
        # "::" also accepts IPv4 (Linux's default net.ipv6.bindv6only=0), and ustreamer and
        # mjpg-streamer bind it that way; 127.0.0.1 is the address users recognise in settings.
        return "127.0.0.1"
    return url_host(listen)


def public_host(config: Config) -> str:
    # load_config fills public_host in from the machine's name; a config parsed from text alone
    # (tests, golden files) has none, and renders a placeholder that is at least well-formed.
    return url_host(config.octobrix.public_host or "localhost")


def stream_url(config: Config, name: str) -> str:
    """The live stream, as the user's browser loads it.

    With the front door on, a path on the same host as the page: it works by whatever name or
    address the browser reached the farm (no public_host needed), and needs the farm login.
    """
    stream, _ = PATHS[config.streamer_of(name)]
    if config.frontdoor.enabled:
        return frontdoor_prefix(name) + stream.removeprefix("/")
    return f"http://{public_host(config)}:{config.cameras[name].port}{stream}"


def snapshot_url(config: Config, name: str, *, for_browser: bool = False) -> str:
    """One JPEG, as OctoPrint (on this computer) fetches it for timelapses; or as a browser would."""
    _, snapshot = PATHS[config.streamer_of(name)]
    host = public_host(config) if for_browser else local_host(config.streams_listen())
    return f"http://{host}:{config.cameras[name].port}{snapshot}"


def stream_ratio(width: int, height: int) -> str:
    """OctoPrint frames a stream as 16:9 or 4:3 only: the nearer one."""
    return "16:9" if abs(width / height - 16 / 9) < abs(width / height - 4 / 3) else "4:3"


def missing_program_hint(streamer: Streamer) -> str:
    if streamer is Streamer.USTREAMER:
        return "sudo apt install ustreamer"
    return (
        "Debian and Ubuntu do not package mjpg-streamer; build it: sudo apt install git cmake gcc g++ "
        "libjpeg-dev && git clone https://github.com/jacksonliam/mjpg-streamer && cd "
        "mjpg-streamer/mjpg-streamer-experimental && make && sudo make install — or use "
        'streamer = "ustreamer" (sudo apt install ustreamer), which octobrix prefers'
    )


def program_installed(layout: Layout, streamer: Streamer) -> bool:
    path = layout.path(PROGRAMS[streamer])
    return path.is_file() and os.access(path, os.X_OK)


def missing_programs(config: Config, layout: Layout) -> list[str]:
    """Warnings for programs the configured cameras need but this system lacks."""
    warnings = []
    for streamer in sorted({config.streamer_of(name) for name in config.cameras}):
        if not program_installed(layout, streamer):
            users = ", ".join(sorted(n for n in config.cameras if config.streamer_of(n) is streamer))
            warnings.append(
                f"{users}: {streamer} is not installed (/{PROGRAMS[streamer]}), so the stream will not start — "
                + missing_program_hint(streamer)
            )
    with_controls = sorted(n for n, camera in config.cameras.items() if camera.controls)
    if with_controls and not layout.path(V4L2_CTL).exists():
        warnings.append(
            f"{', '.join(with_controls)}: controls are set with v4l2-ctl, which is not installed — "
            "sudo apt install v4l-utils"
        )
    return warnings


# ---------------------------------------------------------------------------------------------
# Asking a running stream


@dataclass(frozen=True)
class Snapshot:
    ok: bool
    detail: str  # what came back, or why nothing did
    width: int | None = None
    height: int | None = None


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a JPEG's first start-of-frame marker; None if it is no JPEG."""
    if not data.startswith(JPEG_START):
        return None
    index = 2
    while index + 9 < len(data):
        if data[index] != 0xFF:
            return None
        marker = data[index + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            index += 2
            continue
        length = int.from_bytes(data[index + 2 : index + 4], "big")
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[index + 5 : index + 7], "big")
            width = int.from_bytes(data[index + 7 : index + 9], "big")
            return width, height
        index += 2 + length
    return None


def fetch_snapshot(url: str, timeout: float = 5.0) -> Snapshot:
    """GET one snapshot the way OctoPrint does, and say what it was."""
    # Any URL the config gives, so urllib; only doctor asks, and status should not import it.
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 — our own http:// URL
            data = response.read(16 * 1024 * 1024)
    except urllib.error.HTTPError as error:
        return Snapshot(False, f"{url} answered HTTP {error.code}")
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return Snapshot(False, f"{url} did not answer ({reason})")
    size = jpeg_size(data)
    if size is None:
        return Snapshot(False, f"{url} answered {len(data)} bytes that are not a JPEG image")
    return Snapshot(True, f"{url} answered a {size[0]}x{size[1]} JPEG ({len(data)} bytes)", *size)


@dataclass(frozen=True)
class StreamerState:
    online: bool  # the camera is delivering frames (not ustreamer's NO SIGNAL picture)
    width: int | None
    height: int | None
    captured_fps: int | None
    # What the stream hands its viewers: frames per second queued for them, and how many watch.
    queued_fps: int | None = None
    clients: int | None = None


def loopback_get(port: int, host: str, path: str, timeout: float = 5.0, limit: int = 16 << 20) -> bytes | None:
    """The body of GET path from a streamer on this computer, or None when it does not answer 200."""
    answer = loopback_response(port, host, path, timeout, limit)
    return None if answer is None else answer[1]


def loopback_response(
    port: int, host: str, path: str, timeout: float = 5.0, limit: int = 16 << 20
) -> tuple[bytes, bytes] | None:
    """(header block, body) of GET path from a streamer on this computer, or None when it does not
    answer 200. A bare socket (loopback_http): octobrixd's health check asks every plugged-in camera
    on every look, and urllib costs several times the CPU (benchmarks/camera_check.py)."""
    try:
        answer = loopback_http.exchange(port, path, host=host, timeout=timeout, limit=limit)
    except (OSError, loopback_http.MalformedResponse):
        return None
    return (answer.head, answer.body) if answer.status == 200 else None


def ustreamer_state(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> StreamerState | None:
    """ustreamer's /state: whether the camera is online; None when it cannot be asked."""
    body = loopback_get(port, host, "/state", timeout=timeout, limit=1 << 20)
    if body is None:
        return None
    try:
        result = json.loads(body)["result"]
        source = result["source"]
        stream = result.get("stream") or {}
        resolution = source.get("resolution") or {}
        return StreamerState(
            online=bool(source.get("online")),
            width=resolution.get("width"),
            height=resolution.get("height"),
            captured_fps=source.get("captured_fps"),
            queued_fps=stream.get("queued_fps"),
            clients=stream.get("clients"),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
