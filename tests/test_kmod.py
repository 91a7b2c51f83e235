"""The patched uvcvideo (kmod/) and `octobrixctl kmod`.

Status is tested against recorded system trees (sysfs, procfs, /lib/modules, the DKMS tree,
modprobe.d) under a scratch root. The DKMS test is real: it builds the patched module against
Debian's 6.1 headers, installs it for that (not running) kernel and checks modinfo, then removes it.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from octobrixd.cli import kmod
from octobrixd.devices import usb_bus
from octobrixd.errors import CommandError, OctobrixError
from octobrixd.kmod import status as kmod_status
from octobrixd.system.paths import Layout
from tests.lab.test_kmod_vm import STATUS_MODULES

REPO = Path(__file__).resolve().parent.parent
KMOD = REPO / "kmod"
PATCH = KMOD / "uvcvideo-max-compressed-payload.patch"
SCRIPT = KMOD / "uvc-source.sh"
UVC = "drivers/media/usb/uvc"
# Filled by tests/deps/kmod.sh with drivers/media/usb/uvc/ of every series Debian's archive has.
UVC_CACHE = Path(os.environ.get("OCTOBRIX_UVC_CACHE", "/var/cache/octobrix-tests/uvc-sources"))
PATCHED_VERSION = "1.1.1-octobrix2"
KVER = "6.1.0-56-amd64"


def kmod_cli(*argv: str | Path) -> int:
    """`octobrixctl kmod ARGV` as the CLI dispatches it: configure_parser, then main."""
    parser = argparse.ArgumentParser(prog="octobrixctl kmod")
    kmod.configure_parser(parser)
    return kmod.main(parser.parse_args([str(a) for a in argv]))


class FakeSystem:
    """A system tree under a scratch root, written the way the kernel and DKMS lay it out."""

    def __init__(self, root: Path, running: str = KVER) -> None:
        self.root = root
        self.write("proc/sys/kernel/osrelease", running + "\n")

    def write(self, relative: str, text: str | bytes) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    def link(self, relative: str, target: str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)

    def loaded(self, version: str, payload: int | None, refcnt: int = 0, fix: str | None = "N") -> None:
        base = "sys/module/uvcvideo"
        self.write(f"{base}/initstate", "live\n")
        self.write(f"{base}/version", version + "\n")
        self.write(f"{base}/refcnt", f"{refcnt}\n")
        self.write(f"{base}/parameters/quirks", "4294967295\n")
        if payload is not None:
            self.write(f"{base}/parameters/max_compressed_payload", f"{payload}\n")
            if fix is not None:  # the first octobrix build (1.1.1-octobrix1) had no uncompressed_bandwidth_fix
                self.write(f"{base}/parameters/uncompressed_bandwidth_fix", f"{fix}\n")

    def kernel(self, release: str, module: str | None, *, headers: bool = True, dkms: bool = False) -> None:
        """A kernel in /lib/modules; module is uvcvideo's path in modules.dep (None: no uvcvideo)."""
        dep = "kernel/drivers/media/v4l2-core/videodev.ko.xz:\n"
        if module is not None:
            dep += f"{module}: kernel/drivers/media/v4l2-core/videodev.ko.xz\n"
        self.write(f"lib/modules/{release}/modules.dep", dep)
        if headers:
            # Debian's build link is absolute; status must resolve it inside the root, not on the host.
            self.write(f"usr/src/linux-headers-{release}/Makefile", "# kbuild\n")
            self.link(f"lib/modules/{release}/build", f"/usr/src/linux-headers-{release}")
        if dkms:
            self.write(f"var/lib/dkms/octobrix-uvcvideo/1.0/{release}/x86_64/module/uvcvideo.ko.xz", b"\0")

    def modprobe_conf(self, directory: str, name: str, text: str) -> None:
        self.write(f"{directory}/{name}", text)

    def camera_open_by(self, node: str, pid: int, command: str, driver: str = "uvcvideo") -> None:
        self.link(f"sys/class/video4linux/{node}/device/driver", f"../../../../bus/usb/drivers/{driver}")
        self.write(f"proc/{pid}/comm", command + "\n")
        self.link(f"proc/{pid}/fd/7", f"/dev/{node}")


