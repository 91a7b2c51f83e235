"""A full disk: apply, octobrixd and venv provisioning fail with one clear line and a hint, and leave
the previous working state as it was; once there is room, the next run does the job.

The disk is a small tmpfs mounted for the test (needs root, as CI runs), filled with a real file
to exactly the free space each case leaves.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from octobrixd.config.applied import APPLIED_CONFIG
from octobrixd.config.view import VIEW_FILE
from octobrixd.errors import OctobrixError
from octobrixd.instances.venv_spec import COMPLETE_MARKER, VenvSpec, venv_link, venvs_dir
from octobrixd.instances.venvs import UV_CACHE, provision
from octobrixd.system.paths import Layout
from tests.conftest import REPO
from tests.lab.harness.wheelhouse import OCTOPRINT, wheelhouse
from tests.test_crash_safety import NotifySocket, Tree, farm, octobrixctl, octobrixd, snapshot

PAGE = 4096
CONFIG_A = farm(range(12), 3, 0)
CONFIG_B = farm(range(2, 16), 3, 1)


def free_bytes(fs: Path) -> int:
    info = os.statvfs(fs)
    return info.f_bavail * info.f_frsize


def fill(fs: Path, leave: int) -> Path:
    """A file taking all the free space of fs but `leave` bytes (a multiple of the page size)."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if free_bytes(fs) > leave:
            os.posix_fallocate(fd, 0, free_bytes(fs) - leave)
    finally:
        os.close(fd)
    assert free_bytes(fs) == leave, f"could not leave exactly {leave} bytes free on {fs}"
    return filler


@pytest.fixture
def mount_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """mount_disk("2m"): a tmpfs of that size, unmounted after the test."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root to mount a small tmpfs: run the suite as root (CI does)", pytrace=False)
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "octobrix-test", str(where)], check=True
        )
        mounted.append(where)
        return where

    try:
        yield mount
    finally:
        for where in mounted:
            subprocess.run(["umount", "--lazy", str(where)], check=True)


@pytest.fixture
def small_disk(mount_disk: Callable[[str], Path]) -> Path:
    return mount_disk("2m")


def pages_to_write(before: Tree, after: Tree) -> int:
    """Space apply needs going from before to after: each changed file, and the manifest twice."""
    # Not the copy of the applied config nor status's view of it: they are written once the apply
    # succeeded, outside its all-or-nothing set (octobrixd.applied).
    after_success = {str(APPLIED_CONFIG), str(VIEW_FILE)}
    changed = [v for p, v in after.files.items() if before.files.get(p) != v and p not in after_success]
    manifest = after.files["var/lib/octobrix/.manifest.json"]
    return sum(math.ceil(len(v[0]) / PAGE) for v in [*changed, manifest]) * PAGE


def farm_on(disk: Path, tmp_path: Path) -> tuple[Path, Path, Tree, Tree, int]:
    """Config A applied on the small disk; B's tree from an apply on a roomy disk, and the space B needs."""
    config = tmp_path / "octobrix.toml"
    config.write_text(CONFIG_A)
    root = disk / "root"
    assert octobrixctl("apply", "--config", config, "--root", root).returncode == 0
    roomy = tmp_path / "roomy"
    shutil.copytree(root, roomy, symlinks=True)
    config.write_text(CONFIG_B)
    assert octobrixctl("apply", "--config", config, "--root", roomy).returncode == 0
    before, after = snapshot(root), snapshot(roomy)
    return config, root, before, after, pages_to_write(before, after)


