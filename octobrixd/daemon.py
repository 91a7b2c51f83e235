"""octobrixd: keeps the system in step with the config and with what is plugged in.

The main loop sleeps in select() on three things: signals (SIGHUP reloads, SIGTERM stops, SIGUSR1
says an instance failed), the udev monitor, and the wake-ups of its background jobs. A timer exists
only for the systemd watchdog, the retry of a restart held back for a print, and the next start
of a failed instance (instances/recovery.py). A config that does not validate changes nothing: the last
good one stays in force and STATUS= shows the problem.
"""

from __future__ import annotations

import argparse
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from octobrixd.adding.service import AddService
from octobrixd.apply.plan import apply_lock, apply_plan, make_plan
from octobrixd.cameras import health as camera_health
from octobrixd.cliargs import add_config_argument, add_root_argument
from octobrixd.config.applied import remember_applied
from octobrixd.config.model import Config, load_config
from octobrixd.devices import plug_counts
from octobrixd.devices.hotplug import Action, DeviceEvent, HotplugMonitor
from octobrixd.devices.inventory import read_device
from octobrixd.devices.suggestions import one_line_entry
from octobrixd.errors import ConfigError, OctobrixError
from octobrixd.farm.manifest import read_manifest
from octobrixd.farm.status import query_units
from octobrixd.farm.summary import farm_summary
from octobrixd.instances.connect import Connections
from octobrixd.instances.recovery import Pass, Recovery
from octobrixd.instances.running import printing_now
from octobrixd.names import DeviceKind, device_link, kind_of_subsystem, octoprint_unit, streamer_unit
from octobrixd.render.units import device_allow
from octobrixd.system import systemd
from octobrixd.system.paths import Layout

log = logging.getLogger("octobrixd")

# While a restart waits for a print to end, look again this often.
DEFERRED_RETRY_SECONDS = 60.0

T = TypeVar("T")


class Notifier:
    """sd_notify over the socket systemd names in NOTIFY_SOCKET; silent when there is none."""

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) if address else None

    def send(self, **fields: str) -> None:
        if self.sock is None:
            return
        # ASCII only: the sdnotify package silently drops what latin-1 cannot encode; we replace it.
        message = "\n".join(f"{key}={value}" for key, value in fields.items())
        message = message.translate({0x2014: "-", 0x2013: "-", 0x2019: "'", 0x2026: "..."})
        try:
            self.sock.sendto(message.encode("ascii", "replace"), self.address)
        except OSError as exc:
            log.warning("cannot notify systemd: %s", exc)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    problem: str | None = None
    deferred: tuple[str, ...] = ()
    # The file changed while it was applied: apply it again (systemd merges the reload that edit
    # asked for into the one still running, so no signal of its own ever comes).
    again: bool = False


