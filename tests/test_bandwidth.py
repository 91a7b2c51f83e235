"""The USB bandwidth advisor: the kernel's own arithmetic, then recorded topologies through the commands
a user runs (discover, doctor, check, apply), with the stock driver and with the kmod's cap.
"""

from __future__ import annotations

import ast
import json
from dataclasses import replace
from pathlib import Path

import pytest

from octobrixd.cameras.bandwidth import Cap, Placement, advise, effective_cap, fix_bandwidth_payload, placements
from octobrixd.cameras.usb_descriptors import streaming_alt_payloads
from octobrixd.config.model import parse_config
from octobrixd.devices.usb_bus import fs_isoc_bus_time_us, hs_isoc_bus_time_us
from octobrixd.render.tree import render_all
from octobrixd.system import paths
from octobrixd.system.paths import Layout
from tests.conftest import Ctl
from tests.umock import bed, c270_per_bus, needs_umockdev, three_c270_on_a_hub

SRC = "/etc/octobrix.toml"
STOCK = Cap(0, "stock")
CAPPED = Cap(1024, "the patched uvcvideo")
FIXED = Cap(1024, "the patched uvcvideo", uncompressed_fix=True)


def cameras_toml(ports: list[str], *, resolution: str = "1280x720", fps: int = 15, fmt: str = "mjpeg") -> str:
    return "".join(
        f'[cameras.cam{n}]\nusb_port = "{port}"\nresolution = "{resolution}"\nfps = {fps}\nformat = "{fmt}"\n'
        f"port = {8080 + n}\n\n"
        for n, port in enumerate(ports, start=1)
    )


def plugged(ports: list[str], controller: str = "xhci_hcd", speed: float = 480) -> dict[str, Placement]:
    return {f"cam{n}": Placement(port, speed, controller, True) for n, port in enumerate(ports, start=1)}


def test_bus_time_is_the_kernels_arithmetic() -> None:
    # HS_USECS_ISO: a cheap camera's stock MJPEG request takes 61 of the 100 us; the kmod's default 21.
    assert hs_isoc_bus_time_us(3072) == 61
    assert hs_isoc_bus_time_us(1024) == 21
    # usb_calc_bus_time(FULL, isoc, 1023 bytes): most of a full-speed frame's 900 us.
    assert fs_isoc_bus_time_us(1023) == 807


def test_one_mjpeg_camera_per_bus_fits_even_with_the_stock_driver() -> None:
    config = parse_config(cameras_toml(["1-6", "3-1"]), SRC)
    where = plugged(["1-6", "3-1"], controller="ehci-pci")
    advice = advise(config, where, STOCK)
    assert [d.label for d in advice.domains] == ["bus 1", "bus 3"]
    assert all(d.used_us == 61 and not d.over for d in advice.domains)
    assert advice.warnings() == []


def test_three_mjpeg_720p_cameras_on_one_usb2_hub() -> None:
    ports = ["1-3.1", "1-3.2", "1-3.3"]
    config = parse_config(cameras_toml(ports), SRC)
    stock = advise(config, plugged(ports), STOCK)
    (hub,) = stock.domains
    assert hub.label == "bus 1, root port 1-3" and hub.used_us == 183 and hub.over
    assert hub.fitting == 1, "with the stock driver only the first camera to start streams"
    (warning,) = stock.warnings()
    assert "cam1, cam2, cam3 on bus 1, root port 1-3 (USB 2) would reserve 183 µs of the 100 µs" in warning
    assert "'No space left on device'" in warning
    assert "`sudo octobrixctl kmod install` and `[uvcvideo] max_compressed_payload = 1024`" in warning
    assert "another root port or USB controller" in warning
    assert "Lower fps or resolution does not" in warning

    capped = advise(config, plugged(ports), CAPPED)
    assert capped.domains[0].used_us == 63 and not capped.domains[0].over
    assert capped.warnings() == []


def test_xhci_budgets_each_root_port_but_ehci_the_whole_bus() -> None:
    ports = ["1-1", "1-2"]
    config = parse_config(cameras_toml(ports), SRC)
    assert not advise(config, plugged(ports, "xhci_hcd"), STOCK).over
    (shared,) = advise(config, plugged(ports, "ehci-pci"), STOCK).over
    assert shared.label == "bus 1"


