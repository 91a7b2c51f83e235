"""Killed at any moment, apply and octobrixd leave every generated file whole; the next run converges.

A farm of many printers is applied (config A), then a changed config B is applied and the process
is killed with SIGKILL at a random moment: after a random number of the files it reports written,
plus a random fraction of the time one write takes, so kills land before, between and inside
writes. After each kill every generated file must be exactly (bytes and mode) what an
uninterrupted apply of A or of B makes, the manifest must list every generated file on disk, and
the next apply must make the tree exactly what an uninterrupted apply of B makes, with no temp
file or empty directory left behind, after which another apply has nothing to do.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from octobrixd.cli import main as cli
from octobrixd.farm.manifest import read_manifest
from octobrixd.instances.venv_spec import COMPLETE_MARKER, VenvSpec, venv_link, venvs_dir
from octobrixd.instances.venvs import UV_CACHE, provision
from octobrixd.system.paths import MANIFEST, Layout
from tests.conftest import REPO
from tests.lab.harness.wheelhouse import OCTOPRINT, wheelhouse
from tests.test_daemon import NotifySocket as DaemonNotifySocket

SEED = int(os.environ.get("OCTOBRIX_CRASH_SEED", "20240610"))
APPLY_KILLS = 30
DAEMON_KILLS = 10
# Logged by apply as it starts writing and for each file it puts in place or removes
# (octobrixctl --debug, octobrixd's own log): the moments the kills are aimed at.
WRITE_LINE = re.compile(r"\b(writing \d+ files|wrote /|removed /)")
TEMP_NAME = re.compile(r"^\..+\.tmp$")


def farm(printers: range, cameras: int, shift: int) -> str:
    """A farm config; shift moves every port and changes every camera, so every file differs."""
    out = []
    for i in printers:
        camera = f'camera = "c{i:03d}"\n' if i < cameras else ""
        out.append(f'[printers.p{i:03d}]\nserial = "PRN{i:04d}"\nport = {6000 + i + shift}\n{camera}')
    for i in range(cameras):
        out.append(f'[cameras.c{i:03d}]\nserial = "CAM{i:04d}"\nport = {9000 + i + shift}\nfps = {10 + shift}\n')
    return "\n".join(out)


# B moves every port, drops six printers and adds six: files are updated, created and removed.
CONFIG_A = farm(range(40), 8, 0)
CONFIG_B = farm(range(6, 46), 8, 1)


@dataclass(frozen=True)
class Tree:
    files: dict[str, tuple[bytes, int]]  # relative path: (content, permission bits)
    dirs: frozenset[str]


def snapshot(root: Path) -> Tree:
    files: dict[str, tuple[bytes, int]] = {}
    dirs: set[str] = set()
    for path in root.rglob("*"):
        rel = str(path.relative_to(root))
        if rel == "run" or rel.startswith("run/"):
            continue  # the apply lock
        if path.is_dir():
            dirs.add(rel)
        else:
            files[rel] = (path.read_bytes(), stat.S_IMODE(path.lstat().st_mode))
    return Tree(files, frozenset(dirs))


def octobrixctl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "octobrixd.cli", *map(str, args)], capture_output=True, text=True, cwd=REPO, check=False
    )


def apply_in_process(config: Path, root: Path) -> str:
    """`octobrixctl apply`, run in this process (the same code, one interpreter start less); what it says."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["apply", "--config", str(config), "--root", str(root)])
    assert status == 0, err.getvalue()
    return out.getvalue()


@dataclass
class Reference:
    config: Path  # one file, as /etc/octobrix.toml: generated files name it
    root_a: Path
    a: Tree
    b: Tree
    generated: frozenset[str]  # every file the manifests of A and B list
    # When apply logged each WRITE_LINE going from A to B, and when it exited, in seconds after the first.
    timeline: list[float]
    end: float


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """Uninterrupted applies of A, then of B: the two states a killed apply may leave each file in."""
    base = tmp_path_factory.mktemp("reference")
    config = base / "octobrix.toml"
    config.write_text(CONFIG_A)
    root_a, root_b = base / "root-a", base / "root-b"
    first = octobrixctl("apply", "--config", config, "--root", root_a)
    assert first.returncode == 0, first.stderr
    shutil.copytree(root_a, root_b, symlinks=True)
    config.write_text(CONFIG_B)
    process = subprocess.Popen(
        [sys.executable, "-m", "octobrixd.cli", "--debug", "apply", "--config", config, "--root", root_b],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
    )
    assert process.stderr is not None
    stamps = [time.monotonic() for line in process.stderr if WRITE_LINE.search(line)]
    assert process.wait() == 0
    end = time.monotonic()
    manifests = [read_manifest(Layout(root)) for root in (root_a, root_b)]
    return Reference(
        config=config,
        root_a=root_a,
        a=snapshot(root_a),
        b=snapshot(root_b),
        generated=frozenset(path for m in manifests for path in m.files),
        timeline=[stamp - stamps[0] for stamp in stamps],
        end=end - stamps[0],
    )