def test_apply_on_a_full_disk_changes_nothing_and_says_what_to_free(small_disk: Path, tmp_path: Path) -> None:
    config, root, before, after, needed = farm_on(small_disk, tmp_path)
    # Full; room for half of what apply writes; room for all but the last page.
    for leave in sorted({0, needed // 2 // PAGE * PAGE, needed - PAGE}):
        filler = fill(small_disk, leave)
        result = octobrixctl("apply", "--config", config, "--root", root)
        assert result.returncode == 1, f"{leave} bytes free: {result.stdout}{result.stderr}"
        lines = result.stderr.splitlines()
        assert lines[0].startswith(f"octobrixctl: cannot write {root}/"), result.stderr
        assert lines[0].endswith(f": no space left on {small_disk}; nothing was changed"), result.stderr
        assert lines[1:] == [f"hint: free some space on {small_disk} (`df -h {small_disk}` shows how much is left) "
                             "and try again"], result.stderr  # fmt: skip
        now = snapshot(root)
        assert now.files == before.files, f"{leave} bytes free: files changed or temp files left behind"
        assert now.dirs == before.dirs, f"{leave} bytes free: folders left behind: {sorted(now.dirs - before.dirs)}"
        filler.unlink()

    result = octobrixctl("apply", "--config", config, "--root", root)
    assert result.returncode == 0, result.stderr
    assert snapshot(root) == after
    assert octobrixctl("apply", "--config", config, "--root", root).stdout.startswith("Nothing to do")


def test_octobrixd_on_a_full_disk_says_so_and_applies_once_there_is_room(small_disk: Path, tmp_path: Path) -> None:
    config, root, before, after, needed = farm_on(small_disk, tmp_path)
    filler = fill(small_disk, needed // 2 // PAGE * PAGE)
    notify = NotifySocket(tmp_path / "notify.sock")
    with octobrixd(config, root, notify) as daemon:
        status = notify.wait_for("STATUS", "apply failed")["STATUS"]
        assert f"apply failed: cannot write {root}/" in status
        assert status.endswith(f": no space left on {small_disk}; nothing was changed")
        assert snapshot(root) == before
        filler.unlink()
        daemon.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING")
        notify.wait_for("READY")
        # The serial printers are not plugged in (there is no udev under --root), and no problem is left.
        assert notify.wait_for("STATUS")["STATUS"] == "14 printers: 14 unplugged; 3 cameras: 0 streaming"
        assert snapshot(root) == after
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0


# --- venvs --------------------------------------------------------------------------------------


def working_venv(layout: Layout, name: str) -> Path:
    """The venv the instance runs from: complete, and its OctoPrint imports."""
    current = venv_link(layout, name).resolve()
    assert (current / COMPLETE_MARKER).exists()
    imported = subprocess.run(
        [str(venv_link(layout, name) / "bin" / "python"), "-c", "import octoprint"], capture_output=True, check=False
    )
    assert imported.returncode == 0, imported.stderr
    return current


def assert_failed_cleanly(layout: Layout, error: OctobrixError, disk: Path, kept: Path, before: set[str]) -> None:
    assert "could not install" in error.message and "it keeps its current OctoPrint" in error.message
    assert "No space left on device" in error.message
    assert error.hint == f"the disk is full: free some space on {disk} (`df -h {disk}`) and apply again"
    assert working_venv(layout, "printer1") == kept
    assert {p.name for p in venvs_dir(layout, "printer1").iterdir()} == before, "a half-built venv was left"
    assert not list(layout.path(UV_CACHE).glob(".tmp*")), "half-unpacked wheels were left in uv's cache"


@pytest.mark.lab
def test_venv_on_a_full_disk_keeps_the_working_one(mount_disk: Callable[[str], Path]) -> None:
    """OctoPrint from the lab's wheel folder (offline, as `[octobrix] wheels` does), onto a small disk."""
    wheels = wheelhouse()
    small_disk = mount_disk("512m")
    plugins = sorted(f"{w.name.split('-')[0]}=={w.name.split('-')[1]}" for w in wheels.glob("octoprint_*check-*.whl"))
    assert len(plugins) == 2, f"the wheel folder should hold OctoPrint's FileCheck and FirmwareCheck: {plugins}"
    layout = Layout(small_disk / "root")
    first = provision(layout, VenvSpec("printer1", (OCTOPRINT,)), os.getuid(), os.getgid(), wheels=str(wheels))
    assert working_venv(layout, "printer1") == first

    # A changed pin whose wheels are in uv's cache: only the venv's own files need room. Every amount
    # of free space from none up fails cleanly, until there is enough.
    second = VenvSpec("printer1", (OCTOPRINT, plugins[0]))
    failures: list[str] = []
    leave = 0
    while True:
        filler = fill(small_disk, leave)
        try:
            installed = provision(layout, second, os.getuid(), os.getgid(), wheels=str(wheels))
        except OctobrixError as error:
            assert_failed_cleanly(layout, error, small_disk, first, {first.name})
            failures.append(error.message)
            leave = max(leave * 2, 32 * PAGE)
            continue
        finally:
            filler.unlink()
        break
    assert len(failures) >= 3, f"the venv fit in {leave} bytes: too little to fail part-way"
    assert any("Failed to create virtual environment" in f for f in failures), "no failure while making the venv"
    assert any("Failed to install" in f for f in failures), "no failure while installing into it"
    assert working_venv(layout, "printer1") == installed
    assert (first / COMPLETE_MARKER).exists(), "the previous venv stays for the OctoPrint still running from it"

    # A pin whose wheels must be unpacked again (uv's cache was cleared): the cache needs the room.
    cache_size = sum(p.stat().st_size for p in layout.path(UV_CACHE).rglob("*") if p.is_file())
    subprocess.run(
        [sys.executable, "-m", "uv", "cache", "clean", "--cache-dir", str(layout.path(UV_CACHE))],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    third = VenvSpec("printer1", (OCTOPRINT, *plugins))
    filler = fill(small_disk, min(free_bytes(small_disk), cache_size // 2) // PAGE * PAGE)
    with pytest.raises(OctobrixError) as caught:
        provision(layout, third, os.getuid(), os.getgid(), wheels=str(wheels))
    assert_failed_cleanly(layout, caught.value, small_disk, installed, {first.name, installed.name})
    filler.unlink()
    latest = provision(layout, third, os.getuid(), os.getgid(), wheels=str(wheels))
    assert working_venv(layout, "printer1") == latest
