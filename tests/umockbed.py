"""Run an octobrixctl device command against umockdev recordings, in a umockdev testbed.

Must run under `umockdev-wrapper`, with a Python that has gi (Debian's, or a venv made with
--system-site-packages):

    umockdev-wrapper python tests/umockbed.py --device A.umockdev [--device B.umockdev] \
        [--plug C.umockdev] [--formats /dev/video0=FILE] discover --json --config F

Everything after the subcommand goes to octobrixctl as it is.

--plug adds C's devices (with their "add" uevents) once discover --wait's udev monitor is
listening: that is the user plugging a board in. --formats answers the camera format query for
one node from a saved `v4l2-ctl --list-formats-ext` output, because umockdev answers no V4L2
ioctl; without it the real query runs (and fails, as it must under umockdev).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Any

# Opened (and failing: the path does not exist) right before and after the command, so an
# strace of this process can tell the command's own system calls from the testbed's set-up.
MARK_START = "/octobrix-umockbed-mark/start"
MARK_END = "/octobrix-umockbed-mark/end"


def recording_text(path: Path) -> str:
    """A recording without its comment header, which umockdev's parser would reject."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "".join(lines)


def blocks(text: str) -> list[str]:
    return [block.strip() + "\n" for block in text.split("\n\n") if block.strip()]


class Bed:
    """A testbed that accepts overlapping recordings: each sysfs device is added once."""

    def __init__(self) -> None:
        import gi  # noqa: PLC0415 — only importable under the system Python

        gi.require_version("UMockdev", "1.0")
        from gi.repository import UMockdev  # noqa: PLC0415

        self.testbed: Any = UMockdev.Testbed.new()
        self.added: set[str] = set()

    def add(self, path: Path) -> None:
        # Each file repeats shared ancestors (controller, root hub, hubs), as umockdev-record
        # writes them; umockdev would re-add those and announce them again.
        fresh = []
        for block in blocks(recording_text(path)):
            sys_path = block.split("\n", 1)[0].removeprefix("P: ").strip()
            if sys_path not in self.added:
                self.added.add(sys_path)
                fresh.append(block)
        # umockdev-record writes children first, but the kernel adds parents first: a child's
        # "add" uevent must find its USB device's attributes already there, as on real hardware.
        fresh.sort(key=lambda block: block.split("\n", 1)[0].count("/"))
        if fresh:
            self.testbed.add_from_string("\n".join(fresh))


def fake_format_query(answers: dict[str, Path]) -> Any:
    from octobrixd.devices.v4l2 import FormatQueryError, VideoFormat, parse_list_formats_ext  # noqa: PLC0415

    def query(node: str) -> tuple[VideoFormat, ...]:
        if node not in answers:
            raise FormatQueryError(f"no saved formats for {node} in this test")
        return parse_list_formats_ext(answers[node].read_text(encoding="utf-8"))

    return query


def plug_when_listening(bed: Bed, recordings: list[Path]) -> None:
    import pyudev  # noqa: PLC0415

    original_start = pyudev.Monitor.start

    def start_then_plug(self: Any) -> None:
        original_start(self)

        def plug() -> None:
            for path in recordings:
                bed.add(path)

        threading.Thread(target=plug, daemon=True).start()

    pyudev.Monitor.start = start_then_plug


def mark(path: str) -> None:
    with contextlib.suppress(OSError), Path(path).open(encoding="utf-8"):
        pass


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", type=Path, action="append", default=[])
    parser.add_argument("--plug", type=Path, action="append", default=[])
    parser.add_argument("--formats", action="append", default=[], metavar="NODE=FILE")
    parser.add_argument("command", help="an octobrixctl subcommand: discover, doctor...")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    ours = parser.parse_args()

    if "UMOCKDEV_DIR" not in os.environ and "umockdev" not in os.environ.get("LD_PRELOAD", ""):
        print("umockbed.py must run under umockdev-wrapper", file=sys.stderr)
        return 2
    bed = Bed()
    for path in ours.device:
        bed.add(path)
    if ours.plug:
        plug_when_listening(bed, ours.plug)
    if ours.formats:
        from octobrixd.devices import v4l2  # noqa: PLC0415

        answers = {node: Path(file) for node, file in (item.split("=", 1) for item in ours.formats)}
        v4l2.query_formats = fake_format_query(answers)

    from octobrixd.cli.main import main as octobrixctl  # noqa: PLC0415 — after the testbed exists

    mark(MARK_START)
    status = octobrixctl([ours.command, *ours.rest])
    mark(MARK_END)
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