def test_a_config_alone_is_judged_as_usb2_on_the_bus_its_ports_name(tmp_path: Path) -> None:
    ports = ["2-1.1", "2-1.2"]
    config = parse_config(cameras_toml(ports), SRC)
    where = placements(config, None, Layout(tmp_path))
    assert where["cam1"] == Placement("2-1.1", None, None, attached=False)
    (domain,) = advise(config, where, STOCK).over
    assert domain.label == "bus 2"


def test_yuyv_reserves_its_largest_setting_stock_and_what_its_mode_needs_with_the_fix() -> None:
    small = parse_config(cameras_toml(["1-1"], resolution="640x480", fps=10, fmt="yuyv"), SRC)
    (load,) = advise(small, plugged(["1-1"]), STOCK).domains[0].cameras
    assert (load.request_bytes, load.reserved_bytes, load.bus_time_us) == (3072, 3072, 61), (
        "the stock driver takes the camera's own request, its largest packet, whatever the mode"
    )
    (load,) = advise(small, plugged(["1-1"]), FIXED).domains[0].cameras
    # The kernel's estimate (640*480/8*16 * 11 / 1000 / 8 + 12 = 856) is raised to its floor of 1024;
    # the smallest typical alternate setting holding 1024 bytes is 2 x 800.
    assert (load.request_bytes, load.reserved_bytes, load.bus_time_us) == (1024, 1600, 32)
    big = parse_config(cameras_toml(["1-1"], resolution="1280x720", fps=15, fmt="yuyv"), SRC)
    (problem,) = advise(big, plugged(["1-1"]), STOCK).warnings()
    assert problem.startswith("cameras.cam1: YUYV 1280x720@15 needs about 3468 bytes per microframe")
    assert 'format = "mjpeg"' in problem


# What uvc_fixup_video_ctrl() asks for with FIX_BANDWIDTH (drivers/media/usb/uvc/uvc_video.c, identical in
# linux-source 5.10, 6.1, 6.12, 7.2 and 7.3): bandwidth = wWidth * wHeight / 8 * bpp (16 for YUYV);
# bandwidth *= 10000000 / dwFrameInterval + 1; bandwidth /= 1000; bandwidth /= 8 (high speed);
# bandwidth += 12; bandwidth = max(bandwidth, 1024). Worked by hand from those lines, e.g. 640x480@30:
# 614400 * 31 = 19046400 -> 19046 -> 2380 -> 2392. Then the typical table (128, 256, 800, 1600, 2400,
# 3072) gives the setting uvc_video_start_transfer() picks: the smallest holding it, else the largest.
KERNEL_FIX_BANDWIDTH = {
    (640, 480): {5: 1024, 10: 1024, 15: 1240, 20: 1624, 25: 2008, 30: 2392},
    (1280, 720): {5: 1394, 10: 2546, 15: 3698, 20: 4850, 25: 6002, 30: 7154},
    (1920, 1080): {5: 3122, 10: 5714, 15: 8306, 20: 10898, 25: 13490, 30: 16082},
}
TYPICAL_SETTING = {1024: 1600, 1240: 1600, 1624: 2400, 2008: 2400, 2392: 2400, 1394: 1600, 2546: 3072}


@pytest.mark.parametrize(
    ("size", "fps"), [(size, fps) for size in KERNEL_FIX_BANDWIDTH for fps in (5, 10, 15, 20, 25, 30)]
)
def test_yuyv_figures_follow_the_kernels_fix_bandwidth_formula(size: tuple[int, int], fps: int) -> None:
    expected = KERNEL_FIX_BANDWIDTH[size][fps]
    assert fix_bandwidth_payload(size[0], size[1], fps) == expected
    config = parse_config(cameras_toml(["1-1"], resolution=f"{size[0]}x{size[1]}", fps=fps, fmt="yuyv"), SRC)
    (load,) = advise(config, plugged(["1-1"]), FIXED).domains[0].cameras
    assert load.request_bytes == expected
    setting = TYPICAL_SETTING.get(expected, 3072)  # more than the largest setting: the largest
    assert (load.reserved_bytes, load.bus_time_us) == (setting, hs_isoc_bus_time_us(setting))
    (stock,) = advise(config, plugged(["1-1"]), STOCK).domains[0].cameras
    assert stock.reserved_bytes == 3072, "stock: the camera's request, whatever the mode"


