"""A pristine copy of the lab rootfs booted with systemd-nspawn: real systemd as the container's PID 1.

The copy is an overlayfs over the cached rootfs (instant, and the cache stays untouched); if
overlayfs is unavailable, a `cp -a` copy. Commands run through `nsenter -t <container init> -a`
because there is no host systemd bus for `machinectl`/`systemd-run -M`. There is no udev inside
(/sys is read-only): the container is for unit lifecycle, the VM is for hotplug.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from tests.lab.harness import build
from tests.lab.harness.procs import REAPER, children, comm, wait_gone

log = logging.getLogger(__name__)

GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_counter = itertools.count(1)


class LabError(RuntimeError):
    """The lab itself could not do what a test asked (boot, run a command); not a test failure."""


class Container:
    """A booted container. Use as a context manager or call stop(); both are idempotent."""

    def __init__(
        self,
        workdir: Path,
        *,
        name: str | None = None,
        boot_timeout: float = 90.0,
        base: Callable[[], Path | Sequence[Path]] = build.rootfs,
        private_network: bool = False,
    ) -> None:
        self.workdir = workdir
        # Which cached rootfs: the lab's (build.rootfs) or a bare server's (build.newcomer_rootfs), or
        # layers over one, topmost first (installed.farm_base: octobrix installed over the lab's).
        self.base = base
        # Only a loopback of its own: its services may use any port without meeting the host's or
        # another session's (and it reaches no network: install offline, from a wheelhouse).
        self.private_network = private_network
        self.name = name or f"octobrix-lab-{os.getpid()}-{next(_counter)}"
        self.boot_timeout = boot_timeout
        self.root = workdir / "root"
        self.console_log = workdir / "console.log"
        self.leader = 0  # host pid of the container's init
        self._proc: subprocess.Popen[bytes] | None = None
        self._overlay = False
        self.layer = workdir / "layer"  # the overlay's upper and work folders
        self._layer_mounted = False
        self._cleanup_token: int | None = None

    # --- lifecycle ---

    def start(self) -> Container:
        base = self.base()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._cleanup_token = REAPER.add_callback(f"container {self.name} files", self._remove_files)
        self._make_root(base)
        self._boot()
        return self

    def _boot(self) -> None:
        with self.console_log.open("ab") as console:
            self._proc = REAPER.spawn(
                [
                    "systemd-nspawn", f"--directory={self.root}", f"--machine={self.name}", "--boot",
                    "--register=no", "--keep-unit", "--console=pipe", "--quiet",
                    *(["--private-network"] if self.private_network else []),
                ],
                stdout=console,
                env=build._nspawn_env(),
            )  # fmt: skip
        try:
            self._wait_booted()
        except BaseException:
            self.stop()
            raise

    def reboot(self, timeout: float = 60.0) -> None:
        """`systemctl reboot` inside, then boot the same root again: its files are kept, as on a
        machine that restarts. Only what the system enables at boot is running afterwards."""
        if self._proc is None or not self.leader:
            raise LabError("container is not running")
        proc, old_leader = self._proc, self.leader
        # The command may lose its namespace half-way through the shutdown: its status means nothing.
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.run(["systemctl", "reboot"], check=False, timeout=timeout)
        try:
            # nspawn exits (status 133) when the container asks for a reboot; a supervisor restarts it.
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as error:
            message = f"container did not shut down for the reboot within {timeout}s:\n{self.console()}"
            raise LabError(message) from error
        REAPER.stop(proc)
        if not wait_gone(old_leader, 10):
            raise LabError(f"container init (pid {old_leader}) survived the reboot")
        log.info("container %s rebooting (nspawn exited with %s)", self.name, returncode)
        self._proc, self.leader = None, 0
        self._boot()

    def _make_root(self, base: Path | Sequence[Path]) -> None:
        lowers = [base] if isinstance(base, Path) else list(base)
        # What the container writes (venvs, caches, uploads: a GB after an install) lives in a tmpfs:
        # removing it from disk took 25-76 s per container, unmounting a tmpfs takes none.
        self.layer.mkdir(exist_ok=True)
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "mode=0755", "octobrix-lab", self.layer],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode == 0:
            self._layer_mounted = True
        else:
            log.warning("tmpfs for the container's writes failed (%s); writing to disk", result.stderr.strip())
        upper, work = self.layer / "upper", self.layer / "work"
        for folder in (self.root, upper, work):
            folder.mkdir(exist_ok=True)
        result = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={':'.join(map(str, lowers))},upperdir={upper},workdir={work}", self.root],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode == 0:
            self._overlay = True
            return
        if len(lowers) > 1:
            raise LabError(f"overlayfs failed ({result.stderr.strip()}): layers {lowers} need it")
        log.warning("overlayfs failed (%s); copying the rootfs instead", result.stderr.strip())
        subprocess.run(["cp", "-a", "--reflink=auto", f"{lowers[0]}/.", self.root], check=True)

    def _wait_booted(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.boot_timeout
        while not self.leader:
            if self._proc.poll() is not None:
                raise LabError(f"systemd-nspawn exited with {self._proc.returncode}:\n{self.console()}")
            self.leader = next((c for c in children(self._proc.pid) if comm(c) == "systemd"), 0)
            if time.monotonic() > deadline:
                raise LabError(f"container init did not appear within {self.boot_timeout}s:\n{self.console()}")
            time.sleep(0.05)
        state, error = "", ""
        # Right after exec, init has no bus yet and systemctl fails at once: retry until it answers.
        while state not in ("running", "degraded", "maintenance", "stopping"):
            if time.monotonic() > deadline:
                raise LabError(
                    f"container did not finish booting within {self.boot_timeout}s (state {state!r}, "
                    f"{error.strip()!r}):\n{self.console()}"
                )
            remaining = max(1.0, deadline - time.monotonic())
            with contextlib.suppress(subprocess.TimeoutExpired):
                result = self.run(["systemctl", "is-system-running", "--wait"], check=False, timeout=remaining)
                state, error = result.stdout.strip(), result.stderr
            if not state:
                time.sleep(0.1)
        if state not in ("running", "degraded"):
            raise LabError(f"container did not boot (state {state!r}):\n{self.console()}")
        if state == "degraded":
            failed = self.run(["systemctl", "--failed", "--no-legend", "--plain"], check=False).stdout
            log.warning("container %s booted degraded; failed units:\n%s", self.name, failed)

    def stop(self, *, keep_changes: Path | None = None) -> None:
        """Kill everything in it, then make sure nothing is left.

        keep_changes: a new folder that receives what the container changed (the overlay's upper
        layer: its files, whiteouts and opaque folders), to serve as a lower layer of later ones;
        the container then shuts down cleanly first (nspawn forwards SIGTERM as poweroff)."""
        started = time.monotonic()
        if self._proc is not None:
            proc, self._proc = self._proc, None
            leader = self.leader

            def end() -> None:
                if keep_changes is None and leader:
                    # Its files are thrown away: nothing in it needs a clean shutdown (which waits
                    # on every OctoPrint's own), so its PID namespace ends at once.
                    os.kill(leader, signal.SIGKILL)
                else:
                    os.kill(proc.pid, signal.SIGTERM)

            REAPER.stop(
                proc,
                graceful=end,
                grace=20.0,
                extra_pids=[self.leader] if self.leader else [],
            )
        if self.leader and not wait_gone(self.leader, 5):
            log.error("container %s init (pid %s) survived its shutdown", self.name, self.leader)
        stopped = time.monotonic()
        if keep_changes is not None:
            self._keep_changes(keep_changes)
        self._remove_files()
        removed = time.monotonic() - stopped
        log.info("container %s stopped in %.1fs, its files removed in %.1fs", self.name, stopped - started, removed)
        if self._cleanup_token is not None:
            REAPER.remove_callback(self._cleanup_token)
            self._cleanup_token = None

    def _keep_changes(self, dest: Path) -> None:
        if not self._overlay:
            raise LabError(f"container {self.name} has no overlay layer to keep")
        subprocess.run(["umount", self.root], check=True, capture_output=True)
        self._overlay = False
        # -a keeps device nodes (overlayfs' whiteouts) and trusted.* attributes (its opaque folders).
        subprocess.run(["cp", "-a", f"{self.layer / 'upper'}/.", dest], check=True, capture_output=True)

    def _remove_files(self) -> None:
        if self._overlay:
            result = subprocess.run(["umount", self.root], capture_output=True, check=False)
            if result.returncode != 0:
                # Something still holds the mount; detach it so the folder can go.
                subprocess.run(["umount", "--lazy", self.root], check=False)
            self._overlay = False
        if self._layer_mounted:
            result = subprocess.run(["umount", self.layer], capture_output=True, check=False)
            if result.returncode != 0:
                subprocess.run(["umount", "--lazy", self.layer], check=False)
            self._layer_mounted = False
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.workdir)

    def __enter__(self) -> Container:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- using it ---

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120.0,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the container as root, with a clean environment (not the host's)."""
        if not self.leader:
            raise LabError("container is not running")
        guest_env = {"PATH": GUEST_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}
        guest_env.update(env or {})
        args = [
            "nsenter", "-t", str(self.leader), "-a", "env", "-i",
            *(f"{k}={v}" for k, v in guest_env.items()), *argv,
        ]  # fmt: skip
        result = subprocess.run(args, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, list(argv), result.stdout, result.stderr)
        return result

    def path(self, guest_path: str | os.PathLike[str]) -> Path:
        """The host path of a file in the container (the overlay's merged view)."""
        return self.root / Path(guest_path).relative_to("/")

    def write_file(self, guest_path: str, text: str | bytes, *, mode: int = 0o644) -> None:
        target = self.path(guest_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, str):
            target.write_text(text)
        else:
            target.write_bytes(text)
        target.chmod(mode)

    def read_file(self, guest_path: str) -> str:
        return self.path(guest_path).read_text()

    def copy_in(self, src: Path, guest_dest: str) -> None:
        """Copy a host file or folder to guest_dest (the full destination path, not its parent)."""
        target = self.path(guest_dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(src, target)

    def wait_for_path(self, guest_path: str, *, present: bool = True, timeout: float = 20.0) -> float:
        """Wait until guest_path exists (or is gone); returns the seconds waited."""
        started = time.monotonic()
        target = self.path(guest_path)
        while (target.exists() or target.is_symlink()) != present:
            if time.monotonic() - started > timeout:
                state = "appear" if present else "disappear"
                raise TimeoutError(f"{guest_path} did not {state} in the container within {timeout}s")
            time.sleep(0.05)
        return time.monotonic() - started

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(["systemctl", *args], check=check)

    def is_active(self, unit: str) -> str:
        return self.run(["systemctl", "is-active", unit], check=False).stdout.strip()

    def wait_active(self, unit: str, timeout: float = 30.0, want: str = "active") -> str:
        """Poll until unit's ActiveState is want (or failed/timeout); returns the last state seen."""
        deadline = time.monotonic() + timeout
        state = self.is_active(unit)
        while state not in (want, "failed") and time.monotonic() < deadline:
            time.sleep(0.2)
            state = self.is_active(unit)
        return state

    def journal(self, unit: str | None = None, lines: int = 200) -> str:
        argv = ["journalctl", "--no-pager", "-n", str(lines)]
        if unit:
            argv += ["-u", unit]
        return self.run(argv, check=False).stdout

    def console(self, lines: int = 60) -> str:
        try:
            text = self.console_log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no console log)"
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def booted(
    workdir: Path,
    *,
    boot_timeout: float = 90.0,
    base: Callable[[], Path | Sequence[Path]] = build.rootfs,
    private_network: bool = False,
) -> Iterator[Container]:
    container = Container(workdir, boot_timeout=boot_timeout, base=base, private_network=private_network)
    with container:
        yield container
