"""Asking a stream how it is doing, as doctor does: a real HTTP server stands in for ustreamer."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from octobrixd.cameras.streams import fetch_snapshot, missing_programs, stream_ratio, ustreamer_state
from octobrixd.config.model import parse_config
from octobrixd.system.paths import Layout
from tests.httpstub import QuietHandler, serving


def make_jpeg(tmp_path: Path, size: str) -> bytes:
    """A real JPEG from ffmpeg when it is there, else a minimal baseline JPEG header of that size."""
    width, height = (int(v) for v in size.split("x"))
    out = tmp_path / f"{size}.jpg"
    made = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc=size={size}", "-frames:v", "1", "-y", out],
        capture_output=True,
        check=False,
    ) if Path("/usr/bin/ffmpeg").exists() else None  # fmt: skip
    if made is not None and made.returncode == 0:
        return out.read_bytes()
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0\x00\x11\x08" + height.to_bytes(2, "big") + width.to_bytes(2, "big") + b"\x03" + b"\x00" * 9
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


class Stub(QuietHandler):
    routes: ClassVar[dict[str, tuple[int, str, bytes]]] = {}

    def do_GET(self) -> None:
        status, kind, body = self.routes.get(self.path, (404, "text/plain", b"no"))
        self.reply(status, body, kind)


@pytest.fixture
def server() -> Iterator[int]:
    with serving(Stub) as port:
        yield port


def test_snapshot_and_state_as_doctor_asks_them(server: int, tmp_path: Path) -> None:
    state = {"ok": True, "result": {"source": {"resolution": {"width": 1280, "height": 720}, "online": True,
                                                "captured_fps": 15}}}  # fmt: skip
    Stub.routes = {
        "/snapshot": (200, "image/jpeg", make_jpeg(tmp_path, "1280x720")),
        "/state": (200, "application/json", json.dumps(state).encode()),
        "/broken": (200, "text/html", b"<html>oops</html>"),
    }
    shot = fetch_snapshot(f"http://127.0.0.1:{server}/snapshot")
    assert shot.ok and (shot.width, shot.height) == (1280, 720)
    assert shot.detail.startswith(f"http://127.0.0.1:{server}/snapshot answered a 1280x720 JPEG (")
    broken = fetch_snapshot(f"http://127.0.0.1:{server}/broken")
    assert not broken.ok and "that are not a JPEG image" in broken.detail
    missing = fetch_snapshot(f"http://127.0.0.1:{server}/nothing")
    assert not missing.ok and missing.detail.endswith("answered HTTP 404")
    live = ustreamer_state(server)
    assert live is not None and live.online and (live.width, live.height) == (1280, 720) and live.captured_fps == 15


def test_nothing_listening_is_said_plainly(server: int) -> None:
    shot = fetch_snapshot("http://127.0.0.1:9/snapshot", timeout=2)
    assert not shot.ok and "did not answer" in shot.detail
    assert ustreamer_state(9, timeout=2) is None


@pytest.mark.parametrize(("size", "ratio"), [("1280x720", "16:9"), ("1920x1080", "16:9"), ("640x480", "4:3"),
                                             ("800x600", "4:3"), ("1280x960", "4:3")])  # fmt: skip
def test_stream_ratio_is_the_nearer_of_what_octoprint_offers(size: str, ratio: str) -> None:
    width, height = (int(v) for v in size.split("x"))
    assert stream_ratio(width, height) == ratio


def test_missing_streamers_and_v4l2_ctl_are_named_with_the_way_to_get_them(tmp_path: Path) -> None:
    config = parse_config(
        '[cameras.a]\nserial = "A"\nport = 8081\n[cameras.b]\nserial = "B"\nport = 8082\nstreamer = "mjpg-streamer"\n'
        "[cameras.b.controls]\nfocus_absolute = 10\n",
        "/etc/octobrix.toml",
    )
    warnings = missing_programs(config, Layout(tmp_path))
    assert warnings[0] == (
        "b: mjpg-streamer is not installed (/usr/local/bin/mjpg_streamer), so the stream will not start — Debian "
        "and Ubuntu do not package mjpg-streamer; build it: sudo apt install git cmake gcc g++ libjpeg-dev && git "
        "clone https://github.com/jacksonliam/mjpg-streamer && cd mjpg-streamer/mjpg-streamer-experimental && make "
        '&& sudo make install — or use streamer = "ustreamer" (sudo apt install ustreamer), which octobrix prefers'
    )
    assert warnings[1].startswith("a: ustreamer is not installed") and "sudo apt install ustreamer" in warnings[1]
    assert warnings[2] == "b: controls are set with v4l2-ctl, which is not installed — sudo apt install v4l-utils"
    for program in ("usr/bin/ustreamer", "usr/local/bin/mjpg_streamer", "usr/bin/v4l2-ctl"):
        path = tmp_path / program
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    assert missing_programs(config, Layout(tmp_path)) == []
