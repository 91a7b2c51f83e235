"""Processes and mounts the lab creates, and the guarantee that none outlives the test session.

Three layers, because each one alone has a hole:
- every long-running lab process is spawned in its own session (so its whole process group can
  be killed) with PR_SET_PDEATHSIG=SIGKILL (so it dies even if pytest itself is SIGKILLed);
- fixtures tear down what they started in finalizers, even when a test fails;
- an atexit hook (and a SIGTERM/SIGHUP handler that turns those into KeyboardInterrupt, see
  conftest.py) reaps whatever a crashed fixture left registered.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
TEMP_ROOT = "/tmp"
TEMP_PREFIX = "oblab-"
_libc = ctypes.CDLL(None, use_errno=True)


def _child_setup() -> None:
    # Runs in the child between fork and exec: new session, and die when the parent dies.
    os.setsid()
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Reaper:
    """Registry of live lab processes and cleanup callbacks; reap() undoes everything, newest first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._callbacks: dict[int, tuple[str, Callable[[], None]]] = {}
        self._next_token = 0

    def spawn(
        self,
        argv: Sequence[str | Path],
        *,
        stdout: IO[Any] | int | None = subprocess.DEVNULL,
        stderr: IO[Any] | int | None = subprocess.STDOUT,
        stdin: IO[Any] | int | None = subprocess.DEVNULL,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a process in its own session that dies with us; registered until stop() is called."""
        args = [str(a) for a in argv]
        log.debug("spawning %s", args)
        # preexec_fn is deliberate: PDEATHSIG can only be set from inside the child.
        proc = subprocess.Popen(
            args,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=env,
            preexec_fn=_child_setup,  # noqa: PLW1509
        )
        with self._lock:
            self._procs[proc.pid] = proc
        return proc

    def stop(
        self,
        proc: subprocess.Popen[bytes],
        *,
        graceful: Callable[[], None] | None = None,
        grace: float = 10.0,
        extra_pids: Sequence[int] = (),
    ) -> None:
        """Stop proc: graceful() (default SIGTERM to proc), wait up to grace, then SIGKILL its group.

        extra_pids are killed too: processes that escaped the group (a container's init, say).
        """
        if proc.poll() is None:
            try:
                if graceful is not None:
                    graceful()
                else:
                    proc.terminate()
            except (ProcessLookupError, OSError) as exc:
                log.debug("graceful stop of %s failed: %s", proc.pid, exc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        if proc.poll() is None:
            log.warning("pid %s did not stop within %.0fs, killing its process group", proc.pid, grace)
        kill_group(proc.pid)
        for pid in extra_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        for pid in extra_pids:
            wait_gone(pid, timeout=10)
        with self._lock:
            self._procs.pop(proc.pid, None)

    def add_callback(self, what: str, callback: Callable[[], None]) -> int:
        """Register a cleanup (unmount, rmtree) to run at reap(); returns a token for remove_callback."""
        with self._lock:
            self._next_token += 1
            self._callbacks[self._next_token] = (what, callback)
            return self._next_token

    def remove_callback(self, token: int) -> None:
        with self._lock:
            self._callbacks.pop(token, None)

    def live(self) -> list[int]:
        with self._lock:
            return [pid for pid, proc in self._procs.items() if proc.poll() is None]

    def reap(self) -> None:
        """Kill every registered process group, then run the cleanups, newest first."""
        with self._lock:
            procs = list(self._procs.values())
            callbacks = sorted(self._callbacks.items(), reverse=True)
            self._procs.clear()
            self._callbacks.clear()
        for proc in procs:
            if proc.poll() is None:
                log.warning("reaping leftover lab process %s (%s)", proc.pid, proc.args)
            kill_group(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for _token, (what, callback) in callbacks:
            try:
                callback()
            except Exception:
                log.exception("lab cleanup %r failed", what)


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until pid no longer exists (it may not be our child, so poll /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return True
        # A zombie that is not our child is gone for our purposes: it holds no resources.
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return True
        time.sleep(0.05)
    return False


def children(pid: int) -> list[int]:
    """Direct children of pid, from /proc (needs no psutil in the lab)."""
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):
                found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return ""


def lab_tempdir(kind: str) -> Path:
    """A short-pathed scratch folder for one container or VM, named after our pid for sweep_stale().

    Short, because unix socket paths (QMP, guest agent, USB chardevs) must stay under 108 bytes.
    """
    path = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{kind}-{os.getpid()}-", dir=TEMP_ROOT))
    REAPER.add_callback(f"remove {path}", lambda: shutil.rmtree(path, ignore_errors=True))
    return path


def sweep_stale() -> list[Path]:
    """Remove scratch folders (and their overlay mounts) of lab sessions that were SIGKILLed."""
    swept: list[Path] = []
    for folder in Path(TEMP_ROOT).glob(f"{TEMP_PREFIX}*-*-*"):
        try:
            owner = int(folder.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if owner == os.getpid() or Path(f"/proc/{owner}").exists():
            continue
        mounts = [
            line.split()[4]
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(f"{folder}/")
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "--lazy", mount], check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
        log.warning("removed %s left behind by a killed lab session", folder)
        swept.append(folder)
    return swept


REAPER = Reaper()
atexit.register(REAPER.reap)
