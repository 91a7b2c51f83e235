"""A camera in the lab VM: a v4l2loopback device fed by ffmpeg's test source.

QEMU has no emulated UVC camera (TESTLAB.md), so the camera is v4l2loopback (in the VM image)
with ffmpeg writing frames into it: YUYV like a raw webcam, or MJPEG like a compressing one. With
exclusive_caps=1 the node offers capture only while a writer runs, as a plugged-in camera does.

v4l2loopback 0.12.7 (bookworm) keeps its buffer list without a lock between writer and reader
(upstream issue v4l2loopback#532): with ffmpeg writing on one CPU while the streamer dequeues on
the other, the guest kernel panicked here with "list_del corruption" in buffer_written(). Pinning
writer and streamer to the same CPU (CPUAffinity=0, a lab-only drop-in) rules that race out; a
real UVC camera's driver has no such problem, so octobrix's units stay unpinned.
"""

from __future__ import annotations

import re
import subprocess
import time
from typing import Protocol

NAME = "Lab Cam (loopback)"
NODE = "/dev/video10"
FEED_UNIT = "lab-feed.service"
# ustreamer asks for cores + 1 buffers (3 here); v4l2loopback offers 2 unless told otherwise.
MODULE_OPTIONS = ("video_nr=10", "exclusive_caps=1", "max_buffers=8", f'card_label="{NAME}"')
FRAME_COUNTER = "/root/lab-count-frames.py"
# Counts the JPEG frames a /stream client receives: what a browser would show.
_COUNTER = r"""
import socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
conn = socket.create_connection(("127.0.0.1", port), timeout=30)
conn.sendall(b"GET /stream HTTP/1.1\r\nHost: lab\r\n\r\n")
tail, frames, first, last = b"", 0, None, None
deadline = time.monotonic() + seconds + 30
while time.monotonic() < deadline:
    data = conn.recv(1 << 18)
    if not data:
        break
    chunk = tail + data
    found = chunk.count(b"\xff\xd8\xff")
    if found:
        now = time.monotonic()
        if first is None:
            first, found = now, found - 1
        frames += found
        last = now
        if now - first >= seconds:
            break
    tail = chunk[-2:]
print(f"{frames} {(last or 0) - (first or 0):.3f}")
"""


class Guest(Protocol):
    def run(
        self, argv: list[str], *, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]: ...

    def sh(self, script: str, *, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]: ...

    def write_file(self, guest_path: str, data: str | bytes, *, mode: int = 0o644) -> None: ...

    def wait_for_path(self, guest_path: str, *, present: bool = True, timeout: float = 20.0) -> float: ...


def load(guest: Guest) -> None:
    guest.run(["modprobe", "v4l2loopback", *MODULE_OPTIONS])
    guest.wait_for_path(NODE)
    guest.run(["udevadm", "settle"])


def unload(guest: Guest) -> None:
    stop_feed(guest)
    guest.run(["modprobe", "-r", "v4l2loopback"], check=False)


def unplug(guest: Guest, timeout: float = 60.0) -> float:
    """The camera's cable out: the frames stop and the device goes. Returns the guest's clock
    (seconds since the epoch) at the moment the node was removed.

    v4l2loopback 0.12.7 has no control device (no `v4l2loopback-ctl delete`): removing the module
    is the only way to remove its node, and the kernel refuses while anyone holds the node open.
    With no frames coming, a streamer closes the node and opens it again about once a second; the
    removal is retried until it lands in such a gap. It runs on CPU 0 like the writer and the
    streamer (see the module doc), so nothing of v4l2loopback's runs on two CPUs at once.
    """
    stop_feed(guest)
    script = "until taskset -c 0 modprobe -r v4l2loopback 2>/dev/null; do sleep 0.1; done; date +%s.%N"
    removed = guest.run(["sh", "-c", script], check=False, timeout=timeout)
    if removed.returncode != 0:
        raise AssertionError(f"v4l2loopback could not be removed within {timeout:.0f}s (its node stayed open)")
    return float(removed.stdout)


def feed(guest: Guest, resolution: str, fps: int, fmt: str) -> None:
    """ffmpeg's test pattern into the loopback node, in real time: "yuyv" raw or "mjpeg" compressed."""
    stop_feed(guest)
    codec = ["-c:v", "mjpeg", "-q:v", "5"] if fmt == "mjpeg" else ["-pix_fmt", "yuyv422"]
    guest.run(
        ["systemd-run", f"--unit={FEED_UNIT}", "-p", "CPUAffinity=0", "ffmpeg", "-nostdin", "-loglevel", "error",
         "-re", "-f", "lavfi", "-i", f"testsrc=size={resolution}:rate={fps}", *codec, "-f", "v4l2", NODE]
    )  # fmt: skip
    # The node offers capture once the first frame is written (exclusive_caps).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        caps = guest.run(["v4l2-ctl", "-d", NODE, "--info"], check=False).stdout
        if "Video Capture" in caps.split("Device Caps", 1)[-1]:
            return
        time.sleep(1)
    raise AssertionError(f"ffmpeg never fed {NODE}:\n{guest.run(['journalctl', '-u', FEED_UNIT], check=False).stdout}")


def announce(guest: Guest) -> None:
    """Has udev judge the fed node again. It judged it when the module made it, before any writer:
    with exclusive_caps the node then offered output only, and discovery lists capture nodes. A real
    camera is a capture device from the moment it is plugged in; after this the loopback is too."""
    guest.run(["udevadm", "trigger", "--action=change", "--settle", NODE])


def pause_feed(guest: Guest) -> None:
    """The camera hangs: the writer keeps the node open and writes nothing (SIGSTOP). Each reopen by
    the streamer then gets the last written frame once more, and then nothing (v4l2loopback 0.12.7:
    a new reader starts one frame behind the writer), as a camera whose firmware hung can."""
    guest.run(["systemctl", "kill", "--signal=SIGSTOP", FEED_UNIT])


def resume_feed(guest: Guest) -> None:
    guest.run(["systemctl", "kill", "--signal=SIGCONT", FEED_UNIT], check=False)


def stop_feed(guest: Guest) -> None:
    guest.run(["systemctl", "stop", FEED_UNIT], check=False)
    guest.run(["systemctl", "reset-failed", FEED_UNIT], check=False)


def pin_streamer(guest: Guest, unit: str) -> None:
    """The lab-only drop-in that keeps the streamer on the CPU the writer uses (see the module doc)."""
    guest.write_file(f"/etc/systemd/system/{unit}.d/90-lab-same-cpu.conf", "[Service]\nCPUAffinity=0\n")
    guest.run(["systemctl", "daemon-reload"])


def cpu_seconds(guest: Guest, unit: str) -> float:
    """CPU time the unit's cgroup has used so far."""
    group = guest.run(["systemctl", "show", "-p", "ControlGroup", "--value", unit]).stdout.strip()
    stat = guest.run(["cat", f"/sys/fs/cgroup{group}/cpu.stat"]).stdout
    found = re.search(r"^usage_usec (\d+)$", stat, re.MULTILINE)
    if found is None:
        raise AssertionError(f"no usage_usec for {unit}: {stat!r}")
    return int(found[1]) / 1e6


def count_frames(guest: Guest, port: int, seconds: float) -> tuple[int, float]:
    """(frames, seconds) a /stream client received, measured in the guest."""
    guest.write_file(FRAME_COUNTER, _COUNTER)
    out = guest.run(["python3", FRAME_COUNTER, str(port), str(seconds)], timeout=seconds + 60).stdout.split()
    return int(out[0]), float(out[1])