def test_two_vga_yuyv_cameras_on_one_usb2_bus_do_not_fit_with_the_stock_driver() -> None:
    """The "second camera fails" report: each needs ~2.3 KB per microframe, each reserves 3072 bytes."""
    ports = ["1-3.1", "1-3.2"]
    config = parse_config(cameras_toml(ports, resolution="640x480", fps=30, fmt="yuyv"), SRC)
    stock = advise(config, plugged(ports), STOCK)
    (domain,) = stock.over
    assert domain.used_us == 122 and domain.fitting == 1
    (warning,) = stock.warnings()
    assert "cam1, cam2 on bus 1, root port 1-3 (USB 2) would reserve 122 µs of the 100 µs" in warning
    assert (
        "`[uvcvideo] uncompressed_bandwidth_fix = true` (`sudo octobrixctl kmod install`): each YUYV camera then "
        "reserves what its mode needs instead of its largest packet (cam1 2400, cam2 2400 bytes, from a typical "
        "cheap camera's settings); 96 of 100 µs, they fit"
    ) in warning
    assert "a lower rate: fps = 25 for the YUYV cameras (96 µs, with the fix on)" in warning
    assert 'a lower size: resolution = "320x240"' in warning
    assert "another root port or USB controller" in warning

    fixed = advise(config, plugged(ports), FIXED)
    assert not fixed.over and fixed.domains[0].used_us == 96 and fixed.warnings() == []


def c270_descriptors() -> bytes:
    """Raw descriptors as /sys/bus/usb/devices/PORT/descriptors holds them for a Logitech C270 (046d:0825):
    its video-streaming interface's isochronous alternate settings, as `lsusb -v` lists them for this
    model (1x192 ... 3x1020). Only the descriptors the parser reads, in the order the device sends them."""
    device = bytes([18, 1, 0x00, 0x02, 0xEF, 0x02, 0x01, 64, 0x6D, 0x04, 0x25, 0x08, 0x10, 0x00, 0, 2, 1, 1])
    config = bytes([9, 2, 0, 0, 4, 1, 0, 0x80, 250])
    iad = bytes([8, 11, 0, 2, 0x0E, 0x03, 0, 0])
    control = bytes([9, 4, 0, 0, 1, 0x0E, 0x01, 0, 0]) + bytes([7, 5, 0x87, 3, 16, 0, 8])
    streaming = bytes([9, 4, 1, 0, 0, 0x0E, 0x02, 0, 0]) + bytes([14, 0x24, 1, 1, 0, 0, 0x81, 0, 0, 0, 0, 0, 1, 0])
    sizes = (0x00C0, 0x0180, 0x0200, 0x0280, 0x0320, 0x03B0, 0x0A80, 0x0B20, 0x0BE0, 0x1380, 0x13FC)
    alts = b"".join(
        bytes([9, 4, 1, alt, 1, 0x0E, 0x02, 0, 0]) + bytes([7, 5, 0x81, 5, size & 0xFF, size >> 8, 1])
        for alt, size in enumerate(sizes, start=1)
    )
    audio = bytes([9, 4, 2, 1, 1, 0x01, 0x02, 0, 0]) + bytes([9, 5, 0x86, 5, 0x44, 0x00, 4, 0, 0])
    return device + config + iad + control + streaming + alts + audio


C270_SETTINGS = (192, 384, 512, 640, 800, 944, 1280, 1600, 1984, 2688, 3060)