@dataclass
class KillPoint:
    """What a kill left behind, as a user (or the next apply) finds it."""

    temp_files: int  # temp files on disk: the kill landed while apply was writing files
    files_of_b: int  # files that differ between A and B and are already as B makes them
    files_to_change: int  # files that differ between A and B
    manifest: str  # "A", "B" or "pending" (written first: lists A's and B's files)

    @property
    def kind(self) -> str:
        if self.manifest == "A":
            return "while staging" if self.temp_files else "before writing"
        if self.manifest == "B":
            return "after the final manifest"
        return "after the last file" if self.files_of_b == self.files_to_change else "while committing"


def check_after_kill(ref: Reference, root: Path) -> KillPoint:
    now = snapshot(root)
    manifest = str(MANIFEST)
    temps = [p for p in now.files if TEMP_NAME.match(Path(p).name)]
    for path in sorted((set(ref.a.files) | set(ref.b.files) | set(now.files)) - {manifest, *temps}):
        found, before, after = now.files.get(path), ref.a.files.get(path), ref.b.files.get(path)
        if before is None and after is None:
            pytest.fail(f"{path} is neither in A's tree nor in B's: a kill left a stray file")
        assert found in (before, after), (
            f"{path} is neither A's nor B's version after a kill: "
            f"{'missing' if found is None else f'{len(found[0])} bytes, mode {found[1]:o}'}"
        )
    # The manifest is whole (read_manifest raises on a torn one) and lists every generated file on disk,
    # so the next apply can still remove what a kill left from A.
    listed = read_manifest(Layout(root)).files
    untracked = sorted(p for p in ref.generated if p in now.files and p not in listed)
    assert not untracked, f"generated files the manifest does not list after a kill: {untracked}"
    paths = (set(ref.a.files) | set(ref.b.files)) - {manifest}
    differing = [p for p in paths if ref.a.files.get(p) != ref.b.files.get(p)]
    found = now.files.get(manifest)
    return KillPoint(
        temp_files=len(temps),
        files_of_b=sum(1 for p in differing if now.files.get(p) == ref.b.files.get(p)),
        files_to_change=len(differing),
        manifest={ref.a.files[manifest]: "A", ref.b.files[manifest]: "B"}.get(found, "pending") if found else "none",
    )


def check_converged(ref: Reference, root: Path) -> None:
    now = snapshot(root)
    assert set(now.files) == set(ref.b.files), (
        f"after the next apply, extra: {sorted(set(now.files) - set(ref.b.files))}, "
        f"missing: {sorted(set(ref.b.files) - set(now.files))}"
    )
    wrong = sorted(p for p in now.files if now.files[p] != ref.b.files[p])
    assert not wrong, f"after the next apply these files differ from an uninterrupted apply of B: {wrong}"
    assert now.dirs == ref.b.dirs, f"directories differ: extra {sorted(now.dirs - ref.b.dirs)}"
    assert apply_in_process(ref.config, root).startswith("Nothing to do"), "a further apply found work left"


def kill_while_writing(process: subprocess.Popen[str], rng: random.Random, ref: Reference) -> tuple[bool, int, float]:
    """SIGKILL process at a moment drawn evenly from the time an uninterrupted apply spends writing.

    The moment is aimed as "so long after the Nth line apply logs while writing", so the time the
    interpreter takes to start does not blur it. Returns whether the kill came before the process
    finished, and where it was aimed.
    """
    assert process.stderr is not None
    moment = rng.uniform(0, ref.end)
    after = max(i for i, stamp in enumerate(ref.timeline) if stamp <= moment) + 1
    extra = moment - ref.timeline[after - 1]
    seen = 0
    while seen < after:
        line = process.stderr.readline()
        if not line:
            break
        if WRITE_LINE.search(line):
            seen += 1
    time.sleep(extra)
    landed = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    return landed and process.returncode == -signal.SIGKILL, after, extra


def fresh_copy_of_a(ref: Reference, root: Path) -> Path:
    shutil.copytree(ref.root_a, root, symlinks=True)
    return root


@dataclass
class KillTally:
    """Where the kills that landed (came before the process finished) found the files."""

    what: str
    kinds: Counter[str] = field(default_factory=Counter)
    landed: int = 0
    mid_write: int = 0
    started: float = field(default_factory=time.monotonic)

    def record(self, killed: bool, point: KillPoint) -> None:
        if killed:
            self.landed += 1
            self.kinds[point.kind] += 1
            self.mid_write += point.temp_files > 0

    def report(self) -> None:
        where = ", ".join(f"{count} {kind}" for kind, count in sorted(self.kinds.items()))
        sys.stderr.write(
            f"\n{self.what}: {self.landed} kill points ({where}); {self.mid_write} left temp files (mid-write); "
            f"all converged; {time.monotonic() - self.started:.1f} s\n"
        )


