"""octobrixd: applies the config at start and on reload, and tells systemd how it is doing.

The main loop sleeps in select() until a signal arrives or the watchdog is due: no polling.
A config that does not validate changes nothing; the last good one stays in force and the
problem is shown in STATUS= (and so in `systemctl status octobrixd`).
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from octobrixd.apply import apply_lock, apply_plan, make_plan, read_manifest
from octobrixd.config import Config, load_config
from octobrixd.errors import ConfigError, OctobrixError
from octobrixd.paths import DEFAULT_CONFIG, Layout

log = logging.getLogger("octobrixd")


class Notifier:
    """sd_notify over the socket systemd names in NOTIFY_SOCKET; silent when there is none."""

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) if address else None

    def send(self, **fields: str) -> None:
        if self.sock is None:
            return
        # ASCII only: a status line systemd cannot show is worse than a plain one.
        message = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            self.sock.sendto(message.encode("ascii", "replace"), self.address)
        except OSError as exc:
            log.warning("cannot notify systemd: %s", exc)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: str


def summarize(config: Config) -> str:
    printers = len(config.printers)
    cameras = len(config.cameras)
    return f"{printers} printer{'s' if printers != 1 else ''}, {cameras} camera{'s' if cameras != 1 else ''}"


class Daemon:
    def __init__(self, config_path: Path, layout: Layout, notifier: Notifier) -> None:
        self.config_path = config_path
        self.layout = layout
        self.notifier = notifier
        self.config: Config | None = None

    def reconcile(self) -> Outcome:
        try:
            config = load_config(self.config_path)
        except ConfigError as error:
            for problem in error.problems:
                log.error("%s", problem)
            kept = "keeping the last good config" if self.config else "nothing applied yet"
            first = error.problems[0].replace("\u2014", "-")
            return Outcome(False, f"config error, {kept}: {first}")
        try:
            with apply_lock(self.layout):
                previous = read_manifest(self.layout)
                plan = make_plan(config, self.layout, previous)
                if not plan.empty:
                    apply_plan(plan, self.layout, previous)
                    log.info("applied %s: %d files changed", self.config_path, len(plan.files))
        except OctobrixError as error:
            log.error("apply failed: %s", error)
            return Outcome(False, f"apply failed: {error}")
        self.config = config
        return Outcome(True, summarize(config))


def watchdog_interval() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or os.environ.get("WATCHDOG_PID", str(os.getpid())) != str(os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2


class Reconciler:
    """Runs Daemon.reconcile on a worker thread, so the main loop keeps the watchdog fed while a
    first start builds venvs for minutes. Edits that arrive meanwhile coalesce into one more run."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.done_reader, self.done_writer = socket.socketpair()
        self.thread: threading.Thread | None = None
        self.pending = False
        self.outcome: Outcome | None = None

    def request(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            self.pending = True
            return
        self.pending = False
        self.thread = threading.Thread(target=self._work, name="reconcile", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        self.outcome = self.daemon.reconcile()
        self.done_writer.send(b"d")

    def collect(self) -> Outcome:
        self.done_reader.recv(16)
        if self.thread is not None:
            self.thread.join()
        assert self.outcome is not None  # noqa: S101 - set before the wake-up byte is sent
        return self.outcome


def serve(daemon: Daemon) -> int:
    signal_reader, signal_writer = socket.socketpair()
    signal_reader.setblocking(False)
    signal_writer.setblocking(False)
    signal.set_wakeup_fd(signal_writer.fileno())
    for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        # The handler does nothing: the wakeup fd carries the signal number to the loop.
        signal.signal(signum, lambda *_: None)

    reconciler = Reconciler(daemon)
    selector = selectors.DefaultSelector()
    selector.register(signal_reader, selectors.EVENT_READ, "signal")
    selector.register(reconciler.done_reader, selectors.EVENT_READ, "reconciled")
    daemon.notifier.send(STATUS="applying the config")
    reconciler.request()
    ready = False

    interval = watchdog_interval()
    next_ping = time.monotonic()
    while True:
        if interval is not None and time.monotonic() >= next_ping:
            daemon.notifier.send(WATCHDOG="1")
            next_ping = time.monotonic() + interval
        timeout = None if interval is None else max(0.0, next_ping - time.monotonic())
        for key, _events in selector.select(timeout):
            if key.data == "reconciled":
                outcome = reconciler.collect()
                log.info("%s: %s", "reloaded" if ready else "started", outcome.status)
                daemon.notifier.send(READY="1", STATUS=outcome.status)
                ready = True
                if reconciler.pending:
                    reconciler.request()
                continue
            for received in signal_reader.recv(64):
                if received in (signal.SIGTERM, signal.SIGINT):
                    daemon.notifier.send(STOPPING="1")
                    log.info("stopping")
                    return 0
                if received == signal.SIGHUP:
                    daemon.notifier.send(RELOADING="1", MONOTONIC_USEC=str(time.monotonic_ns() // 1000))
                    reconciler.request()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="octobrixd", description="keeps the system in step with the octobrix config")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, metavar="FILE")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        metavar="DIR",
        help="act on the tree under DIR (no systemctl, no udevadm)",
    )
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    # The journal adds time and unit; one event per line, names included.
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s %(message)s")
    return serve(Daemon(args.config, Layout(args.root), Notifier()))


if __name__ == "__main__":
    sys.exit(main())