def test_a_cameras_own_alternate_settings_are_read_from_its_descriptors() -> None:
    assert streaming_alt_payloads(c270_descriptors()) == C270_SETTINGS, "the audio endpoint is not the camera's"
    # With the C270's own settings two VGA@30 cameras still overbook the bus with the fix (2392 -> 2688 bytes,
    # 53 µs each): the advice names the rate that fits (20 fps: 1624 -> 1984 bytes, 40 µs each).
    ports = ["1-3.1", "1-3.2"]
    config = parse_config(cameras_toml(ports, resolution="640x480", fps=30, fmt="yuyv"), SRC)
    where = {name: replace(p, alt_payloads=C270_SETTINGS) for name, p in plugged(ports).items()}
    (warning,) = advise(config, where, STOCK).warnings()
    assert "(cam1 2688, cam2 2688 bytes, from their descriptors); 106 of 100 µs, still too much" in warning
    assert "a lower rate: fps = 20 for the YUYV cameras (80 µs, with the fix on)" in warning
    (stock,) = advise(config, where, STOCK).domains
    assert [c.reserved_bytes for c in stock.cameras] == [3060, 3060]


def test_a_cap_too_small_for_the_stream_warns_of_torn_frames() -> None:
    config = parse_config(cameras_toml(["1-1"], resolution="1920x1080", fps=30), SRC)
    (problem,) = advise(config, plugged(["1-1"]), Cap(512, "x")).warnings()
    assert "more than the uvcvideo cap of 512 lets through: expect torn or grey frames" in problem


def fake_module(root: Path, *, param: int | None, fix: str = "N") -> None:
    module = root / "sys/module/uvcvideo"
    (module / "parameters").mkdir(parents=True)
    (module / "initstate").write_text("live\n")
    (module / "version").write_text("1.1.1-octobrix2\n" if param is not None else "1.1.1\n")
    if param is not None:
        (module / "parameters/max_compressed_payload").write_text(f"{param}\n")
        (module / "parameters/uncompressed_bandwidth_fix").write_text(f"{fix}\n")


def test_the_loaded_module_decides_the_uncompressed_fix(tmp_path: Path) -> None:
    config = parse_config("[uvcvideo]\nuncompressed_bandwidth_fix = true\n", SRC)
    assert effective_cap(config, Layout(tmp_path / "none")).uncompressed_fix, "not loaded: the config's value"
    assert not effective_cap(parse_config("", SRC), Layout(tmp_path / "none")).uncompressed_fix, "default: off"
    fake_module(tmp_path / "on", param=1024, fix="Y")
    assert effective_cap(parse_config("", SRC), Layout(tmp_path / "on")).uncompressed_fix, "loaded: its live value"
    fake_module(tmp_path / "off", param=1024, fix="N")
    assert not effective_cap(config, Layout(tmp_path / "off")).uncompressed_fix
    fake_module(tmp_path / "stock", param=None)
    stock = effective_cap(config, Layout(tmp_path / "stock"))
    assert not stock.uncompressed_fix
    assert stock.note is not None and "uncompressed_bandwidth_fix = true is configured, but" in stock.note


def test_the_loaded_module_decides_the_cap(tmp_path: Path) -> None:
    config = parse_config("[uvcvideo]\nmax_compressed_payload = 1024\n", SRC)
    assert effective_cap(config, Layout(tmp_path / "none")).payload == 1024, "not loaded: the config's value"
    fake_module(tmp_path / "patched", param=768)
    assert effective_cap(config, Layout(tmp_path / "patched")).payload == 768, "loaded: its live value"
    fake_module(tmp_path / "stock", param=None)
    stock = effective_cap(config, Layout(tmp_path / "stock"))
    assert stock.payload == 0
    assert stock.note is not None and "the loaded uvcvideo is the stock driver" in stock.note
    assert "octobrixctl kmod install" in stock.note


# --- the commands, on recorded topologies ---------------------------------------------------


def scratch_root(tmp_path: Path, config_text: str) -> tuple[Path, Path]:
    """A root with the config, its udev rules and the /dev/octobrix links a healthy system would have."""
    root = tmp_path / "root"
    config_path = root / "etc/octobrix.toml"
    config_path.parent.mkdir(parents=True)
    config_path.write_text(config_text, encoding="utf-8")
    (root / "proc").mkdir()
    config = parse_config(config_text, str(config_path))
    rules = root / paths.UDEV_RULES
    rules.parent.mkdir(parents=True)
    rules.write_text(render_all(config)[paths.UDEV_RULES].text, encoding="utf-8")
    return root, config_path