@pytest.fixture
def system(tmp_path: Path) -> FakeSystem:
    return FakeSystem(tmp_path / "root")


def status_text(system: FakeSystem, capsys: pytest.CaptureFixture[str]) -> str:
    assert kmod_cli("status", "--root", system.root) == 0
    return capsys.readouterr().out


# --- status --------------------------------------------------------------------------------------


def test_status_shows_the_patched_module_with_its_live_and_configured_value(
    system: FakeSystem, capsys: pytest.CaptureFixture[str]
) -> None:
    system.loaded(PATCHED_VERSION, 768)
    system.kernel(KVER, "updates/dkms/uvcvideo.ko.xz", dkms=True)
    system.modprobe_conf("etc/modprobe.d", "octobrix-uvcvideo.conf", "options uvcvideo max_compressed_payload=768\n")
    out = status_text(system, capsys)
    assert (
        f"patched (version {PATCHED_VERSION}), max_compressed_payload=768 bytes per microframe "
        "(room for about 6 MJPEG cameras per USB 2 bus)"
    ) in out
    assert "max_compressed_payload=768 in /etc/modprobe.d/octobrix-uvcvideo.conf" in out
    kernel_line = next(line for line in out.splitlines() if KVER in line)
    assert kernel_line.split() == [KVER, "running", "patched", "updates/dkms/uvcvideo.ko.xz"]
    assert "uncompressed: uncompressed_bandwidth_fix=off (stock behaviour" in out
    assert "configured:   no uncompressed_bandwidth_fix in modprobe.d (the module's default, off, applies)" in out
    assert "note:" not in out, "a fully patched system needs nothing from the user"


def test_status_shows_the_uncompressed_bandwidth_fix_live_and_configured(
    system: FakeSystem, capsys: pytest.CaptureFixture[str]
) -> None:
    system.loaded(PATCHED_VERSION, 1024, fix="Y")
    system.kernel(KVER, "updates/dkms/uvcvideo.ko.xz", dkms=True)
    system.modprobe_conf(
        "etc/modprobe.d",
        "octobrix-uvcvideo.conf",
        "options uvcvideo max_compressed_payload=1024 uncompressed_bandwidth_fix=Y\n",
    )
    out = status_text(system, capsys)
    assert "uncompressed: uncompressed_bandwidth_fix=on (YUYV cameras reserve what their size and frame rate" in out
    assert "configured:   uncompressed_bandwidth_fix=on in /etc/modprobe.d/octobrix-uvcvideo.conf" in out
    assert "note:" not in out
    # Turned off in the config while the module in memory still has it on: status says how to apply it.
    system.modprobe_conf("etc/modprobe.d", "octobrix-uvcvideo.conf", "options uvcvideo uncompressed_bandwidth_fix=N\n")
    out = status_text(system, capsys)
    assert "live uncompressed_bandwidth_fix=on differs from the configured off" in out
    assert "echo N | sudo tee /sys/module/uvcvideo/parameters/uncompressed_bandwidth_fix" in out
    assert kmod_cli("status", "--root", system.root, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["bandwidth_fix"], data["bandwidth_fix_configured"]) == (True, False)


def test_status_says_the_first_patched_build_lacks_the_fix(
    system: FakeSystem, capsys: pytest.CaptureFixture[str]
) -> None:
    system.loaded("1.1.1-octobrix1", 1024, fix=None)
    system.kernel(KVER, "updates/dkms/uvcvideo.ko.xz", dkms=True)
    out = status_text(system, capsys)
    assert "uncompressed_bandwidth_fix=not in this build: `sudo octobrixctl kmod install` builds the current one" in out


