"""Where things live on the target system, under an optional root prefix.

Every path octobrix reads or writes on the system goes through a Layout, so that tests,
benchmarks and packaging can point the whole program at a scratch directory with --root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from octobrixd.names import LINK_DIR

DEFAULT_CONFIG = Path("/etc/octobrix.toml")

# Relative to the root; PurePosixPath so renderers stay pure and comparable in tests.
UDEV_RULES = PurePosixPath("etc/udev/rules.d/99-octobrix.rules")
UNIT_DIR = PurePosixPath("etc/systemd/system")
SYSUSERS_FILE = PurePosixPath("etc/sysusers.d/octobrix.conf")
MODPROBE_FILE = PurePosixPath("etc/modprobe.d/octobrix-uvcvideo.conf")
STATE_DIR = PurePosixPath("var/lib/octobrix")
MANIFEST = PurePosixPath("var/lib/octobrix/.manifest.json")
DEVICE_LINK_DIR = PurePosixPath(LINK_DIR).relative_to("/")
# The front door's nginx site: there while the front door is on and applied.
NGINX_SITE = PurePosixPath("etc/nginx/conf.d/octobrix.conf")
# The certificate octobrix makes for the front door's HTTPS (frontdoor/tls.py), root's alone.
TLS_DIR = STATE_DIR / ".secrets" / "tls"
TLS_CERTIFICATE = TLS_DIR / "farm.crt"
TLS_KEY = TLS_DIR / "farm.key"


@dataclass(frozen=True)
class Layout:
    """The target system's file tree: '/' on a live system, a scratch directory under --root."""

    root: Path = Path("/")

    @property
    def live(self) -> bool:
        """True when acting on the real system: only then are systemctl/udevadm called."""
        return self.root == Path("/")

    def path(self, relative: PurePosixPath | str) -> Path:
        return self.root / PurePosixPath(relative)

    def state_dir(self, name: str) -> Path:
        return self.path(STATE_DIR / name)

    def device_link(self, name: str) -> Path:
        return self.path(DEVICE_LINK_DIR / name)

    @property
    def sys(self) -> Path:
        return self.path("sys")
