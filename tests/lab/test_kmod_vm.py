"""The patched uvcvideo in a real Debian 6.1 kernel: it loads, its parameters are visible and
settable, modprobe.d sets them, and with max_compressed_payload at 0 and uncompressed_bandwidth_fix off
it is the stock driver.

No UVC camera can be emulated here: QEMU has no USB video device, and dummy_hcd cannot do the
isochronous transfers a camera streams with. So "behaves as stock at 0" is checked on everything
a camera would meet before streaming: the patched module binds exactly the devices the stock one
binds (identical device table), registers the same USB driver, and has the same parameters with
the same defaults. The one code path it adds only runs when the parameter is not 0 (checked
against the patch in tests/test_kmod.py); its debug message is in the loaded module, which this
test checks too.

The module is built on the host (native speed) with kmod/'s own Makefile, against the headers of
exactly the guest's kernel, and copied in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from octobrixd.config.model import parse_config
from octobrixd.render.tree import render_all
from octobrixd.system.paths import MODPROBE_FILE
from tests.lab.harness.vm import Vm

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
PARAM = "/sys/module/uvcvideo/parameters/max_compressed_payload"
PATCHED_VERSION = "1.1.1-octobrix2"
FIX = "/sys/module/uvcvideo/parameters/uncompressed_bandwidth_fix"
MODPROBE_CONF = "/" + str(MODPROBE_FILE)
# cli/kmod.py needs only these, all standard library: enough to run `kmod status` with the guest's python3.
STATUS_MODULES = (
    "__init__.py",
    "cliargs.py",
    "errors.py",
    "names.py",
    "system/__init__.py",
    "system/paths.py",
    "system/command.py",
    "system/processes.py",
    "cli/__init__.py",
    "cli/kmod.py",
    "kmod/__init__.py",
    "kmod/status.py",
    "devices/__init__.py",
    "devices/usb_bus.py",
)
_built: dict[str, Path] = {}


def build_for(release: str, workdir: Path) -> Path:
    """uvcvideo.ko for the guest's kernel, built like DKMS would (once per test session)."""
    if release in _built:
        return _built[release]
    if not Path(f"/lib/modules/{release}/build/Makefile").is_file():
        # The image is built from the same archive: its kernel's headers are there for the host too.
        subprocess.run(
            ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-q", f"linux-headers-{release}"],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    package = workdir / "octobrix-uvcvideo"
    package.mkdir(parents=True)
    for pattern in ("Makefile", "*.sh", "*.patch", "dkms.conf"):
        for path in (REPO / "kmod").glob(pattern):
            shutil.copy2(path, package / path.name)
    subprocess.run(["make", "-C", str(package), "-j2", f"KVER={release}"], check=True, capture_output=True)
    _built[release] = package / "uvcvideo.ko"
    return _built[release]


def params(vm: Vm) -> dict[str, str]:
    script = 'cd /sys/module/uvcvideo/parameters && for p in *; do printf "%s=%s\\n" "$p" "$(cat "$p")"; done'
    return dict(line.split("=", 1) for line in vm.sh(script).stdout.splitlines())


def reload(vm: Vm, *options: str) -> None:
    vm.run(["modprobe", "-r", "uvcvideo"])
    vm.run(["modprobe", "uvcvideo", *options])


@pytest.fixture
def guest_release(vm: Vm) -> str:
    assert vm.image is not None
    release = vm.image.kernel_version
    assert release.startswith("6.1."), f"the lab image's kernel is {release}, not Debian 12's 6.1"
    return release


@pytest.fixture
def stock(vm: Vm, guest_release: str) -> dict[str, str]:
    """The stock driver as the guest's kernel ships it, before anything is installed."""
    vm.run(["modprobe", "uvcvideo"])
    found = {
        "filename": vm.run(["modinfo", "-F", "filename", "uvcvideo"]).stdout.strip(),
        "alias": vm.run(["modinfo", "-F", "alias", "uvcvideo"]).stdout,
        "version": vm.read_file("/sys/module/uvcvideo/version").decode().strip(),
    }
    found.update({f"param:{k}": v for k, v in params(vm).items()})
    vm.run(["modprobe", "-r", "uvcvideo"])
    assert "/kernel/drivers/media/usb/uvc/" in found["filename"]
    return found


@pytest.fixture
def patched(
    vm: Vm, guest_release: str, stock: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The patched module installed in the guest as DKMS would (updates/ wins over kernel/)."""
    ko = build_for(guest_release, tmp_path_factory.mktemp("kmod-build"))
    target = f"/lib/modules/{guest_release}/updates/octobrix-test/uvcvideo.ko"
    vm.copy_in(ko, target)
    vm.run(["depmod", "-a", guest_release])
    yield target
    # The VM is shared with other tests: leave the stock driver as it was.
    vm.run(["modprobe", "-r", "uvcvideo"], check=False)
    vm.run(["rm", "-rf", f"/lib/modules/{guest_release}/updates/octobrix-test", MODPROBE_CONF, "/root/octobrix"])
    vm.run(["depmod", "-a", guest_release])


def test_patched_module_loads_and_its_parameter_is_visible_and_settable(vm: Vm, patched: str) -> None:
    assert vm.run(["modinfo", "-F", "filename", "uvcvideo"]).stdout.strip() == patched
    vm.run(["dmesg", "--clear"])
    vm.run(["modprobe", "uvcvideo"])
    log = vm.run(["dmesg"]).stdout
    for refusal in ("Unknown symbol", "disagrees about version", "Invalid module format", "Key was rejected"):
        assert refusal not in log, log
    assert vm.read_file("/sys/module/uvcvideo/version").decode().strip() == PATCHED_VERSION
    assert vm.read_file(PARAM).decode().strip() == "1024", "the default with no modprobe.d option"

    vm.sh(f"echo 512 > {PARAM}")
    assert vm.read_file(PARAM).decode().strip() == "512"
    rejected = vm.sh(f"echo lots > {PARAM}", check=False)
    assert rejected.returncode != 0
    assert vm.read_file(PARAM).decode().strip() == "512", "a bad value leaves the setting alone"

    # The file octobrix renders from [uvcvideo] in the config is what modprobe applies.
    vm.write_file(MODPROBE_CONF, "options uvcvideo max_compressed_payload=768\n")
    reload(vm)
    assert vm.read_file(PARAM).decode().strip() == "768"

    # The cap's debug message is compiled into the module that is loaded.
    vm.sh("mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug")
    control = vm.run(["grep", "-F", "max_compressed_payload", "/sys/kernel/debug/dynamic_debug/control"])
    assert "[uvcvideo]" in control.stdout and "uvc_fixup_video_ctrl" in control.stdout


def test_uncompressed_bandwidth_fix_is_off_by_default_settable_and_set_by_modprobe_d(vm: Vm, patched: str) -> None:
    """The YUYV fix: off unless asked (stock behaviour), writable live, and what [uvcvideo] renders applies."""
    reload(vm)
    assert vm.read_file(FIX).decode().strip() == "N", "off by default: the stock driver's behaviour"
    quirks = vm.read_file("/sys/module/uvcvideo/parameters/quirks").decode().strip()
    vm.sh(f"echo Y > {FIX}")
    assert vm.read_file(FIX).decode().strip() == "Y"
    assert vm.read_file("/sys/module/uvcvideo/parameters/quirks").decode().strip() == quirks, (
        "the forced-quirks parameter stays as it was: every camera keeps its own quirks"
    )
    assert vm.sh(f"echo sometimes > {FIX}", check=False).returncode != 0
    assert vm.read_file(FIX).decode().strip() == "Y", "a bad value leaves the setting alone"

    # The exact options octobrix renders from [uvcvideo] (tests/test_render.py) are what modprobe applies.
    config = parse_config("[uvcvideo]\nmax_compressed_payload = 768\nuncompressed_bandwidth_fix = true\n", "t")
    vm.write_file(MODPROBE_CONF, render_all(config)[MODPROBE_FILE].text)
    reload(vm)
    assert (vm.read_file(FIX).decode().strip(), vm.read_file(PARAM).decode().strip()) == ("Y", "768")
    vm.sh("mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug")
    control = vm.run(["grep", "-F", "uncompressed_bandwidth_fix", "/sys/kernel/debug/dynamic_debug/control"])
    assert "[uvcvideo]" in control.stdout and "uvc_fixup_video_ctrl" in control.stdout
    vm.run(["rm", "-f", MODPROBE_CONF])


def test_at_zero_the_patched_module_is_the_stock_driver(vm: Vm, patched: str, stock: dict[str, str]) -> None:
    reload(vm, "max_compressed_payload=0")
    assert vm.read_file(PARAM).decode().strip() == "0"
    assert vm.run(["modinfo", "-F", "alias", "uvcvideo"]).stdout == stock["alias"], "binds the same cameras"
    assert vm.run(["test", "-d", "/sys/bus/usb/drivers/uvcvideo"], check=False).returncode == 0
    now = {f"param:{k}": v for k, v in params(vm).items()}
    assert now.pop("param:max_compressed_payload") == "0"
    assert now.pop("param:uncompressed_bandwidth_fix") == "N"
    assert now == {k: v for k, v in stock.items() if k.startswith("param:")}, "same parameters, same defaults"
    assert stock["version"] == "1.1.1"


def test_kmod_status_reads_the_real_kernel(vm: Vm, patched: str) -> None:
    """`octobrixctl kmod status` against a real sysfs, run with the guest's own python3."""
    folders = sorted({f"/root/octobrix/octobrixd/{Path(name).parent}" for name in STATUS_MODULES})
    vm.run(["mkdir", "-p", *folders])
    for name in STATUS_MODULES:
        vm.write_file(f"/root/octobrix/octobrixd/{name}", (REPO / "octobrixd" / name).read_bytes())
    reload(vm, "max_compressed_payload=0")
    script = (
        "import argparse, sys; from octobrixd.cli import kmod; p = argparse.ArgumentParser(); "
        "kmod.configure_parser(p); sys.exit(kmod.main(p.parse_args(['status'])))"
    )
    out = vm.run(["python3", "-c", script], env={"PYTHONPATH": "/root/octobrix"}).stdout
    assert f"uvcvideo:     patched (version {PATCHED_VERSION}), max_compressed_payload=0 (stock behaviour)" in out
    assert "uncompressed: uncompressed_bandwidth_fix=off (stock behaviour" in out
    assert "secure boot:  off (legacy BIOS boot)" in out