def hub_config(cap: int = 0) -> str:
    text = "".join(f'[cameras.cam{n}]\nserial = "CAMHUB{n}"\nport = {8080 + n}\n\n' for n in (1, 2, 3))
    return text + (f"[uvcvideo]\nmax_compressed_payload = {cap}\n" if cap else "")


@needs_umockdev
def test_doctor_flags_three_hub_cameras_with_the_stock_driver_and_passes_them_with_the_cap(tmp_path: Path) -> None:
    recordings = three_c270_on_a_hub(tmp_path)
    root, config_path = scratch_root(tmp_path, hub_config())
    for n in (1, 2, 3):
        (root / "dev/octobrix").mkdir(parents=True, exist_ok=True)
        (root / f"dev/octobrix/cam{n}").symlink_to(f"../video{2 * (n - 1)}")
    stock = bed(recordings, "doctor", "--config", config_path, "--root", root)
    assert stock.returncode == 1, stock.stdout + stock.stderr
    assert "[ ok ] camera cam2: /dev/video2 (Logitech, Inc. Webcam C270) is /dev/octobrix/cam2" in stock.stdout
    assert (
        "[FAIL] USB bandwidth: cam1, cam2, cam3 on bus 1, root port 1-3 (USB 2) would reserve "
        "183 µs of the 100 µs each microframe has for cameras: only 1 of them can stream at once"
    ) in stock.stdout
    assert "1 of 10 checks failed." in stock.stdout

    config_path.write_text(hub_config(cap=1024), encoding="utf-8")
    capped = bed(recordings, "doctor", "--config", config_path, "--root", root)
    assert capped.returncode == 0, capped.stdout
    assert "[ ok ] USB bandwidth: 3 cameras fit their buses (bus 1, root port 1-3: 63 of 100 µs)" in capped.stdout

    # The cap is configured, but the stock module is the one in memory: it does not apply.
    fake_module(root, param=None)
    ignored = bed(recordings, "doctor", "--config", config_path, "--root", root)
    assert ignored.returncode == 1
    assert "183 µs of the 100 µs" in ignored.stdout
    assert "the loaded uvcvideo is the stock driver, which ignores it" in ignored.stdout


@needs_umockdev
def test_discover_shows_one_camera_per_bus_fitting(tmp_path: Path) -> None:
    config_text = (
        '[cameras.front]\nserial = "8D6E3B10"\nport = 8081\n\n[cameras.side]\nserial = "CAMEHCI1"\nport = 8082\n'
    )
    root, config_path = scratch_root(tmp_path, config_text)
    shown = bed(c270_per_bus(tmp_path), "discover", "--config", config_path, "--root", root)
    assert shown.returncode == 0, shown.stderr
    assert "bus 1, 480 Mbit/s" in shown.stdout and "bus 3, 480 Mbit/s" in shown.stdout
    assert "bus 1, root port 1-6, USB 2: 61 of 100 µs per microframe — fits" in shown.stdout
    assert "bus 3, USB 2: 61 of 100 µs per microframe — fits" in shown.stdout, "EHCI: the bus is the budget"
    assert "warning" not in shown.stdout

    data = json.loads(bed(c270_per_bus(tmp_path), "discover", "--json", "--config", config_path).stdout)
    cameras = {c["serial"]: c for c in data["cameras"]}
    assert cameras["CAMEHCI1"]["controller"] == "ehci-pci" and cameras["8D6E3B10"]["controller"] == "xhci_hcd"
    assert [d["over_budget"] for d in data["usb_bandwidth"]["domains"]] == [False, False]


@needs_umockdev
def test_discover_shows_the_hub_and_what_each_camera_reserves(tmp_path: Path) -> None:
    root, config_path = scratch_root(tmp_path, hub_config())
    shown = bed(three_c270_on_a_hub(tmp_path), "discover", "--config", config_path, "--root", root)
    assert "1-3.2     bus 1, 480 Mbit/s, via hub 1-3" in shown.stdout
    assert "cam2         1-3.2          MJPEG 1280x720@15    reserves 3072 bytes = 61 µs" in shown.stdout
    assert "183 of 100 µs per microframe — OVER BUDGET" in shown.stdout


