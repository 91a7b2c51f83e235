"""The camera health check's CPU cost with four cameras configured, per camera per idle minute.

    .venv/bin/python -m benchmarks.camera_check [--looks 300]

Runs octobrixd's real check (camera_health.Watch.check, what the daemon runs every 30 s) against
four loopback HTTP stand-ins answering like ustreamer's /snapshot (tests/httpstub.py: a ustreamer
needs a camera and a fixed port) with a new 64 KB frame each time (a 1280x720 MJPEG frame is
40-120 KB), with the four /dev/octobrix links in a scratch root. Baseline, measured in the same run:
the same four snapshots fetched and hashed with urllib, the obvious way to write it. CPU is the asking
thread's own (the stand-ins run on other threads of this process). Target: at most 0.01 s CPU per
camera per idle minute.
tests/lab/test_cameras_vm.py runs this benchmark inside the lab VM (TCG) and prints octobrixd's own
figure from its looks at the real ustreamer there.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from octobrixd.cameras.health import CHECK_SECONDS, Watch
from octobrixd.config.model import parse_config
from octobrixd.system.paths import Layout
from tests.httpstub import QuietHandler, serving

CAMERAS = 4
FRAME_BYTES = 64 * 1024


def urllib_new_frame(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/snapshot", timeout=5) as response:
        online = response.headers.get("X-UStreamer-Online") == "true"
        return online and bool(hashlib.blake2b(response.read(16 << 20), digest_size=16).hexdigest())


class Snapshot(QuietHandler):
    frames = itertools.count()

    def do_GET(self) -> None:
        body = b"\xff\xd8" + next(self.frames).to_bytes(8, "big") * (FRAME_BYTES // 8)
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("X-UStreamer-Online", "true")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--looks", type=int, default=300)
    args = parser.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as scratch:
        ports = [stack.enter_context(serving(Snapshot)) for _ in range(CAMERAS)]
        root = Path(scratch)
        (root / "dev/octobrix").mkdir(parents=True)
        text = ""
        for n, port in enumerate(ports):
            (root / f"dev/video{n}").touch()
            (root / f"dev/octobrix/cam{n}").symlink_to(root / f"dev/video{n}")
            text += f'[cameras.cam{n}]\nserial = "SN{n}"\nport = {port}\n\n'
        config = parse_config(text, "/etc/octobrix.toml")
        watch = Watch(Layout(root), restart=lambda _unit: None, is_active=lambda _unit: False)
        watch.check(config)  # imports and the first save are not idling

        started = time.thread_time()
        for _ in range(args.looks):
            watch.check(config)
        ours = (time.thread_time() - started) / (args.looks * CAMERAS)

        started = time.thread_time()
        for _ in range(args.looks):
            for port in ports:
                urllib_new_frame(port)
        baseline = (time.thread_time() - started) / (args.looks * CAMERAS)

    per_minute = ours * 60 / CHECK_SECONDS
    print(f"camera check, {CAMERAS} cameras, {args.looks} looks each:")
    print(f"  one look at one camera:        {ours * 1000:.3f} ms CPU (urllib baseline {baseline * 1000:.3f} ms, "
          f"ratio {ours / baseline:.2f})")  # fmt: skip
    print(f"  per camera per idle minute:    {per_minute:.5f} s CPU at one look every {CHECK_SECONDS:.0f} s "
          f"(target <= 0.01; {per_minute / 0.01:.1%} of it)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
