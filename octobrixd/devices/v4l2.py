"""What a camera can stream: pixel formats, frame sizes and frame rates, from v4l2-ctl.

Kept apart from discovery so the one call that touches a camera node is easy to replace:
tests pass their own query (umockdev answers no V4L2 ioctl), and discovery never runs it
for serial ports.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from octobrixd.errors import CommandError, CommandNotFoundError, CommandTimeoutError
from octobrixd.system.command import run


@dataclass(frozen=True)
class FrameSize:
    width: int
    height: int
    # Highest first, as a user reads them; empty when the driver lists no discrete rates.
    fps: tuple[float, ...]

    @property
    def resolution(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def max_fps(self) -> float:
        return self.fps[0] if self.fps else 0.0


@dataclass(frozen=True)
class VideoFormat:
    fourcc: str  # "MJPG", "YUYV", ...
    description: str
    sizes: tuple[FrameSize, ...]

    def largest(self) -> FrameSize | None:
        return max(self.sizes, key=lambda s: s.width * s.height, default=None)


class FormatQueryError(Exception):
    """The camera's formats could not be read; the message says why, for the user."""


FormatQuery = Callable[[str], tuple[VideoFormat, ...]]

_FORMAT = re.compile(r"^\s*\[\d+\]: '(?P<fourcc>[^']{1,4})' \((?P<desc>.*)\)\s*$")
_SIZE = re.compile(r"^\s*Size: Discrete (?P<w>\d+)x(?P<h>\d+)\s*$")
_DISCRETE_FPS = re.compile(r"^\s*Interval: Discrete [\d.]+s \((?P<fps>[\d.]+) fps\)\s*$")
# Stepwise/continuous intervals print a range "(1.000-30.000 fps)": the top of it is usable.
_RANGE_FPS = re.compile(r"^\s*Interval: (?:Stepwise|Continuous) .*\([\d.]+-(?P<fps>[\d.]+) fps\)\s*$")


def parse_list_formats_ext(text: str) -> tuple[VideoFormat, ...]:
    """Parse `v4l2-ctl --list-formats-ext` output. Lines it does not know are skipped."""
    formats: list[VideoFormat] = []
    fourcc = desc = ""
    sizes: list[FrameSize] = []
    size: tuple[int, int] | None = None
    rates: list[float] = []

    def close_size() -> None:
        nonlocal size, rates
        if size is not None:
            sizes.append(FrameSize(size[0], size[1], tuple(sorted(set(rates), reverse=True))))
        size, rates = None, []

    def close_format() -> None:
        nonlocal sizes
        close_size()
        if fourcc:
            formats.append(VideoFormat(fourcc.strip(), desc, tuple(sizes)))
        sizes = []

    for line in text.splitlines():
        if match := _FORMAT.match(line):
            close_format()
            fourcc, desc = match["fourcc"], match["desc"]
        elif match := _SIZE.match(line):
            close_size()
            size = (int(match["w"]), int(match["h"]))
        elif (match := _DISCRETE_FPS.match(line) or _RANGE_FPS.match(line)) and size is not None:
            rates.append(round(float(match["fps"]), 3))
    close_format()
    return tuple(formats)


def query_formats(node: str) -> tuple[VideoFormat, ...]:
    """Ask the camera through v4l2-ctl. Enumerating formats does not disturb a running stream."""
    try:
        result = run(["v4l2-ctl", "--list-formats-ext", "-d", node], timeout=10)
    except CommandNotFoundError:
        raise FormatQueryError("v4l2-ctl is not installed (apt install v4l-utils)") from None
    except CommandTimeoutError:
        raise FormatQueryError(f"v4l2-ctl did not answer for {node} within 10 s") from None
    except CommandError as exc:
        tail = exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else f"exit {exc.returncode}"
        raise FormatQueryError(f"v4l2-ctl could not read {node}: {tail}") from None
    formats = parse_list_formats_ext(result.stdout)
    if not formats:
        raise FormatQueryError(f"{node} lists no capture formats")
    return formats