@pytest.mark.parametrize(
    ("payload", "microseconds", "cameras"),
    [(512, 11, 9), (768, 16, 6), (1024, 21, 4), (1280, 26, 3), (3072, 61, 1)],
)
def test_bus_budget_figures_match_the_kernels_bookkeeping(payload: int, microseconds: int, cameras: int) -> None:
    """The README's table: EHCI books HS_USECS_ISO(payload) of the 100 us per microframe."""
    assert usb_bus.hs_isoc_bus_time_us(payload) == microseconds
    assert usb_bus.streams_per_hs_bus(payload) == cameras


def test_status_tells_to_install_when_the_running_kernel_has_only_the_stock_driver(
    system: FakeSystem, capsys: pytest.CaptureFixture[str]
) -> None:
    system.loaded("1.1.1", None)
    system.kernel(KVER, "kernel/drivers/media/usb/uvc/uvcvideo.ko.xz")
    out = status_text(system, capsys)
    assert "uvcvideo:     stock (version 1.1.1), no max_compressed_payload parameter" in out
    assert next(line for line in out.splitlines() if KVER in line).split()[1:4] == ["running", "stock", "no"]
    assert f"note: the running kernel {KVER} has no patched uvcvideo: run `sudo octobrixctl kmod install`" in out


def test_status_says_a_reload_is_due_when_installed_but_stock_still_loaded(
    system: FakeSystem, capsys: pytest.CaptureFixture[str]
) -> None:
    system.loaded("1.1.1", None)
    system.kernel(KVER, "updates/dkms/uvcvideo.ko", dkms=True)
    out = status_text(system, capsys)
    assert "the patched module is installed but the stock one is still loaded" in out


def test_status_lists_every_kernel_with_its_dkms_state(system: FakeSystem, capsys: pytest.CaptureFixture[str]) -> None:
    system.kernel(KVER, "updates/dkms/uvcvideo.ko.xz", dkms=True)
    system.kernel("6.1.0-55-amd64", "kernel/drivers/media/usb/uvc/uvcvideo.ko.xz", headers=False)
    system.kernel("6.12.41+deb13-amd64", "kernel/drivers/media/usb/uvc/uvcvideo.ko.xz", dkms=True)
    out = status_text(system, capsys)
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "no headers (apt-get install linux-headers-6.1.0-55-amd64)" in lines["6.1.0-55-amd64"]
    assert "DKMS build present but not installed" in lines["6.12.41+deb13-amd64"]
    assert "uvcvideo:     not loaded" in out


def test_status_shows_zero_as_stock_behaviour_and_a_pending_change(
    system: FakeSystem, capsys: pytest.CaptureFixture[str]
) -> None:
    system.loaded(PATCHED_VERSION, 0)
    system.kernel(KVER, "updates/dkms/uvcvideo.ko.xz", dkms=True)
    system.modprobe_conf("etc/modprobe.d", "octobrix-uvcvideo.conf", "options uvcvideo max_compressed_payload=1024\n")
    out = status_text(system, capsys)
    assert "max_compressed_payload=0 (stock behaviour)" in out
    assert "live max_compressed_payload=0 differs from the configured 1024" in out


def test_configured_value_follows_modprobe_precedence(system: FakeSystem) -> None:
    # Same file name: /etc replaces /lib. Different names: all are read in name order, the last wins.
    system.modprobe_conf("lib/modprobe.d", "octobrix-uvcvideo.conf", "options uvcvideo max_compressed_payload=512\n")
    system.modprobe_conf("etc/modprobe.d", "octobrix-uvcvideo.conf", "options uvcvideo max_compressed_payload=1024\n")
    assert kmod_status.configured_payload(Layout(system.root)) == (1024, "/etc/modprobe.d/octobrix-uvcvideo.conf")
    system.modprobe_conf(
        "etc/modprobe.d",
        "zz-local.conf",
        "# mine\noptions uvcvideo quirks=128 max_compressed_payload=640 # later\n",
    )
    assert kmod_status.configured_payload(Layout(system.root)) == (640, "/etc/modprobe.d/zz-local.conf")
    system.modprobe_conf("etc/modprobe.d", "zzz-other.conf", "options uvcvideox max_compressed_payload=1\n")
    assert kmod_status.configured_payload(Layout(system.root))[0] == 640, "options of another module do not count"