def _text_of(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def describe_exception(error: BaseException) -> str:
    """ "PermissionError: [Errno 13] Permission denied: '/x'" on one line, for STATUS= and logs."""
    return f"{type(error).__name__}: {error}".splitlines()[0]


class JobFailed(Exception):
    """The work of a background job raised; its traceback is already in the journal."""

    def __init__(self, job: str, error: BaseException) -> None:
        super().__init__(f"{job} failed: {describe_exception(error)}")
        self.error = error


class BackgroundJob(Generic[T]):
    """Runs one function on a worker thread and wakes the main loop when it is done. Requests that
    arrive while it runs coalesce into one more run, so a burst of edits costs two runs, not ten.

    Whatever the work raises is logged with its traceback and handed to the main loop by collect():
    a thread that died silently would never wake the loop (no READY=1, while the watchdog is fed)."""

    def __init__(self, name: str, work: Callable[[], T]) -> None:
        self.name = name
        self.work = work
        self.wake_reader, self.wake_writer = socket.socketpair()
        self.thread: threading.Thread | None = None
        self.pending = False
        self.result: T | None = None
        self.error: BaseException | None = None

    def request(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            self.pending = True
            return
        self.pending = False
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.result, self.error = None, None
        try:
            self.result = self.work()
        except BaseException as error:  # nothing may end the thread unseen
            log.error("%s failed: %s", self.name, describe_exception(error), exc_info=error)
            self.error = error
        finally:
            self.wake_writer.send(b"d")

    def collect(self) -> T:
        """The work's result; JobFailed if it raised (after asking for the run that was pending)."""
        self.wake_reader.recv(16)
        if self.thread is not None:
            self.thread.join()
        result, error = self.result, self.error
        if self.pending:
            self.request()
        if error is not None:
            raise JobFailed(self.name, error)
        if result is None:
            raise JobFailed(self.name, RuntimeError("finished without a result"))
        return result


class Daemon:
    def __init__(self, config_path: Path, layout: Layout, notifier: Notifier) -> None:
        self.config_path = config_path
        self.layout = layout
        self.notifier = notifier
        self.config: Config | None = None
        self.problem: str | None = None
        self.api_calls = ThreadPoolExecutor(max_workers=4, thread_name_prefix="octoprint-api")
        # One worker: streamers start and stop in the order their cameras came and went.
        self.streamer_calls = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamer")
        # Set by the main loop: wakes it to refresh STATUS= from another thread.
        self.refresh_status: Callable[[], None] = lambda: None
        # Looked up at each call: the main loop sets refresh_status after this.
        self.connections = Connections(layout, done=lambda: self.refresh_status())  # noqa: PLW0108
        # The last error of each kind of call to a worker pool ("connecting printer bench"), shown in
        # STATUS= until that call next succeeds.
        self.call_errors: dict[str, str] = {}
        self.recovery = Recovery(layout, query=query_units, busy=printing_now(layout)) if layout.live else None
        self.health = camera_health.Watch(layout)

    def submit(self, pool: ThreadPoolExecutor, what: str, fn: Callable[..., None], *args: Any) -> None:
        """Run fn on pool; whatever it raises is logged with its traceback and shown in STATUS=."""
        try:
            future = pool.submit(fn, *args)
        except RuntimeError:
            log.info("stopping: not %s", what)  # the pool is shut down
            return
        future.add_done_callback(lambda done: self._called(what, done))

    def _called(self, what: str, future: Future[None]) -> None:
        if future.cancelled():
            return  # stopping
        error = future.exception()
        if error is None:
            if self.call_errors.pop(what, None) is not None:
                self.refresh_status()
            return
        log.error("%s failed: %s", what, describe_exception(error), exc_info=error)
        self.call_errors[what] = f"{what} failed: {describe_exception(error)}"
        self.refresh_status()

    # --- config ---

    def reconcile(self) -> Outcome:
        try:
            with apply_lock(self.layout):
                # Read under the lock: whoever held it (`octobrixctl upgrade`, which edits the pin and
                # may put it back) can have changed the file since the change that woke us.
                read = _text_of(self.config_path)
                try:
                    config = load_config(self.config_path)
                except ConfigError as error:
                    for problem in error.problems:
                        log.error("%s", problem)
                    kept = "keeping the last good config" if self.config else "nothing applied"
                    return Outcome(False, f"config error, {kept}: {error.problems[0]}")
                previous = read_manifest(self.layout)
                plan = make_plan(config, self.layout, previous)
                deferred: tuple[str, ...] = ()
                if not plan.empty:
                    deferred = apply_plan(plan, self.layout, previous).deferred
                    log.info("applied %s: %d files changed", self.config_path, len(plan.files))
                    for unit in plan.restart:
                        if unit not in deferred:
                            log.info("restarted %s", unit)
        except OctobrixError as error:
            log.error("apply failed: %s", error)
            return Outcome(False, f"apply failed: {error}")
        self.config = config
        # status lists the farm from this copy while a later edit of the config has mistakes.
        remember_applied(self.layout, config)
        if _text_of(self.config_path) != read:
            log.info("%s changed while it was applied: applying it again", self.config_path)
            return Outcome(True, None, deferred, again=True)
        return Outcome(True, None, deferred)

    def recover(self) -> Pass:
        """Log each newly failed instance with its cause, start again those whose delay is over."""
        config = self.config
        if config is None or self.recovery is None:
            return Pass((), (), None)
        try:
            return self.recovery.look({octoprint_unit(name): name for name in config.printers})
        except OctobrixError as error:
            log.error("cannot look after the failed instances: %s", error)
            return Pass((), (), None)

    # --- status line ---

    def summary(self) -> str:
        """ "4 printers: 3 operational, 1 unplugged; 2 cameras: 2 streaming" for STATUS=."""
        config = self.config
        problems = [p for p in (self.problem, *list(self.call_errors.values())) if p]
        if config is None:
            return "; ".join(problems) or "no valid config yet"
        text = farm_summary(config, self.layout) + camera_health.summary_suffix(self.health)
        return "; ".join([text, *problems])

    # --- hotplug ---

    def suggest(self, device: Any) -> str | None:
        found = read_device(device)
        if found is None:
            return None
        return one_line_entry(found, self.config)

    def count_plug(self, event: DeviceEvent) -> None:
        config = self.config
        if config is None or event.action not in (Action.ADD, Action.REMOVE) or event.name is None:
            return
        if event.name in config.printers or event.name in config.cameras:
            plug_counts.count(self.layout, event.name, plugged=event.action is Action.ADD)

    def on_device(self, event: DeviceEvent) -> None:
        config = self.config
        if config is None or event.action not in (Action.ADD, Action.REMOVE):
            return
        if event.kind is DeviceKind.PRINTER and event.name in config.printers:
            if event.action is Action.ADD:
                log.info("printer %s plugged in (%s)", event.name, event.devnode)
                what = f"connecting printer {event.name}"
                self.submit(self.api_calls, what, self.plugged_printer, config, event.name)
            else:
                log.info("printer %s unplugged", event.name)
        elif event.kind is DeviceKind.CAMERA and event.name in config.cameras:
            unit = streamer_unit(config, event.name)
            plugged = event.action is Action.ADD
            log.info("camera %s %s (%s)", event.name, "plugged in" if plugged else "unplugged", event.devnode)
            if self.layout.live:
                self.submit(self.streamer_calls, f"switching {unit}", self.switch_streamer, unit, plugged)
        elif event.action is Action.ADD and event.suggestion:
            log.info(
                "unknown %s plugged in at %s; to use it add to %s: %s",
                kind_of_subsystem(event.subsystem),
                event.devnode,
                self.config_path,
                event.suggestion,
            )

    def plugged_printer(self, config: Config, name: str) -> None:
        """A printer's device came: its running OctoPrint is let open it (its unit allows only its own
        /dev/octobrix link, resolved when the unit started), then asked to connect to it."""
        refused: OctobrixError | None = None
        if self.layout.live:
            unit = octoprint_unit(name)
            try:
                if systemd.allow_device_again(unit, device_allow(name)):
                    log.info("%s may open %s again", unit, device_link(name))
            except OctobrixError as error:
                refused = error  # connecting still works if the device came back as the same node
        self.connections.connect(config, name)
        if refused is not None:
            raise refused  # in STATUS= until a plug goes through

    def switch_streamer(self, unit: str, plugged: bool) -> None:
        """Start or stop a camera's streamer, wait for systemd's job, then refresh STATUS= (read while
        the job still ran, it said "0 streaming" for a re-plugged camera until the next event)."""
        try:
            (systemd.start if plugged else systemd.stop)([unit], wait=True)
        except OctobrixError as error:
            log.error("%s: %s", unit, error)
        self.refresh_status()


def watchdog_interval() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or os.environ.get("WATCHDOG_PID", str(os.getpid())) != str(os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2


def _open_monitor(daemon: Daemon) -> HotplugMonitor | None:
    try:
        return HotplugMonitor(suggest=daemon.suggest)
    except (OSError, ImportError) as error:
        log.warning("cannot follow USB hotplug (%s): devices are handled at start and reload only", error)
        return None


class MainLoop:
    """One thread that only waits and dispatches; slow work runs in BackgroundJobs."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.signal_reader, signal_writer = socket.socketpair()
        self.signal_reader.setblocking(False)
        signal_writer.setblocking(False)
        self._signal_writer = signal_writer
        signal.set_wakeup_fd(signal_writer.fileno())
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            # The handler does nothing: the wakeup fd carries the signal number to the loop.
            signal.signal(signum, lambda *_: None)
        self.reconciler: BackgroundJob[Outcome] = BackgroundJob("reconcile", daemon.reconcile)
        self.status: BackgroundJob[str] = BackgroundJob("status", daemon.summary)
        self.recoverer: BackgroundJob[Pass] = BackgroundJob("recovery", daemon.recover)
        self.monitor = _open_monitor(daemon)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.signal_reader, selectors.EVENT_READ, self._on_signal)
        self.selector.register(self.reconciler.wake_reader, selectors.EVENT_READ, self._on_reconciled)
        self.selector.register(self.status.wake_reader, selectors.EVENT_READ, self._on_status)
        self.selector.register(self.recoverer.wake_reader, selectors.EVENT_READ, self._on_recovered)
        self.refresh_reader, refresh_writer = socket.socketpair()
        self.selector.register(self.refresh_reader, selectors.EVENT_READ, self._on_refresh)
        self._refresh_writer = refresh_writer
        daemon.refresh_status = self._wake_for_status
        if self.monitor is not None:
            self.selector.register(self.monitor, selectors.EVENT_READ, self._on_devices)
        self.adding: AddService | None = None
        self.add_offered = False
        self.finder: BackgroundJob[int] | None = None
        self.apply_reader, self._apply_writer = socket.socketpair()
        self.selector.register(self.apply_reader, selectors.EVENT_READ, self._on_apply_asked)
        if self.monitor is not None:
            # The found list needs udev, as hotplug does.
            busy = printing_now(daemon.layout) if daemon.layout.live else (lambda _name: False)
            adding = AddService(daemon.config_path, daemon.layout, busy, self._ask_apply)
            self.adding = adding
            self.finder = BackgroundJob("found", lambda: adding.rescan(daemon.config))
            self.selector.register(self.finder.wake_reader, selectors.EVENT_READ, self._on_found)
        self.started = False
        self.stopping = False
        self.watchdog = watchdog_interval()
        self.next_ping = time.monotonic()
        self.retry_at: float | None = None
        self.recover_at: float | None = None
        # Camera health: a timer only while cameras are configured (cameras/health.py).
        self.health_job: BackgroundJob[bool] = BackgroundJob("camera-health", self._check_cameras)
        self.selector.register(self.health_job.wake_reader, selectors.EVENT_READ, self._on_cameras_checked)
        self.health_every = camera_health.check_interval() if daemon.layout.live else 0.0
        self.health_at: float | None = None

    def run(self) -> int:
        self.daemon.notifier.send(STATUS="applying the config")
        self.reconciler.request()
        while not self.stopping:
            self._timers()
            timers = (self.next_ping if self.watchdog else None, self.retry_at, self.recover_at, self.health_at)
            deadlines = [t for t in timers if t is not None]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            for key, _events in self.selector.select(timeout):
                key.data()
        return 0

    def _timers(self) -> None:
        now = time.monotonic()
        if self.watchdog is not None and now >= self.next_ping:
            self.daemon.notifier.send(WATCHDOG="1")
            self.next_ping = now + self.watchdog
        if self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None
            self.reconciler.request()
        if self.recover_at is not None and now >= self.recover_at:
            self.recover_at = None
            self.recoverer.request()
        if self.health_at is not None and now >= self.health_at:
            self.health_at = None
            self.health_job.request()

    def _on_reconciled(self) -> None:
        try:
            outcome = self.reconciler.collect()
        except JobFailed as failed:
            # Not the user's doing (those are OctobrixErrors): said in STATUS=, and the daemon goes on
            # with what it has; the next reload or edit tries again.
            outcome = Outcome(False, f"{failed} (see journalctl -u octobrixd)")
        self.daemon.problem = outcome.problem
        if outcome.again:
            self.reconciler.request()
        if outcome.deferred:
            self.retry_at = time.monotonic() + DEFERRED_RETRY_SECONDS
        # After the first apply, and after each reload (systemd waits for it after RELOADING=1).
        self.daemon.notifier.send(READY="1")
        if not self.started:
            self.started = True
            # Devices plugged in before we started are handled like new ones.
            if self.monitor is not None:
                for event in self.monitor.present():
                    self.daemon.on_device(event)
        if not self.add_offered:
            # After an apply: it made the web service's user the socket's group is.
            self._offer_add_interface()
        if self.finder is not None:
            # Bindings change with the config: a device just added is no longer "found".
            self.finder.request()
        # An instance may have failed while no daemon ran, or before this config.
        self.recoverer.request()
        self.status.request()
        self._arm_camera_check()

    def _arm_camera_check(self) -> None:
        config = self.daemon.config
        if config is not None and config.cameras and self.health_every > 0 and self.health_at is None:
            self.health_at = time.monotonic() + self.health_every

    def _check_cameras(self) -> bool:
        config = self.daemon.config
        return self.daemon.health.check(config) if config is not None else False

    def _on_cameras_checked(self) -> None:
        what = "camera health check"
        try:
            changed = self.health_job.collect()
            changed |= self.daemon.call_errors.pop(what, None) is not None
        except JobFailed as failed:
            # Logged with its traceback; shown in STATUS= until a look succeeds, and the looks go on.
            self.daemon.call_errors[what] = f"{failed} (see journalctl -u octobrixd)"
            changed = True
        if changed:
            self.status.request()
        self._arm_camera_check()

    def _on_recovered(self) -> None:
        try:
            done = self.recoverer.collect()
        except JobFailed:
            done = Pass((), (), None)  # logged with its traceback; the next failure or reload looks again
        self.recover_at = done.next_check
        if done.failed or done.started:
            self.status.request()

    def _on_status(self) -> None:
        try:
            line = self.status.collect()
        except JobFailed as failed:
            line = "; ".join(p for p in (self.daemon.problem, f"{failed} (see journalctl -u octobrixd)") if p)
        self.daemon.notifier.send(STATUS=line)
        log.info("status: %s", line)

    def _wake_for_status(self) -> None:
        # Called from worker threads: only a byte crosses over, the main loop does the rest.
        self._refresh_writer.send(b"r")

    def _on_refresh(self) -> None:
        self.refresh_reader.recv(64)
        self.status.request()

    def _on_devices(self) -> None:
        if self.monitor is not None:
            for event in self.monitor.drain():
                # Counted here, not in on_device: the devices found present at start were not plugged just now.
                self.daemon.count_plug(event)
                self.daemon.on_device(event)
        self.status.request()
        if self.finder is not None:
            self.finder.request()

    # --- the add interface (octobrixd/adding) ---

    def _offer_add_interface(self) -> None:
        opened = self.adding.open_listener() if self.adding is not None else None
        if opened is None:
            return
        listener, allowed_uid = opened
        self.add_offered = True
        self.selector.register(listener, selectors.EVENT_READ, lambda: self._on_add_request(listener, allowed_uid))

    def _on_add_request(self, listener: socket.socket, allowed_uid: int) -> None:
        conn, _ = listener.accept()
        if self.adding is not None:
            self.adding.serve(conn, allowed_uid)

    def _on_found(self) -> None:
        if self.finder is None:
            return
        try:
            count = self.finder.collect()
        except JobFailed:
            return  # logged with its traceback; the next plug or apply looks again
        if count:
            log.info("found %d device(s) that no entry binds", count)

    def _ask_apply(self) -> None:
        # From the add interface's thread: only a byte crosses over.
        self._apply_writer.send(b"a")

    def _on_apply_asked(self) -> None:
        self.apply_reader.recv(64)
        self.reconciler.request()

    def _on_signal(self) -> None:
        for received in self.signal_reader.recv(64):
            if received in (signal.SIGTERM, signal.SIGINT):
                self.daemon.notifier.send(STOPPING="1")
                log.info("stopping")
                self.daemon.api_calls.shutdown(wait=False, cancel_futures=True)
                self.daemon.streamer_calls.shutdown(wait=False, cancel_futures=True)
                self.stopping = True
            elif received == signal.SIGUSR1:
                # From octobrix-failed@NAME.service, the instances' OnFailure= hook.
                log.info("an instance failed: looking at the instances")
                self.recoverer.request()
            elif received == signal.SIGHUP:
                log.info("reloading %s", self.daemon.config_path)
                self.daemon.notifier.send(RELOADING="1", MONOTONIC_USEC=str(time.monotonic_ns() // 1000))
                self.reconciler.request()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="octobrixd", description="keeps the system in step with the octobrix config")
    add_config_argument(parser)
    add_root_argument(parser)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    # An instance's failure hook may signal us before the main loop listens: not a reason to die
    # (SIGUSR1 would end the process); the first look at the instances sees that failure anyway.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    # The journal adds time and unit; one event per line, names included.
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s %(message)s")
    notifier = Notifier()
    try:
        return MainLoop(Daemon(args.config, Layout(args.root), notifier)).run()
    except Exception as error:
        # A bug in the main loop itself: say so and exit non-zero, so systemd (Restart=on-failure)
        # starts a fresh daemon; the instances run on meanwhile (KillMode=process).
        log.critical("octobrixd stops on an unexpected error: %s", describe_exception(error), exc_info=error)
        notifier.send(STATUS=f"stopped on an unexpected error: {describe_exception(error)}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
