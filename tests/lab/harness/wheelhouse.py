"""A folder of wheels for the lab VM, which has no network: octobrix itself, the pinned OctoPrint
with everything it needs (netifaces compiled here, for the guest's Python 3.11), and the seed
packages uv puts into a new venv. It is what a user of a farm without internet makes with
`pip wheel` on another computer (`packaging/install.sh --wheels DIR`).

Cached outside the repo, keyed by what goes in; octobrix's own wheel is rebuilt every time since
the code under test changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.lab.harness.build import CACHE
from tests.lab.harness.container import Container
from tests.lab.harness.project import REPO

OCTOPRINT = "octoprint==1.11.8"
# OctoPrint 2.0 with its own dependencies, for tests of printers pinned to it (test_octoprint_versions.py).
# Resolved on its own: its pins (flask 3.1, zeroconf 0.148...) conflict with 1.11's.
OCTOPRINT_2 = "octoprint==2.0.0rc3"
SEEDS = ("pip", "setuptools", "wheel")
# The test venv is made from Debian's Python, as the guest's is: compiled wheels (netifaces) fit it.
PYTHON = sys.executable


def _dependencies() -> list[str]:
    text = (REPO / "pyproject.toml").read_text()
    start = text.index("dependencies = [") + len("dependencies = [")
    block = text[start : text.index("]", start)]
    return sorted(line.split('"')[1] for line in block.splitlines() if '"' in line)


@contextlib.contextmanager
def _cache_entry(folder: Path) -> Iterator[bool]:
    """Hold the wheels' cache lock; True when folder is new and empty, to be filled in the block (it is
    complete once the block ends without an error)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "wheels.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        empty = not (folder / ".complete").exists()
        if empty:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
        yield empty
        if empty:
            (folder / ".complete").touch()


def octoprint_release(version: str) -> Path:
    """Another OctoPrint release's own wheel, for tests that move a printer between versions (its
    dependencies are those of the wheelhouse's OctoPrint); downloaded once into the cache."""
    folder = CACHE / f"octoprint-{version}"
    with _cache_entry(folder) as empty:
        if empty:
            subprocess.run(
                [PYTHON, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(folder),
                 f"octoprint=={version}"],
                check=True,
            )  # fmt: skip
    return next(folder.glob("octoprint-*.whl"))


def fill_wheels(box: Container, guest_folder: str, *octoprint_versions: str) -> None:
    """A wheels folder in the container ([octobrix] wheels): the wheelhouse, and those OctoPrint releases."""
    folder = box.path(guest_folder)
    folder.mkdir(parents=True, exist_ok=True)
    for wheel in [*wheelhouse().glob("*.whl"), *map(octoprint_release, octoprint_versions)]:
        shutil.copy(wheel, folder / wheel.name)


def wheelhouse() -> Path:
    """Build (once) and return the folder; octobrix's wheel in it is always the current checkout's."""
    key = hashlib.sha256("\n".join([OCTOPRINT, OCTOPRINT_2, *SEEDS, *_dependencies()]).encode()).hexdigest()[:16]
    folder = CACHE / f"wheels-{key}"
    with _cache_entry(folder) as empty:
        if empty:
            subprocess.run(
                [PYTHON, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(folder), OCTOPRINT, *SEEDS,
                 *_dependencies()],
                check=True,
            )  # fmt: skip
            subprocess.run(
                [PYTHON, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(folder), OCTOPRINT_2], check=True
            )
        for old in folder.glob("octobrix-*.whl"):
            old.unlink()
        subprocess.run(
            [PYTHON, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(folder), str(REPO)],
            check=True,
        )
    return folder
