"""Streamer CPU per camera in the lab VM: MJPEG passthrough against YUYV encoding, same size and fps.

    sudo .venv/bin/python -m benchmarks.streamer [--resolution 1280x720] [--fps 15] [--seconds 30]

Boots the lab VM, installs what `octobrixctl render` makes for one camera bound by its V4L2 name,
and runs the real ustreamer@ unit on a v4l2loopback camera that ffmpeg feeds (tests/lab/harness/
loopcam.py): once with MJPEG frames, as a compressing webcam sends them (ustreamer passes them
through: --encoder HW), once with raw YUYV (ustreamer compresses every frame: --encoder CPU). One
client reads /stream for the whole window, as a browser showing the Control tab does.

CPU is the unit's cgroup time over the window; fps is what that client received. The VM runs
under software emulation (TCG): absolute CPU figures are many times a real CPU's and the
delivered fps is bounded by the emulated CPU (ffmpeg's test source is fed from the same vCPU,
see loopcam.py); the ratio between the two formats, and CPU per delivered frame, carry over.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.lab.harness import loopcam
from tests.lab.harness.project import install_rendered, install_templates, render
from tests.lab.harness.vm import Vm

UNIT = "ustreamer@cam1.service"
PORT = 8081


@dataclass(frozen=True)
class Run:
    fmt: str
    cpu_seconds: float
    feeder_cpu_seconds: float
    frames: int
    seconds: float

    @property
    def cpu_percent(self) -> float:
        return 100 * self.cpu_seconds / self.seconds

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    @property
    def cpu_ms_per_frame(self) -> float:
        return 1000 * self.cpu_seconds / max(self.frames, 1)


def config(resolution: str, fps: int, fmt: str) -> str:
    return (
        f'[cameras.cam1]\ndevice_name = "{loopcam.NAME}"\nresolution = "{resolution}"\nfps = {fps}\n'
        f'format = "{fmt}"\nport = {PORT}\n'
    )


def wait_online(vm: Vm, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = vm.run(["curl", "-s", f"http://127.0.0.1:{PORT}/state"], check=False).stdout
        if '"online": true' in state:
            return
        time.sleep(1)
    raise RuntimeError(f"{UNIT} never captured:\n{vm.journal(UNIT, lines=40)}")


def measure(vm: Vm, workdir: Path, resolution: str, fps: int, *, fmt: str, seconds: float) -> Run:
    install_rendered(vm, render(config(resolution, fps, fmt), workdir / fmt))
    vm.run(["systemctl", "daemon-reload"])
    # A fresh device per format: v4l2loopback keeps the last writer's format after it closes.
    loopcam.unload(vm)
    loopcam.load(vm)
    loopcam.feed(vm, resolution, fps, fmt)
    vm.run(["systemctl", "restart", UNIT])
    wait_online(vm)
    time.sleep(5)  # past start-up: ustreamer leaves --slowdown once the client below connects
    cpu_before = loopcam.cpu_seconds(vm, UNIT)
    feeder_before = loopcam.cpu_seconds(vm, loopcam.FEED_UNIT)
    frames, elapsed = loopcam.count_frames(vm, PORT, seconds)
    cpu = loopcam.cpu_seconds(vm, UNIT) - cpu_before
    feeder = loopcam.cpu_seconds(vm, loopcam.FEED_UNIT) - feeder_before
    vm.run(["systemctl", "stop", UNIT])
    return Run(fmt, cpu, feeder, frames, elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", default="1280x720")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="oblab-bench-", dir="/tmp"))
    vm = Vm(workdir)
    try:
        vm.start()
        install_templates(vm, "ustreamer@.service")
        install_rendered(vm, render(config(args.resolution, args.fps, "mjpeg"), workdir / "first"))
        loopcam.pin_streamer(vm, UNIT)
        runs = [
            measure(vm, workdir, args.resolution, args.fps, fmt=fmt, seconds=args.seconds) for fmt in ("mjpeg", "yuyv")
        ]
    finally:
        vm.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"ustreamer, one camera at {args.resolution}@{args.fps}, {args.seconds:g} s with one /stream client, "
        f"lab VM (TCG, 2 vCPUs; host load average {os.getloadavg()[0]:.1f})"
    )
    print(f"{'format':<22} {'CPU %':>7} {'CPU ms/frame':>13} {'fps delivered':>14} {'(feeder CPU %)':>15}")
    for run, label in zip(runs, ("MJPEG passthrough (HW)", "YUYV encoded (CPU)"), strict=True):
        print(
            f"{label:<22} {run.cpu_percent:>7.1f} {run.cpu_ms_per_frame:>13.2f} {run.fps:>9.1f} of {args.fps:<2} "
            f"{100 * run.feeder_cpu_seconds / run.seconds:>12.1f}"
        )
    mjpeg, yuyv = runs
    print(
        f"ratio YUYV/MJPEG: {yuyv.cpu_percent / max(mjpeg.cpu_percent, 1e-9):.1f}x the CPU, "
        f"{yuyv.cpu_ms_per_frame / max(mjpeg.cpu_ms_per_frame, 1e-9):.1f}x the CPU per delivered frame"
    )


if __name__ == "__main__":
    main()
