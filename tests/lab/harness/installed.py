"""octobrix installed once per tree: a layer of the lab's container rootfs holding what
`packaging/install.sh` adds to a server (its apt packages, /opt/octobrix, the units, the front
door), built the first time a test asks for it and kept in the lab's cache under a hash of what it
installs. Modules that test something other than installing boot their container on it
(`farm_base`), write their config and run install.sh again: the script's second run, which finds
octobrix in place and applies the config (building the printers' OctoPrints), as it does on a
farm that updates. The install tests (test_install*, test_ansible) still install from nothing.

The layer holds no config and no printer, and none of octobrix's own services is enabled: install.sh
enables and starts them, as on the first install. The uv cache holds the pinned OctoPrint, so the
printers' venvs build without downloading it again.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import shutil
import subprocess
from pathlib import Path

from octobrixd.config.model import parse_config
from octobrixd.instances.venvs import UV_CACHE
from tests.lab.harness import build
from tests.lab.harness.container import Container, LabError
from tests.lab.harness.installs import EXTRA_CA, OCTOBRIX_SERVICES, holding_printer_ports, trust_host_certificates
from tests.lab.harness.procs import lab_tempdir
from tests.lab.harness.project import REPO, checkout_files

log = logging.getLogger(__name__)

# The config the layer is installed with: a farm without printers (no OctoPrint port is used).
EMPTY_FARM = "[octobrix]\n"
# OctoPrint's own requirements, resolved into the layer's uv cache once (the config's default pin).
WARM_VENV = "/tmp/octobrix-lab-warm"
PREFIX = "installed-"


def _tree_hash() -> str:
    digest = hashlib.sha256()
    for rel in sorted(checkout_files()):
        digest.update(rel.encode() + b"\0" + (REPO / rel).read_bytes() + b"\0")
    for cert in sorted(EXTRA_CA.glob("*")) if EXTRA_CA.is_dir() else []:
        if cert.is_file():
            digest.update(cert.name.encode() + b"\0" + cert.read_bytes() + b"\0")
    digest.update(build.rootfs().name.encode())
    digest.update(inspect.getsource(_install).encode())
    return digest.hexdigest()[:16]


def install_checkout(box: Container) -> subprocess.CompletedProcess[str]:
    """Copy this checkout into the container and run the README's install command there, as root."""
    trust_host_certificates(box)
    for rel in checkout_files():
        box.copy_in(REPO / rel, f"/root/octobrix/{rel}")
    return box.run(["/root/octobrix/packaging/install.sh"], timeout=1200, check=False)


def _install(box: Container) -> None:
    box.write_file("/etc/octobrix.toml", EMPTY_FARM)
    installed = install_checkout(box)
    if installed.returncode != 0:
        raise LabError(f"install.sh failed while building the installed layer:\n{installed.stdout}\n{installed.stderr}")
    pin = parse_config(EMPTY_FARM).octobrix.octoprint
    # As octobrix's own uv runs (instances/venvs.py), so that its cache keys match.
    uv = ["env", f"UV_CACHE_DIR=/{UV_CACHE}", "UV_NATIVE_TLS=1", "UV_NO_CONFIG=1", "UV_PYTHON_DOWNLOADS=never",
          "/opt/octobrix/bin/python", "-m", "uv"]  # fmt: skip
    box.run([*uv, "venv", "--quiet", "--python", "/usr/bin/python3", WARM_VENV], timeout=300)
    box.run([*uv, "pip", "install", "--quiet", "--python", f"{WARM_VENV}/bin/python", pin], timeout=900)
    box.run(["rm", "-rf", WARM_VENV])
    box.systemctl("disable", "--now", *OCTOBRIX_SERVICES)
    box.run(["rm", "-f", "/etc/octobrix.toml"])
    # The layer's boot history is not the module's.
    box.run(["journalctl", "--rotate"], check=False)
    box.run(["sh", "-c", "rm -rf /var/log/journal/*"])


def _prune(keep: str) -> None:
    for entry in build.CACHE.glob(f"{PREFIX}*"):
        if entry.name != keep and not entry.name.endswith(".inuse"):
            log.info("pruning old installed layer %s", entry)
            shutil.rmtree(entry, ignore_errors=True)


@functools.cache
def layer() -> Path:
    """The installed layer for this tree, built if missing (about a minute). Read-only: boot over it."""
    final = build.CACHE / f"{PREFIX}{_tree_hash()}"
    if not (final / ".installed").exists():
        with build._build_lock():
            if not (final / ".installed").exists():
                _prune(keep=final.name)
                tmp = final.with_name(f"build-{final.name}")
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                box = Container(lab_tempdir("layer") / "ct", boot_timeout=120)
                try:
                    # The install starts nginx on the front door's port: held like any module's.
                    with holding_printer_ports((), front_door_port=80):
                        box.start()
                        _install(box)
                        box.stop(keep_changes=tmp)
                finally:
                    box.stop()
                (tmp / ".installed").write_text("\n")
                tmp.rename(final)
    return final


def farm_base() -> list[Path]:
    """Container(base=farm_base): the installed layer over the lab's rootfs."""
    return [layer(), build.rootfs()]
