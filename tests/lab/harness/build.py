"""Build and cache the lab's Debian bookworm rootfs (for systemd-nspawn) and VM image (for QEMU).

Everything lands under CACHE (default /var/cache/octobrix-lab, outside the repo), in folders named
by a hash of the recipe that made them: the package lists below plus the source of the functions
that apply them. Editing either makes a new folder on the next run; the old one is pruned once
no other test process holds it. A flock keeps two pytest processes from building at once.

Packages are installed *in the chroot* at native speed: inside the TCG guest, compiling the DKMS
modules would be ~25x slower.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

CACHE = Path(os.environ.get("OCTOBRIX_LAB_CACHE", "/var/cache/octobrix-lab"))
# Not part of the recipe hash: where packages come from does not change what gets built.
MIRROR = os.environ.get("OCTOBRIX_LAB_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"

BASE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "udev", "libpam-systemd", "python3", "python3-venv",
    "python3-pip", "python3-serial", "python3-pyudev", "iproute2", "kmod", "procps", "less",
    "ca-certificates", "curl",
)  # fmt: skip
# The newcomer's computer (tests/lab/test_install*.py): a bare Debian server, as debootstrap's minbase
# makes it (Essential and Priority: required, apt), plus what boots it with systemd. Nothing octobrix
# needs: its installers must bring all of that. No ca-certificates either (Priority: standard, so
# a server installed without the "standard system utilities" task lacks it): octobrix gets it
# through python3-venv (python3-pip-whl depends on it), and the lab's proxy CA, put into
# /usr/local/share/ca-certificates first, is picked up when it is installed.
NEWCOMER_PACKAGES = ("systemd", "systemd-sysv", "dbus", "udev")
# Installed in this order, in three apt runs: the kernel first (to learn its version), then the
# headers for exactly that version (the newest headers in the archive may be for another ABI),
# then the DKMS packages that build against them.
VM_KERNEL_PACKAGES = ("linux-image-amd64", "initramfs-tools")
VM_BUILD_PACKAGES = ("dkms", "build-essential")
VM_PACKAGES = (
    "qemu-guest-agent", "v4l2loopback-dkms", "ustreamer", "ffmpeg", "v4l-utils", "usbutils",
    "e2fsprogs", "strace",
    # The guest has no network: what install.sh would apt-get is there already, as on an offline
    # farm's computer (the front door's nginx).
    "nginx",
)  # fmt: skip
VM_IMAGE_SIZE = "4G"
# Units that only cost boot time in a throwaway test machine.
VM_MASKED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "man-db.timer", "e2scrub_all.timer",
    "fstrim.timer", "dpkg-db-backup.timer", "e2scrub_reap.service", "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount", "modprobe@drm.service",
)  # fmt: skip
SHARE_TAG = "octobrix-host"
SHARE_MOUNT = "/mnt/host"


class BuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class VmImage:
    folder: Path
    image: Path
    kernel: Path
    initrd: Path
    kernel_version: str


# --- recipe hashes ---------------------------------------------------------------------------


def _digest(*parts: object) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def base_hash() -> str:
    return _digest("base", SUITE, BASE_PACKAGES, inspect.getsource(_build_base))


def newcomer_hash() -> str:
    return _digest("newcomer", SUITE, NEWCOMER_PACKAGES, inspect.getsource(_build_newcomer))


def vm_hash() -> str:
    return _digest(
        "vm", base_hash(), VM_KERNEL_PACKAGES, VM_BUILD_PACKAGES, VM_PACKAGES, VM_IMAGE_SIZE,
        VM_MASKED_UNITS, SHARE_TAG, SHARE_MOUNT, inspect.getsource(_build_vm),
        inspect.getsource(_configure_vm),
    )  # fmt: skip


# --- locking and the cache -------------------------------------------------------------------

_held: dict[str, IO[bytes]] = {}  # shared locks on cache entries this process uses, held until exit


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".build.lock").open("wb") as handle:
        if _try_flock(handle, fcntl.LOCK_EX) is False:
            log.info("waiting for another process building the lab in %s", CACHE)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _try_flock(handle: IO[bytes], mode: int) -> bool:
    try:
        fcntl.flock(handle, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _hold(entry: Path) -> None:
    """Mark a cache entry in use by this process so a concurrent rebuild does not prune it."""
    if entry.name in _held:
        return
    handle = entry.with_name(entry.name + ".inuse").open("ab")
    fcntl.flock(handle, fcntl.LOCK_SH)
    _held[entry.name] = handle


def _prune(keep: set[str]) -> None:
    """Remove cache entries of older recipes that no process holds. Caller holds the build lock."""
    for entry in CACHE.iterdir():
        key = entry.name.removesuffix(".log")
        if entry.name.endswith(".inuse") or key in keep:
            continue
        if not key.startswith(("rootfs-", "vm-", "newcomer-", "build-")):
            continue
        marker = entry.with_name(key + ".inuse")
        with marker.open("ab") as handle:
            if not _try_flock(handle, fcntl.LOCK_EX):
                continue
            log.info("pruning old lab cache entry %s", entry)
            _remove(entry)
        marker.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# --- running things in the chroot ------------------------------------------------------------


class _Log:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle = path.open("ab")

    def run(self, argv: Sequence[str | Path], env: dict[str, str] | None = None) -> None:
        args = [str(a) for a in argv]
        self.handle.write(f"\n$ {' '.join(args)}\n".encode())
        self.handle.flush()
        started = time.monotonic()
        result = subprocess.run(
            args, stdin=subprocess.DEVNULL, stdout=self.handle, stderr=subprocess.STDOUT,
            env=env, check=False,
        )  # fmt: skip
        self.handle.write(f"# rc={result.returncode} in {time.monotonic() - started:.1f}s\n".encode())
        self.handle.flush()
        if result.returncode != 0:
            tail = self.path.read_text(errors="replace").splitlines()[-30:]
            raise BuildError(
                f"lab build step failed (exit {result.returncode}): {' '.join(args)}\n"
                f"full log: {self.path}\n" + "\n".join(tail)
            )

    def in_root(self, root: Path, argv: Sequence[str]) -> None:
        """Run argv inside root with systemd-nspawn (not booted), with the shared apt cache bound."""
        archives = CACHE / "apt-archives"
        (archives / "partial").mkdir(parents=True, exist_ok=True)
        self.run(
            [
                "systemd-nspawn", "--quiet", f"--directory={root}", "--register=no", "--keep-unit",
                f"--bind={archives}:/var/cache/apt/archives",
                "--setenv=DEBIAN_FRONTEND=noninteractive", "--setenv=LC_ALL=C.UTF-8",
                *argv,
            ],
            env=_nspawn_env(),
        )  # fmt: skip

    def apt_install(self, root: Path, packages: Sequence[str]) -> None:
        self.in_root(
            root,
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "Dpkg::Use-Pty=0",
             *packages],
        )  # fmt: skip


def _nspawn_env() -> dict[str, str]:
    env = dict(os.environ)
    # The host has no systemd and a hybrid cgroup tree; this makes nspawn set up cgroup v2.
    env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
    return env


# --- the base rootfs (container) -------------------------------------------------------------


def _build_base(root: Path, out: _Log) -> None:
    debs = CACHE / "debootstrap-debs"
    debs.mkdir(parents=True, exist_ok=True)
    out.run(
        [
            "debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
            f"--cache-dir={debs}", SUITE, root, MIRROR,
        ]
    )  # fmt: skip
    (root / "etc/hostname").write_text("octobrix-lab\n")
    # Empty machine-id: systemd makes a fresh one at each boot, so copies never share one.
    (root / "etc/machine-id").write_text("")
    (root / "etc/apt/sources.list").write_text(f"deb {MIRROR} {SUITE} main\n")
    out.in_root(root, ["passwd", "--delete", "root"])
    out.in_root(root, ["apt-get", "update", "-q"])


def rootfs() -> Path:
    """The cached container rootfs, built if missing. Treat it as read-only: boot copies of it."""
    final = CACHE / f"rootfs-{base_hash()}"
    if not (final / ".complete").exists():
        with _build_lock():
            if not (final / ".complete").exists():
                _build_entry(final, _build_base)
    _hold(final)
    return final


def _build_newcomer(root: Path, out: _Log) -> None:
    debs = CACHE / "debootstrap-debs"
    debs.mkdir(parents=True, exist_ok=True)
    out.run(
        [
            "debootstrap", "--variant=minbase", f"--include={','.join(NEWCOMER_PACKAGES)}",
            f"--cache-dir={debs}", SUITE, root, MIRROR,
        ]
    )  # fmt: skip
    (root / "etc/hostname").write_text("octobrix-farm\n")
    # What Debian's installer writes on every server (debootstrap does not): without it sudo says
    # "unable to resolve host".
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\toctobrix-farm\n::1\tlocalhost ip6-localhost\n")
    (root / "etc/machine-id").write_text("")
    (root / "etc/apt/sources.list").write_text(f"deb {MIRROR} {SUITE} main\n")
    out.in_root(root, ["passwd", "--delete", "root"])
    out.in_root(root, ["apt-get", "update", "-q"])


def newcomer_rootfs() -> Path:
    """The cached bare-server rootfs, built if missing. Treat it as read-only: boot copies of it."""
    final = CACHE / f"newcomer-{newcomer_hash()}"
    if not (final / ".complete").exists():
        with _build_lock():
            if not (final / ".complete").exists():
                _build_entry(final, _build_newcomer)
    _hold(final)
    return final


# --- the VM image ----------------------------------------------------------------------------


def _kernel_version(root: Path) -> str:
    versions = sorted(p.name for p in (root / "lib/modules").iterdir() if (p / "modules.dep").exists())
    if len(versions) != 1:
        raise BuildError(f"expected one kernel in {root}/lib/modules, found {versions}")
    return versions[0]


def _build_vm(root: Path, out: _Log) -> None:
    base = rootfs()
    out.run(["cp", "-a", "--reflink=auto", f"{base}/.", root])
    (root / ".complete").unlink()
    out.apt_install(root, VM_KERNEL_PACKAGES)
    kver = _kernel_version(root)
    out.apt_install(root, (*VM_BUILD_PACKAGES, f"linux-headers-{kver}"))
    out.apt_install(root, VM_PACKAGES)
    built = list((root / "lib/modules" / kver).rglob("v4l2loopback.ko*"))
    if not built:
        out.in_root(root, ["dkms", "autoinstall", "-k", kver])
    _configure_vm(root)
    out.in_root(root, ["update-initramfs", "-u", "-k", kver])
    out.in_root(root, ["systemctl", "mask", *VM_MASKED_UNITS])
    folder = root.parent
    shutil.copy2(root / f"boot/vmlinuz-{kver}", folder / "vmlinuz")
    shutil.copy2(root / f"boot/initrd.img-{kver}", folder / "initrd.img")
    (folder / "kernel-version").write_text(kver + "\n")
    out.run(["mkfs.ext4", "-q", "-F", "-L", "octobrix-lab", "-d", root, folder / "vm.img", VM_IMAGE_SIZE])


def _configure_vm(root: Path) -> None:
    (root / "etc/hostname").write_text("octobrix-vm\n")
    (root / "etc/fstab").write_text(
        "/dev/vda / ext4 rw,errors=remount-ro 0 1\n"
        # nofail: a VM started without the share must still boot.
        f"{SHARE_TAG} {SHARE_MOUNT} 9p trans=virtio,version=9p2000.L,msize=262144,nofail 0 0\n"
    )
    (root / SHARE_MOUNT.lstrip("/")).mkdir(parents=True, exist_ok=True)
    # A small initrd (only what finds /dev/vda) boots seconds faster under TCG than MODULES=most.
    initramfs = root / "etc/initramfs-tools"
    (initramfs / "conf.d/lab.conf").write_text("MODULES=list\nFSTYPE=ext4\n")
    with (initramfs / "modules").open("a") as modules:
        modules.write("virtio_pci\nvirtio_blk\next4\n")
    journald = root / "etc/systemd/journald.conf.d"
    journald.mkdir(parents=True, exist_ok=True)
    (journald / "lab.conf").write_text("[Journal]\nStorage=volatile\n")


def vm_image() -> VmImage:
    """The cached VM image (plus its kernel and initrd), built if missing. Boot it with -snapshot."""
    final = CACHE / f"vm-{vm_hash()}"
    if not (final / ".complete").exists():
        rootfs()  # build the base outside our own build lock section
        with _build_lock():
            if not (final / ".complete").exists():
                _build_entry(final, _build_vm_entry)
    _hold(final)
    return VmImage(
        folder=final,
        image=final / "vm.img",
        kernel=final / "vmlinuz",
        initrd=final / "initrd.img",
        kernel_version=(final / "kernel-version").read_text().strip(),
    )


def _build_vm_entry(folder: Path, out: _Log) -> None:
    root = folder / "rootfs"
    root.mkdir()
    try:
        _build_vm(root, out)
    finally:
        if root.exists():
            shutil.rmtree(root)


# --- shared build driver ---------------------------------------------------------------------


def _build_entry(final: Path, step: Callable[[Path, _Log], None]) -> None:
    """Build into a temp folder and rename it into place, so a half-built entry is never used."""
    tmp = CACHE / f"build-{final.name}"
    _remove(tmp)
    tmp.mkdir(parents=True)
    logfile = CACHE / f"{final.name}.log"
    logfile.unlink(missing_ok=True)
    out = _Log(logfile)
    started = time.monotonic()
    log.info("building lab %s (log: %s)", final.name, logfile)
    # Minutes of silence in a test run look like a hang: say what is happening, past pytest's capture.
    print(f"\n[octobrix lab] building {final.name}, a few minutes (log: {logfile})", file=sys.__stderr__, flush=True)
    try:
        step(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            _remove(tmp)
        raise
    seconds = time.monotonic() - started
    manifest = {"entry": final.name, "seconds": round(seconds, 1), "built": time.strftime("%FT%T%z")}
    (tmp / ".complete").write_text(json.dumps(manifest) + "\n")
    _remove(final)
    tmp.rename(final)
    log.info("built lab %s in %.0fs", final.name, seconds)
    _prune(keep={f"rootfs-{base_hash()}", f"vm-{vm_hash()}", f"newcomer-{newcomer_hash()}"})


def build_all() -> tuple[Path, VmImage, Path]:
    return rootfs(), vm_image(), newcomer_rootfs()


def clean() -> list[Path]:
    """Remove the cache (the next run rebuilds from scratch), except entries a running session holds.

    Returns the entries kept.
    """
    kept: list[Path] = []
    if not CACHE.exists():
        return kept
    with _build_lock():
        for entry in sorted(CACHE.iterdir()):
            if entry.name == ".build.lock" or entry.name.endswith(".inuse"):
                continue
            marker = CACHE / (entry.name.removesuffix(".log") + ".inuse")
            with marker.open("ab") as handle:
                if not _try_flock(handle, fcntl.LOCK_EX):
                    kept.append(entry)
                    continue
                _remove(entry)
        for marker in CACHE.glob("*.inuse"):
            if not (CACHE / marker.name.removesuffix(".inuse")).exists():
                marker.unlink(missing_ok=True)
    return kept