def test_check_and_apply_warn_but_succeed(tmp_path: Path, ctl: Ctl) -> None:
    """Judged from the config alone (the cameras are not plugged in): their usb_port names the bus."""
    config_path = tmp_path / "octobrix.toml"
    config_path.write_text(cameras_toml(["1-3.1", "1-3.2", "1-3.3"]), encoding="utf-8")
    root = tmp_path / "root"
    root.mkdir()
    checked = ctl("check", "--config", config_path, "--root", root)
    assert checked.returncode == 0, "a warning never fails the command"
    assert checked.stdout.startswith(f"{config_path} is valid")
    (line,) = checked.stderr.splitlines()
    assert line.startswith("warning: USB bandwidth: cam1, cam2, cam3 on bus 1 (USB 2) would reserve 183 µs")
    applied = ctl("apply", "--config", config_path, "--root", root)
    assert applied.returncode == 0 and "warning: USB bandwidth:" in applied.stderr

    config_path.write_text(config_path.read_text() + "[uvcvideo]\nmax_compressed_payload = 1024\n", encoding="utf-8")
    assert ctl("check", "--config", config_path, "--root", root).stderr == ""


@pytest.mark.parametrize(("cap", "fits"), [(0, 1), (1024, 4), (512, 9)])
def test_cameras_per_bus_match_the_kmod_readme(cap: int, fits: int) -> None:
    ports = [f"1-3.{n}" for n in range(1, 11)]
    config = parse_config(cameras_toml(ports, resolution="640x480", fps=10), SRC)
    (domain,) = advise(config, plugged(ports), Cap(cap, "x")).domains
    assert domain.fitting == fits


def with_descriptors(recording: Path, target: Path, raw: bytes) -> Path:
    """A recording whose USB device block also holds its binary `descriptors` attribute (an H: line)."""
    blocks = recording.read_text(encoding="utf-8").split("\n\n")
    for index, block in enumerate(blocks):
        first = block.lstrip("\n").split("\n", 1)[0]
        if first.startswith("P: ") and first.rsplit("/", 1)[-1].count(":") == 0 and "/usb1/" in first:
            blocks[index] = block.rstrip("\n") + f"\nH: descriptors={raw.hex().upper()}"
    target.write_text("\n\n".join(blocks), encoding="utf-8")
    return target


@needs_umockdev
def test_discover_reads_what_a_plugged_camera_reserves_from_its_own_descriptors(tmp_path: Path) -> None:
    """sysfs' descriptors file, read without opening the camera: the C270's largest setting is 3060, not 3072."""
    recordings = [
        with_descriptors(path, tmp_path / f"d-{path.name}", c270_descriptors())
        for path in three_c270_on_a_hub(tmp_path)[:2]
    ]
    text = "".join(
        f'[cameras.cam{n}]\nserial = "CAMHUB{n}"\nport = {8080 + n}\nformat = "yuyv"\n'
        'resolution = "640x480"\nfps = 30\n\n'
        for n in (1, 2)
    )
    root, config_path = scratch_root(tmp_path, text)
    shown = bed(recordings, "discover", "--config", config_path, "--root", root)
    assert shown.returncode == 0, shown.stderr
    assert "cam1         1-3.1          YUYV 640x480@30      reserves 3060 bytes = 61 µs" in shown.stdout
    assert "122 of 100 µs per microframe — OVER BUDGET" in shown.stdout
    assert "(cam1 2688, cam2 2688 bytes, from their descriptors)" in shown.stdout


def _defined(node: ast.AST) -> list[str]:
    """The names a function definition or an assignment defines."""
    if isinstance(node, ast.FunctionDef):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [target.id for target in node.targets if isinstance(target, ast.Name)]
    return []


def test_the_bus_arithmetic_and_budgets_are_defined_in_usb_bus_only() -> None:
    """The advisor and the uvcvideo status judge by the same numbers: a second copy would drift."""
    package = Path(__file__).resolve().parent.parent / "octobrixd"
    found = [
        f"{path.name}: {name}"
        for path in sorted(package.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        for name in _defined(node)
        if name.endswith(("bus_time_us", "BUDGET_US", "_per_bus"))
    ]
    assert found and all(entry.startswith("usb_bus.py: ") for entry in found), found