@pytest.mark.parametrize(
    ("files", "expected", "refused"),
    [
        ({}, kmod_status.SecureBoot.NOT_EFI, False),
        ({"sys/firmware/efi/efivars/.keep": b""}, kmod_status.SecureBoot.DISABLED, False),
        ({kmod_status.SECURE_BOOT_VAR: b"\x06\x00\x00\x00\x00"}, kmod_status.SecureBoot.DISABLED, False),
        (
            {
                kmod_status.SECURE_BOOT_VAR: b"\x06\x00\x00\x00\x01",
                "sys/kernel/security/lockdown": b"none [integrity] confidentiality\n",
            },
            kmod_status.SecureBoot.ENABLED,
            True,
        ),
        ({"sys/module/module/parameters/sig_enforce": b"Y\n"}, kmod_status.SecureBoot.NOT_EFI, True),
    ],
    ids=["bios", "efi-without-secure-boot", "secure-boot-off", "secure-boot-on", "sig-enforce"],
)
def test_secure_boot_and_signature_enforcement_are_detected(
    system: FakeSystem,
    capsys: pytest.CaptureFixture[str],
    files: dict[str, bytes],
    expected: kmod_status.SecureBoot,
    refused: bool,
) -> None:
    for relative, data in files.items():
        system.write(relative, data)
    out = status_text(system, capsys)
    assert f"secure boot:  {expected.value}" in out
    assert ("unsigned modules are refused" in out) is refused
    assert ("sudo mokutil --import /var/lib/dkms/mok.pub" in out) is refused


