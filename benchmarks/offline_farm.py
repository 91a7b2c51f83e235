"""A farm for benchmarks: a systemd container with a network of its own (only its loopback, so its
OctoPrints may use any port without meeting the host's or another session's), octobrix installed
offline by packaging/install.sh from the lab's wheelhouse, as a farm without internet does."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.lab.harness.build import CACHE
from tests.lab.harness.container import Container, booted
from tests.lab.harness.project import WHEELS_IN_GUEST, install_offline
from tests.lab.harness.wheelhouse import wheelhouse

# install.sh asks apt for ustreamer, v4l-utils and nginx (the front door), which the container's
# rootfs lacks and cannot download without a network: the debs the lab's VM image build fetched are
# installed first.
PREINSTALLED_DEBS = (
    "libevent-2.1-7_*.deb",
    "libevent-core-2.1-7_*.deb",
    "libevent-pthreads-2.1-7_*.deb",
    "libjpeg62-turbo_*.deb",
    "ustreamer_*.deb",
    "libv4lconvert0_*.deb",
    "libv4l-0_*.deb",
    "libv4l2rds0_*.deb",
    "v4l-utils_*.deb",
    "nginx-common_*.deb",
    "nginx_*.deb",
)
# The container's /tmp is a tmpfs mounted over what copy_in writes.
DEB_DIR = "/root/lab-debs"


def lab_debs() -> list[Path]:
    """The debs, from the lab's apt cache. The lab VM image's build leaves them there; on a machine
    that has not built it yet, the host (Debian 12, as the container) downloads the missing ones."""
    archives = CACHE / "apt-archives"
    archives.mkdir(parents=True, exist_ok=True)
    missing = [pattern.split("_", 1)[0] for pattern in PREINSTALLED_DEBS if not any(archives.glob(pattern))]
    if missing:
        subprocess.run(["apt-get", "download", "-q", *missing], cwd=archives, check=True)
    return [next(archives.glob(pattern)) for pattern in PREINSTALLED_DEBS]


def preinstall_debs(box: Container) -> None:
    debs = lab_debs()
    for deb in debs:
        box.copy_in(deb, f"{DEB_DIR}/{deb.name}")
    box.run(["dpkg", "-i", *(f"{DEB_DIR}/{deb.name}" for deb in debs)], timeout=300)


def virtual_printers(count: int, first_port: int = 5100) -> str:
    """A config of count virtual printers p00, p01... installing from the wheelhouse."""
    head = f'[octobrix]\nwheels = "{WHEELS_IN_GUEST}"\nlisten = "127.0.0.1"\n\n'
    return head + "".join(f"[printers.p{i:02d}]\nvirtual = true\nport = {first_port + i}\n\n" for i in range(count))


@contextlib.contextmanager
def offline_farm(config: str) -> Iterator[Container]:
    with tempfile.TemporaryDirectory(prefix="octobrix-bench-") as scratch:
        work = Path(scratch)
        with booted(work / "ct", boot_timeout=120, private_network=True) as box:
            box.write_file("/etc/octobrix.toml", config)
            preinstall_debs(box)
            install_offline(box, work, wheelhouse(), timeout=1800)
            yield box
