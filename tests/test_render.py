"""Golden files for every renderer: the generated tree for a config is exactly what is checked in.

To accept an intended change: OCTOBRIX_UPDATE_GOLDEN=1 pytest tests/test_render.py, then review the diff.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from octobrixd.config.model import parse_config
from octobrixd.render.octoprint import merge_seed, octoprint_seed
from octobrixd.render.tree import render_all
from octobrixd.render.units import render_streamer_dropin
from octobrixd.system import paths
from tests.conftest import REPO, STARTER_CONFIG

GOLDEN = Path(__file__).parent / "golden"
CASES = {"starter": STARTER_CONFIG, "farm": Path(__file__).parent / "data" / "farm.toml"}


def rendered_tree(config_path: Path) -> dict[str, str]:
    # A fixed source path keeps the headers independent of where the checkout lives.
    config = parse_config(config_path.read_text(encoding="utf-8"), "/etc/octobrix.toml")
    return {str(path): rendered.text for path, rendered in render_all(config).items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    tree = rendered_tree(CASES[case])
    golden_dir = GOLDEN / case
    if os.environ.get("OCTOBRIX_UPDATE_GOLDEN"):
        shutil.rmtree(golden_dir, ignore_errors=True)
        for rel, text in tree.items():
            (golden_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (golden_dir / rel).write_text(text, encoding="utf-8")
    on_disk = {
        str(p.relative_to(golden_dir)): p.read_text(encoding="utf-8") for p in golden_dir.rglob("*") if p.is_file()
    }
    assert sorted(tree) == sorted(on_disk), f"files differ from {golden_dir.relative_to(REPO)}"
    for rel, text in tree.items():
        assert text == on_disk[rel], f"{rel} differs from its golden file"


def test_udev_rules_bind_each_device_once_and_mark_printers() -> None:
    rules = rendered_tree(CASES["farm"])["etc/udev/rules.d/99-octobrix.rules"]
    lines = [line for line in rules.splitlines() if line and not line.startswith("#")]
    # Each printer: its board's first serial port, then any other one at a lower link priority.
    assert len(lines) == 7, "demo is virtual: two printers (two rules each) and three cameras get rules"
    printers = [line for line in lines if 'ENV{OCTOBRIX_KIND}="printer"' in line]
    assert all('ENV{ID_MM_DEVICE_IGNORE}="1"' in line for line in printers)
    assert all('KERNEL=="ttyACM[0-9]*|ttyUSB[0-9]*"' in line for line in printers)
    cameras = [line for line in lines if 'ENV{OCTOBRIX_KIND}="camera"' in line]
    assert all('ATTR{index}=="0"' in line for line in cameras), "only the capture node, not metadata"
    assert any('KERNELS=="1-1.2:*"' in line and 'SYMLINK+="octobrix/ender-3"' in line for line in printers)
    assert any('ATTRS{serial}=="CZPX1919X004XC24974"' in line and "octobrix/prusa" in line for line in printers)
    # A camera bound by its V4L2 name matches the video device's own attribute, with no USB parent.
    builtin = next(line for line in cameras if "octobrix/builtin" in line)
    assert 'ATTR{name}=="Integrated Camera: Integrated C"' in builtin
    assert "KERNELS" not in builtin and "SUBSYSTEMS" not in builtin


def test_each_printers_octoprint_may_open_only_its_own_device() -> None:
    tree = rendered_tree(CASES["farm"])

    def allowed(name: str) -> list[str]:
        dropin = tree[f"etc/systemd/system/octoprint@{name}.service.d/50-octobrix.conf"]
        return [line for line in dropin.splitlines() if line.startswith("Device")]

    assert allowed("prusa") == ["DeviceAllow=/dev/octobrix/prusa rw"]
    assert allowed("ender-3") == ["DeviceAllow=/dev/octobrix/ender-3 rw"]
    assert allowed("demo") == [], "a virtual printer opens no device"
    # The template allows no device of its own: no tty group any printer's OctoPrint could open.
    template = (REPO / "systemd" / "octoprint@.service").read_text(encoding="utf-8")
    devices = [line for line in template.splitlines() if line.startswith("Device")]
    assert devices == ["DevicePolicy=closed"]


def test_a_printers_octoprint_lives_in_its_home_below_roots_state_directory() -> None:
    template = (REPO / "systemd" / "octoprint@.service").read_text(encoding="utf-8")
    assert "Environment=HOME=/var/lib/octobrix/%i/home PYTHONUNBUFFERED=1\n" in template
    assert "WorkingDirectory=/var/lib/octobrix/%i/home\n" in template
    assert "ReadWritePaths=/var/lib/octobrix/%i\n" in template


def test_a_printers_octoprint_gets_its_cameras_urls() -> None:
    tree = rendered_tree(CASES["farm"])
    prusa = yaml.safe_load(tree["var/lib/octobrix/prusa/octobrix-seed.yaml"])
    classic = prusa["plugins"]["classicwebcam"]
    # The browser loads the stream through the front door, by whatever name it reached the farm
    # (with the front door off, by the public name: test_stream_urls_follow_listen_and_public_host);
    # OctoPrint fetches snapshots over loopback.
    assert classic["stream"] == "/cam/prusacam/stream"
    assert classic["snapshot"] == "http://127.0.0.1:8081/snapshot"
    assert classic["streamRatio"] == "16:9"
    assert classic["_config_version"] == 1, "or OctoPrint's first start 'migrates' the URLs away"
    assert prusa["webcam"]["ffmpeg"] == "/usr/bin/ffmpeg", "timelapses need ffmpeg"
    assert prusa["webcam"]["webcamEnabled"] is True, "on again for a printer that has a camera now"
    ender = yaml.safe_load(tree["var/lib/octobrix/ender-3/octobrix-seed.yaml"])["plugins"]["classicwebcam"]
    assert ender["stream"] == "/cam/endercam/?action=stream", "mjpg-streamer's own paths"
    assert ender["snapshot"] == "http://127.0.0.1:8082/?action=snapshot"
    assert ender["streamRatio"] == "4:3"
    demo = yaml.safe_load(tree["var/lib/octobrix/demo/octobrix-seed.yaml"])
    assert "classicwebcam" not in demo["plugins"], "no camera: the user's own webcam URLs stay"
    # ...but no empty "Webcam stream not loaded" panel in OctoPrint's Control tab.
    assert demo["webcam"] == {"webcamEnabled": False}


@pytest.mark.parametrize(
    ("listen", "public", "stream", "snapshot"),
    [
        ("::", "fd00::20", "http://[fd00::20]:8081/stream", "http://127.0.0.1:8081/snapshot"),
        ("127.0.0.1", "farm.local", "http://farm.local:8081/stream", "http://127.0.0.1:8081/snapshot"),
        ("::1", "farm", "http://farm:8081/stream", "http://[::1]:8081/snapshot"),
        ("192.168.1.20", "192.168.1.20", "http://192.168.1.20:8081/stream", "http://192.168.1.20:8081/snapshot"),
    ],
)
def test_stream_urls_follow_listen_and_public_host(listen: str, public: str, stream: str, snapshot: str) -> None:
    config = parse_config(
        f'[octobrix]\nlisten = "{listen}"\npublic_host = "{public}"\n'
        # With the front door on, the stream URL is relative (tests/test_frontdoor.py).
        "[frontdoor]\nenabled = false\n"
        '[printers.p]\nvirtual = true\nport = 5000\ncamera = "c"\n[cameras.c]\nserial = "S"\nport = 8081\n',
        "/etc/octobrix.toml",
    )
    classic = octoprint_seed(config, "p")["plugins"]["classicwebcam"]
    assert (classic["stream"], classic["snapshot"]) == (stream, snapshot)


def test_mjpg_streamer_listens_on_both_families_unless_told_one_address() -> None:
    # Without the front door a streamer listens where [octobrix] listen says; with it, behind it on loopback.
    text = '[frontdoor]\nenabled = false\n[cameras.c]\nserial = "S"\nport = 8081\nstreamer = "mjpg-streamer"\n'
    everywhere = render_streamer_dropin(parse_config(text, "/etc/octobrix.toml"), "c")
    assert "Environment=OCTOBRIX_LISTEN_FLAGS=\n" in everywhere, "no -l: output_http binds IPv4 and IPv6"
    one = render_streamer_dropin(parse_config('[octobrix]\nlisten = "127.0.0.1"\n' + text, "x"), "c")
    assert 'Environment="OCTOBRIX_LISTEN_FLAGS=-l 127.0.0.1"\n' in one, "quoted, or systemd splits it"
    behind = render_streamer_dropin(parse_config(text.replace("enabled = false\n", ""), "x"), "c")
    assert 'Environment="OCTOBRIX_LISTEN_FLAGS=-l 127.0.0.1"\n' in behind, "the front door's alone"


def test_controls_are_set_one_by_one_in_the_order_written() -> None:
    text = (
        '[cameras.c]\nserial = "S"\nport = 8081\n[cameras.c.controls]\n'
        "auto_exposure = 1\nexposure_time_absolute = 250\nfocus_automatic_continuous = 0\n"
    )
    dropin = render_streamer_dropin(parse_config(text, "/etc/octobrix.toml"), "c")
    pre = [line for line in dropin.splitlines() if line.startswith("ExecStartPre=")]
    assert pre == [
        "ExecStartPre=-/usr/bin/v4l2-ctl --device=/dev/octobrix/%i --set-ctrl=auto_exposure=1",
        "ExecStartPre=-/usr/bin/v4l2-ctl --device=/dev/octobrix/%i --set-ctrl=exposure_time_absolute=250",
        "ExecStartPre=-/usr/bin/v4l2-ctl --device=/dev/octobrix/%i --set-ctrl=focus_automatic_continuous=0",
    ]


def test_every_generated_file_says_it_is_generated_and_from_where() -> None:
    for rel, text in rendered_tree(CASES["farm"]).items():
        assert "Generated by octobrix from /etc/octobrix.toml" in text.splitlines()[0], rel


def test_seed_merge_keeps_the_users_settings() -> None:
    current: dict[str, Any] = {
        "serial": {"port": "/dev/ttyUSB0", "timeout": {"connection": 20}},
        "webcam": {"flipH": True},
    }
    seed = {"serial": {"port": "/dev/octobrix/p1", "autoconnect": True}}
    merged = merge_seed(current, seed)
    assert merged == {
        "serial": {"port": "/dev/octobrix/p1", "autoconnect": True, "timeout": {"connection": 20}},
        "webcam": {"flipH": True},
    }
    assert current["serial"]["port"] == "/dev/ttyUSB0", "the input is not modified"


@pytest.mark.parametrize(
    ("section", "options"),
    [
        ("uncompressed_bandwidth_fix = true\n", "options uvcvideo uncompressed_bandwidth_fix=Y"),
        (
            "max_compressed_payload = 768\nuncompressed_bandwidth_fix = false\n",
            "options uvcvideo max_compressed_payload=768 uncompressed_bandwidth_fix=N",
        ),
    ],
)
def test_uvcvideo_section_becomes_modprobe_options(section: str, options: str) -> None:
    config = parse_config("[uvcvideo]\n" + section, "/etc/octobrix.toml")
    text = render_all(config)[paths.MODPROBE_FILE].text
    assert text.splitlines()[-1] == options
    assert paths.MODPROBE_FILE not in render_all(parse_config("", "/etc/octobrix.toml")), "nothing set, no file"