def test_apply_killed_anywhere_leaves_whole_files_and_the_next_apply_converges(
    reference: Reference, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(SEED)
    tally = KillTally("octobrixctl apply")
    kinds = tally.kinds
    reference.config.write_text(CONFIG_B)
    attempts = 0
    # Timing on a loaded machine drifts from the reference run: if the first APPLY_KILLS kills
    # missed one of the two write phases, aim more (the files' checks are the same either way).
    while attempts < APPLY_KILLS or (
        attempts < 3 * APPLY_KILLS and not (kinds["while staging"] and kinds["while committing"])
    ):
        i, attempts = attempts, attempts + 1
        root = fresh_copy_of_a(reference, tmp_path / f"kill{i}")
        process = subprocess.Popen(
            [sys.executable, "-m", "octobrixd.cli", "--debug", "apply", "--config", reference.config, "--root", root],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
        )
        killed, _after, _extra = kill_while_writing(process, rng, reference)
        tally.record(killed, check_after_kill(reference, root))
        apply_in_process(reference.config, root)
        check_converged(reference, root)
        shutil.rmtree(root)
    with capsys.disabled():
        tally.report()
    assert tally.landed >= attempts * 3 // 4, "most kills must land while apply runs, or the test proves little"
    assert kinds["while staging"] > 0 and kinds["while committing"] > 0, "kills must land inside the writes"


class NotifySocket(DaemonNotifySocket):
    def drain(self) -> None:
        self.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                self.sock.recv(4096)
        self.sock.settimeout(15)


@contextlib.contextmanager
def octobrixd(config: Path, root: Path, notify: NotifySocket) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "octobrixd.daemon", "--config", str(config), "--root", str(root)],
        env=dict(os.environ, NOTIFY_SOCKET=str(notify.path)),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stderr is not None:
            process.stderr.close()


def test_octobrixd_killed_during_a_reload_comes_back_and_converges(
    reference: Reference, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(SEED + 1)
    tally = KillTally("octobrixd")
    notify = NotifySocket(tmp_path / "notify.sock")
    for i in range(DAEMON_KILLS):
        root = fresh_copy_of_a(reference, tmp_path / f"kill{i}")
        config = reference.config
        config.write_text(CONFIG_A)
        with octobrixd(config, root, notify) as daemon:
            notify.wait_for("READY")
            config.write_text(CONFIG_B)
            daemon.send_signal(signal.SIGHUP)
            killed, _after, _extra = kill_while_writing(daemon, rng, reference)
        tally.record(killed, check_after_kill(reference, root))
        notify.drain()  # what the killed daemon said, READY included, is not the new one's
        with octobrixd(config, root, notify) as daemon:
            notify.wait_for("READY")
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=10) == 0
        check_converged(reference, root)
        shutil.rmtree(root)
    with capsys.disabled():
        tally.report()
    assert tally.landed >= DAEMON_KILLS * 3 // 4


PROVISION = """
import sys
from pathlib import Path
from octobrixd.system.paths import Layout
from octobrixd.instances.venv_spec import VenvSpec
from octobrixd.instances.venvs import provision
root, wheels, *requirements = sys.argv[1:]
provision(Layout(Path(root)), VenvSpec("printer1", tuple(requirements)), 0, 0, wheels=wheels)
"""


@pytest.mark.lab
def test_venv_build_killed_half_way_keeps_the_working_venv_and_is_cleared_next_time(tmp_path: Path) -> None:
    """A live apply builds venvs (never under --root): killed (its whole process group, as systemd
    does) while uv installs, the instance keeps its venv; the next build removes the half-made one."""
    wheels = wheelhouse()
    plugins = sorted(f"{w.name.split('-')[0]}=={w.name.split('-')[1]}" for w in wheels.glob("octoprint_*check-*.whl"))
    layout = Layout(tmp_path / "root")
    first = provision(layout, VenvSpec("printer1", (OCTOPRINT,)), 0, 0, wheels=str(wheels))
    half = venvs_dir(layout, "printer1") / VenvSpec("printer1", (OCTOPRINT, plugins[0])).digest
    build = subprocess.Popen(
        [sys.executable, "-c", PROVISION, str(layout.root), str(wheels), OCTOPRINT, plugins[0]],
        cwd=REPO,
        start_new_session=True,
        stderr=subprocess.DEVNULL,
    )
    site = half / "lib" / "python3.11" / "site-packages"
    deadline = time.monotonic() + 60
    while not (site / "octoprint").exists() and build.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(build.pid, signal.SIGKILL)
    assert build.wait() == -signal.SIGKILL, "the build finished before it could be killed half-way"
    assert half.is_dir() and not (half / COMPLETE_MARKER).exists()
    assert venv_link(layout, "printer1").resolve() == first, "the instance still runs from its complete venv"

    latest = provision(layout, VenvSpec("printer1", (OCTOPRINT, plugins[1])), 0, 0, wheels=str(wheels))
    assert venv_link(layout, "printer1").resolve() == latest
    assert sorted(p.name for p in venvs_dir(layout, "printer1").iterdir()) == sorted([first.name, latest.name]), (
        "the half-built venv goes, the complete previous one stays for the OctoPrint still running from it"
    )
    assert not list(layout.path(UV_CACHE).glob(".tmp*")), "what uv left half-unpacked in its cache is gone"