def test_status_json_is_machine_readable(system: FakeSystem, capsys: pytest.CaptureFixture[str]) -> None:
    system.loaded(PATCHED_VERSION, 1024)
    system.kernel(KVER, "updates/dkms/uvcvideo.ko.xz", dkms=True)
    assert kmod_cli("status", "--root", system.root, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["loaded"] == "patched"
    assert data["signing_cert"] == "/var/lib/dkms/mok.pub"
    assert data["payload"] == 1024
    assert data["kernels"] == [
        {
            "release": KVER,
            "running": True,
            "headers": True,
            "built": True,
            "uses": "patched",
            "module_path": "updates/dkms/uvcvideo.ko.xz",
        }
    ]


def test_open_cameras_are_found_and_only_uvc_ones(system: FakeSystem) -> None:
    system.camera_open_by("video0", 4242, "ustreamer")
    system.camera_open_by("video10", 4343, "ffmpeg", driver="v4l2loopback")
    users = kmod_status.video_users(Layout(system.root))
    assert users == (kmod_status.VideoUser(4242, "ustreamer", "/dev/video0"),)


class FakeCommands:
    """Stands in for modprobe and mokutil, which cannot act on a recorded tree (or on this host's kernel)."""

    def __init__(self, system: FakeSystem, *, stderr: str = "", mokutil: str = "") -> None:
        self.system = system
        self.stderr = stderr
        self.mokutil = mokutil
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        if argv[0] == "mokutil":
            return subprocess.CompletedProcess(argv, 0, self.mokutil, "")
        if argv == ["modprobe", "uvcvideo"]:
            if self.stderr:
                raise CommandError(argv, 1, self.stderr)
            self.system.loaded(PATCHED_VERSION, 1024)
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_reload_waits_while_a_camera_is_open(system: FakeSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    system.loaded("1.1.1", None, refcnt=1)
    system.camera_open_by("video0", 4242, "ustreamer")
    commands = FakeCommands(system)
    monkeypatch.setattr(kmod, "run", commands)
    said: list[str] = []
    kmod.reload_module(Layout(system.root), said.append)
    assert commands.calls == [], "an open camera is never pulled from under its streamer"
    assert "uvcvideo is in use by ustreamer (pid 4242) on /dev/video0" in said[0]
    assert "after a reboot" in said[0]


def test_reload_swaps_an_idle_stock_module(system: FakeSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    system.loaded("1.1.1", None)
    commands = FakeCommands(system)
    monkeypatch.setattr(kmod, "run", commands)
    said: list[str] = []
    kmod.reload_module(Layout(system.root), said.append)
    assert commands.calls == [["modprobe", "-r", "uvcvideo"], ["modprobe", "uvcvideo"]]
    assert said == [f"reloaded uvcvideo: now patched (version {PATCHED_VERSION}), max_compressed_payload=1024"]


def test_a_rejected_signature_explains_mok_enrolment(system: FakeSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    system.loaded("1.1.1", None)
    stderr = "modprobe: ERROR: could not insert 'uvcvideo': Key was rejected by service\n"
    monkeypatch.setattr(kmod, "run", FakeCommands(system, stderr=stderr))
    with pytest.raises(OctobrixError, match="the kernel refused the patched uvcvideo") as caught:
        kmod.reload_module(Layout(system.root), print)
    assert caught.value.hint is not None and "mokutil --import" in caught.value.hint


@pytest.mark.parametrize("enrolled", [True, False])
def test_secure_boot_install_checks_the_signing_key(
    system: FakeSystem, monkeypatch: pytest.MonkeyPatch, enrolled: bool
) -> None:
    system.write(kmod_status.SECURE_BOOT_VAR, b"\x06\x00\x00\x00\x01")
    system.write("var/lib/dkms/mok.pub", b"cert")
    cert = system.root / "var/lib/dkms/mok.pub"
    answer = f"{cert} is already enrolled\n" if enrolled else f"{cert} is not enrolled\n"
    commands = FakeCommands(system, mokutil=answer)
    monkeypatch.setattr(kmod, "run", commands)
    if enrolled:
        kmod.check_signing(Layout(system.root))
    else:
        with pytest.raises(OctobrixError, match="only once its signing key") as caught:
            kmod.check_signing(Layout(system.root))
        assert caught.value.hint is not None
        assert f"sudo mokutil --import {cert}" in caught.value.hint and "Enroll MOK" in caught.value.hint
    assert commands.calls == [["mokutil", "--test-key", str(cert)]]


def test_install_refuses_a_scratch_root(system: FakeSystem) -> None:
    with pytest.raises(OctobrixError, match="does not work under --root"):
        kmod_cli("install", "--root", system.root)


def test_dkms_conf_names_the_package_status_looks_for() -> None:
    package = kmod.read_dkms_conf(KMOD)
    assert package.name == kmod_status.PACKAGE_NAME
    text = (KMOD / "dkms.conf").read_text()
    assert 'AUTOINSTALL="yes"' in text
    assert 'BUILT_MODULE_NAME[0]="uvcvideo"' in text


# --- finding the uvc sources ------------------------------------------------------------------------


def make_tree(path: Path, marker: str) -> Path:
    (path / UVC).mkdir(parents=True)
    (path / UVC / "uvc_video.c").write_text(f"/* {marker} */\n")
    return path


def make_tarball(path: Path, top: str, marker: str) -> Path:
    """A kernel source tarball like Debian's, Ubuntu's or kernel.org's: one top folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = make_tree(path.parent / f".staging-{path.name}" / top, marker)
    with tarfile.open(path, "w:xz" if path.name.endswith(".xz") else "w:bz2") as tar:
        tar.add(staging, arcname=top)
    shutil.rmtree(staging.parent)
    return path


def uvc_source(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": os.environ["PATH"], "OCTOBRIX_ROOT": str(root), **(env or {})},
    )


def test_sources_come_from_the_same_series_only(tmp_path: Path) -> None:
    src = tmp_path / "usr/src"
    make_tarball(src / "linux-source-6.12.tar.xz", "linux-source-6.12", "6.12")
    make_tarball(src / "linux-source-6.1.tar.xz", "linux-source-6.1", "6.1")
    assert uvc_source(tmp_path, "locate", KVER).stdout.strip() == str(src / "linux-source-6.1.tar.xz")
    assert uvc_source(tmp_path, "locate", "6.12.41+deb13-amd64").stdout.strip().endswith("linux-source-6.12.tar.xz")
    dest = tmp_path / "out"
    result = uvc_source(tmp_path, "extract", KVER, str(dest))
    assert result.returncode == 0, result.stderr
    assert (dest / UVC / "uvc_video.c").read_text() == "/* 6.1 */\n"


@pytest.mark.parametrize(
    ("layout", "kernel"),
    [
        ("usr/src/linux-source-5.4.0/linux-source-5.4.0.tar.bz2", "5.4.0-150-generic"),
        ("usr/src/linux-hwe-5.15-source-5.15.0/linux-hwe-5.15-source-5.15.0.tar.bz2", "5.15.0-91-generic"),
        ("usr/src/linux-source-6.8.0/linux-source-6.8.0.tar.bz2", "6.8.0-45-generic"),
        ("usr/src/linux-6.1.55.tar.xz", KVER),
    ],
    ids=["ubuntu-20.04", "ubuntu-hwe", "ubuntu-24.04", "kernel.org-tarball"],
)
def test_sources_are_found_in_each_distribution_layout(tmp_path: Path, layout: str, kernel: str) -> None:
    tarball = tmp_path / layout
    make_tarball(tarball, tarball.name.split(".tar")[0], kernel)
    result = uvc_source(tmp_path, "extract", kernel, str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert f"taken from {tarball}" in result.stdout
    assert (tmp_path / "out" / UVC / "uvc_video.c").read_text() == f"/* {kernel} */\n"


def test_a_kernels_own_tree_wins_over_packaged_sources(tmp_path: Path) -> None:
    make_tarball(tmp_path / "usr/src/linux-source-6.1.tar.xz", "linux-source-6.1", "packaged")
    make_tree(tmp_path / "usr/src/linux-6.1.55", "apt-get source")
    assert uvc_source(tmp_path, "locate", KVER).stdout.strip().endswith("linux-source-6.1.tar.xz")
    make_tree(tmp_path / f"lib/modules/{KVER}/source", "self-built")
    assert uvc_source(tmp_path, "locate", KVER).stdout.strip() == str(tmp_path / f"lib/modules/{KVER}/source")


def test_an_unpacked_tree_is_the_fallback(tmp_path: Path) -> None:
    make_tree(tmp_path / "usr/src/linux-6.1.55", "apt-get source")
    make_tree(tmp_path / "usr/src/linux-6.10.2", "other series")
    assert uvc_source(tmp_path, "locate", KVER).stdout.strip() == str(tmp_path / "usr/src/linux-6.1.55")


def test_missing_sources_explain_how_to_get_them(tmp_path: Path) -> None:
    make_tarball(tmp_path / "usr/src/linux-source-6.12.tar.xz", "linux-source-6.12", "wrong series")
    result = uvc_source(tmp_path, "locate", "5.4.0-150-generic")
    assert result.returncode == 1
    assert "no uvcvideo sources for kernel 5.4.0-150-generic (series 5.4)" in result.stderr
    assert "Debian:  apt-get install linux-source-5.4" in result.stderr
    assert "Ubuntu:  apt-get install linux-source-5.4.0" in result.stderr
    assert "kernel.org tarball linux-5.4.N.tar.xz" in result.stderr


# --- the patch against real kernel sources -----------------------------------------------------------


def available_sources() -> list[Path]:
    """Every real uvc source on this machine: Debian's linux-source-X.Y tarballs, and the cache."""
    found = sorted(Path("/usr/src").glob("linux-source-*.tar.xz"))
    if UVC_CACHE.is_dir():
        found += sorted(p for p in UVC_CACHE.iterdir() if (p / UVC / "uvc_video.c").is_file())
    return found


@pytest.mark.parametrize("source", available_sources(), ids=lambda p: p.name)
def test_patch_applies_exactly_to_every_available_kernel_series(source: Path, tmp_path: Path) -> None:
    series = source.name.removeprefix("linux-source-").removesuffix(".tar.xz")
    result = uvc_source(tmp_path, "extract", series, str(tmp_path), env={"UVC_SRC": str(source)})
    assert result.returncode == 0, result.stderr
    applied = subprocess.run(
        ["patch", "-d", str(tmp_path), "-p1", "--fuzz=0", "--forward", "--batch", "--no-backup-if-mismatch"],
        stdin=PATCH.open(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "fuzz" not in applied.stdout
    video = (tmp_path / UVC / "uvc_video.c").read_text()
    # The cap lands inside uvc_fixup_video_ctrl, after the sign-extension fix and before FIX_BANDWIDTH.
    fixup = video.index("static void uvc_fixup_video_ctrl(")
    cap = video.index("u32 cap = READ_ONCE(uvc_max_compressed_payload);")
    assert fixup < video.index("&= ~0xffff0000;") < cap < video.index("UVC_QUIRK_FIX_BANDWIDTH ||", fixup)
    # The fix widens FIX_BANDWIDTH's own condition: the same computation, the camera's quirks untouched.
    condition = (
        "\tif (!(format->flags & UVC_FMT_FLAG_COMPRESSED) &&\n"
        "\t    (stream->dev->quirks & UVC_QUIRK_FIX_BANDWIDTH ||\n"
        "\t     READ_ONCE(uvc_uncompressed_bandwidth_fix)) &&\n"
        "\t    stream->intf->num_altsetting > 1) {\n"
    )
    assert video.count(condition) == 1
    block = video[video.index(condition) : video.index("ctrl->dwMaxPayloadTransferSize = bandwidth;", fixup)]
    assert "bandwidth = frame->wWidth * frame->wHeight / 8 * format->bpp;" in block
    assert "uncompressed_bandwidth_fix: asking for %u instead of %u bytes per microframe" in block
    assert "static bool uvc_uncompressed_bandwidth_fix;" in video, "off unless set: stock behaviour"
    added = [line for line in PATCH.read_text().splitlines() if line.startswith("+")]
    assert not any(op in line for line in added for op in ("quirks =", "quirks |=", "quirks &=")), "quirks untouched"
    assert f'"{PATCHED_VERSION}"' in (tmp_path / UVC / "uvcvideo.h").read_text()


def test_the_patch_is_checked_against_several_series() -> None:
    """Debian's 6.1 plus what its archive still offers (5.10 until bullseye leaves the mirror, 6.12, 7.x)."""
    series = {p.name.removeprefix("linux-source-").removesuffix(".tar.xz") for p in available_sources()}
    assert "6.1" in series, "linux-source-6.1 is not installed: run tests/deps/kmod.sh"
    assert len(series) >= 3, f"only {sorted(series)}: run tests/deps/kmod.sh to fetch the other series"


# --- DKMS, for real ---------------------------------------------------------------------------------


def debian_61_kernel() -> str:
    releases = sorted(p.parent.parent.name for p in Path("/lib/modules").glob("6.1.*/build/Makefile"))
    assert releases, "no Debian 6.1 headers in /lib/modules: run tests/deps/kmod.sh (linux-headers-amd64)"
    return releases[-1]


def modinfo(release: str, field: str) -> list[str]:
    result = subprocess.run(
        ["modinfo", "-k", release, "-F", field, "uvcvideo"], capture_output=True, text=True, check=False
    )
    return result.stdout.splitlines()


def dkms_forget(package: kmod.DkmsPackage) -> None:
    if Path(f"/var/lib/dkms/{package.name}/{package.version}").exists():
        subprocess.run(["dkms", "remove", "-m", package.name, "-v", package.version, "--all"], check=True)
    shutil.rmtree(f"/usr/src/{package.name}-{package.version}", ignore_errors=True)


# The host's DKMS tree is one for the whole machine: its tests run one after the other on one xdist
# worker, and under a host-wide lock against another test run on this machine.
host_dkms = pytest.mark.xdist_group("host-dkms")
DKMS_LOCK = Path("/run/lock/octobrix-test-dkms.lock")


@pytest.fixture
def clean_dkms() -> Iterator[kmod.DkmsPackage]:
    """The package neither registered before nor after: reruns start clean, nothing is left behind."""
    if os.geteuid() != 0:
        pytest.skip("DKMS installs need root; tests/run runs as root")
    package = kmod.read_dkms_conf(KMOD)
    running = Path("/proc/sys/kernel/osrelease").read_text().strip()
    with DKMS_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if Path(f"/var/lib/dkms/{package.name}/{package.version}/{running}").exists():
            pytest.fail(f"{package.name} is installed for the running kernel {running}: not removing a real install")
        dkms_forget(package)
        yield package
        dkms_forget(package)


@host_dkms
def test_dkms_builds_and_installs_the_patched_module_for_debian_61(
    clean_dkms: kmod.DkmsPackage, capsys: pytest.CaptureFixture[str]
) -> None:
    release = debian_61_kernel()
    assert release != Path("/proc/sys/kernel/osrelease").read_text().strip(), "must not touch the running kernel"

    started = time.monotonic()
    assert kmod_cli("install", "--kernel", release, "--no-reload", "--no-apt") == 0
    elapsed = time.monotonic() - started
    out = capsys.readouterr().out
    assert f"{release}: patched uvcvideo installed; DKMS rebuilds it for every new kernel" in out

    filename = modinfo(release, "filename")
    assert len(filename) == 1 and filename[0].startswith(f"/lib/modules/{release}/updates/dkms/uvcvideo.ko")
    assert modinfo(release, "version") == [PATCHED_VERSION]
    assert any(p.startswith("max_compressed_payload:") and p.endswith("(uint)") for p in modinfo(release, "parm"))
    assert any(p.startswith("uncompressed_bandwidth_fix:") and p.endswith("(bool)") for p in modinfo(release, "parm"))
    state = kmod_status.read_status(Layout()).kernel(release)
    assert state is not None
    assert (state.built, state.uses) == (True, kmod_status.KernelModule.PATCHED)

    # A second install finds it done and builds nothing.
    assert kmod_cli("install", "--kernel", release, "--no-reload", "--no-apt") == 0
    assert "already installed" in capsys.readouterr().out
    with capsys.disabled():
        print(
            f"\n[kmod] DKMS build+install of the patched uvcvideo for {release}: {elapsed:.0f} s "
            "(the original install script rebuilt the whole kernel: about 12 hours on a small PC)",
            file=sys.stderr,
        )


@host_dkms
def test_dkms_build_of_unpatchable_sources_fails_with_a_clear_message(
    clean_dkms: kmod.DkmsPackage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel series whose uvc_video.c moved the anchor lines: the user learns the stock driver stays."""
    release = debian_61_kernel()
    tree = make_tree(tmp_path / "linux-6.1.999", "rewritten upstream")
    (tree / UVC / "uvcvideo.h").write_text("/* nothing to anchor on */\n")
    monkeypatch.setenv("UVC_SRC", str(tree))  # DKMS passes the environment down to make
    with pytest.raises(OctobrixError) as caught:
        kmod_cli("install", "--kernel", release, "--no-reload", "--no-apt")
    assert "does not apply to the uvcvideo sources" in caught.value.message
    assert caught.value.hint is not None and "make.log" in caught.value.hint
    assert not modinfo(release, "filename") or "updates/dkms" not in modinfo(release, "filename")[0]


def test_the_modules_the_vm_test_copies_are_all_kmod_status_needs(tmp_path: Path) -> None:
    # The VM test runs `kmod status` with the guest's bare python3 from only these files: a new
    # import of kmod's (names.py once) broke it in the VM alone, an hour into the whole suite.
    package = tmp_path / "octobrixd"
    package.mkdir()
    source = Path(__file__).resolve().parent.parent / "octobrixd"
    for name in STATUS_MODULES:
        (package / name).parent.mkdir(exist_ok=True)
        shutil.copy(source / name, package / name)
    script = "import sys; sys.path.insert(0, sys.argv[1]); from octobrixd.cli import kmod"
    result = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", script, str(tmp_path)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
