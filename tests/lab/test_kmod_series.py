"""The patched uvcvideo builds for every Debian kernel series, each with that release's own compiler.

tests/test_kmod.py applies the patch to every series and builds it with DKMS for bookworm's 6.1;
this builds it, as a user's DKMS would, in a chroot of each other release: bullseye (5.10, gcc 10),
trixie (6.12, gcc 14) and trixie-backports (the newest series Debian ships). Each chroot has that
release's linux-headers-amd64 and linux-source, so uvc-source.sh finds the sources where a user's
machine has them. The chroots are cached outside the repo (the first run takes a few minutes).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_programs

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("OCTOBRIX_KMOD_CHROOTS", "/var/cache/octobrix-tests/kmod-chroots"))
MIRROR = os.environ.get("OCTOBRIX_LAB_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ("build-essential", "linux-headers-amd64", "linux-source", "patch", "xz-utils", "bzip2", "kmod")
# chroot name: (debootstrap suite, apt target release for the kernel packages or None)
RELEASES = {
    "bullseye": ("bullseye", None),
    "trixie": ("trixie", None),
    "trixie-backports": ("trixie", "trixie-backports"),
}


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def in_chroot(root: Path, script: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run script in root with its own /proc (objtool needs it), in a private mount namespace."""
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount -t proc proc "$1/proc" && exec chroot "$1" sh -c "$2"', "sh", str(root), script],
        capture_output=True, text=True, check=check, timeout=1800,
    )  # fmt: skip


def chroot_for(name: str) -> Path:
    """A cached chroot of one Debian release with its kernel headers and kernel sources."""
    root = CACHE / name
    with locked(CACHE / f".{name}.lock"):
        if (root / ".complete").exists():
            return root
        shutil.rmtree(root, ignore_errors=True)
        suite, target = RELEASES[name]
        base = ",".join(p for p in PACKAGES if target is None or p not in ("linux-headers-amd64", "linux-source"))
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={base}", suite, str(root), MIRROR],
            check=True, capture_output=True,
        )  # fmt: skip
        if target is not None:
            (root / "etc/apt/sources.list.d/target.list").write_text(f"deb {MIRROR} {target} main\n")
            in_chroot(
                root,
                "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                f"--no-install-recommends -t {target} linux-headers-amd64 linux-source",
            )
        in_chroot(root, "apt-get clean")
        (root / ".complete").touch()
    return root


def has_headers(root: Path, modules_dir: Path) -> bool:
    """Whether /lib/modules/X/build leads to headers inside root (older releases link absolutely)."""
    build = modules_dir / "build"
    if not build.is_symlink():
        return (build / "Makefile").is_file()
    target = build.readlink()
    inside = root / str(target).lstrip("/") if target.is_absolute() else build.parent / target
    return (inside / "Makefile").is_file()


@pytest.fixture
def lab_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("building in chroots needs root: run the suite as root, or deselect with -m 'not lab'")
    require_programs("debootstrap", "unshare", "chroot", deps="lab.sh")


@pytest.mark.parametrize("release", list(RELEASES))
def test_patched_module_builds_with_each_releases_own_headers_and_sources(lab_root: None, release: str) -> None:
    root = chroot_for(release)
    kernels = sorted(d.name for d in (root / "lib/modules").iterdir() if has_headers(root, d))
    assert kernels, f"no kernel headers in the {release} chroot"
    kernel = kernels[-1]
    package = root / "root/octobrix-uvcvideo"
    shutil.rmtree(package, ignore_errors=True)
    package.mkdir(parents=True)
    for pattern in ("Makefile", "*.sh", "*.patch", "dkms.conf"):
        for path in (REPO / "kmod").glob(pattern):
            shutil.copy2(path, package / path.name)

    built = in_chroot(root, f"make -C /root/octobrix-uvcvideo -j2 KVER={kernel} 2>&1", check=False)
    assert built.returncode == 0, built.stdout[-3000:]
    series = ".".join(kernel.split(".")[:2])
    assert f"uvcvideo sources for {kernel} taken from /usr/src/linux-source-{series}.tar.xz" in built.stdout
    assert "warning:" not in built.stdout, built.stdout[-3000:]
    info = dict(
        line.split(":", 1)
        for line in in_chroot(root, "modinfo /root/octobrix-uvcvideo/uvcvideo.ko").stdout.splitlines()
    )
    assert info["version"].strip() == "1.1.1-octobrix2"
    assert info["vermagic"].split()[0] == kernel
    info_text = in_chroot(root, "modinfo -F parm /root/octobrix-uvcvideo/uvcvideo.ko").stdout
    assert "max_compressed_payload:" in info_text
    assert "uncompressed_bandwidth_fix:" in info_text
