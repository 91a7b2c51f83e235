"""Attach a MarlinSim to a transport: a unix socket (QEMU usb-serial chardev) or a pty (the container).

A SimLink owns one connection and a thread that pumps bytes both ways and ticks the simulator's
clock. Closing the link is pulling the cable. Writes never block: a real UART drops bytes nobody
reads, and a blocked writer here would hang the test (QEMU stops reading a usb-serial chardev
while the guest has the port closed).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import struct
import termios
import threading
import time
import tty
from pathlib import Path
from typing import Self

from tests.lab.harness import waiting
from tests.lab.harness.printer_sim import MarlinSim

log = logging.getLogger(__name__)

TICK = 0.1
OUTBOX_LIMIT = 64 * 1024


class SimLink:
    """Pumps one transport file descriptor <-> a MarlinSim in a daemon thread until close()."""

    def __init__(
        self, sim: MarlinSim, fd: int, *, name: str, owned: list[int] | None = None, packet_mode: bool = False
    ) -> None:
        self.sim = sim
        self.fd = fd
        self.name = name
        self.packet_mode = packet_mode
        self._owned = owned if owned is not None else [fd]
        self._outbox = bytearray()
        self._wake_r, self._wake_w = os.pipe()
        self._stop = threading.Event()
        self.closed_by_peer = threading.Event()
        # Rounds of the pump: a test waits for the link to have looked again, not for some seconds.
        self.rounds = 0
        os.set_blocking(fd, False)
        self._thread = threading.Thread(target=self._pump, name=f"simlink-{name}", daemon=True)
        if not packet_mode:
            self._outbox += sim.connected()
        self._thread.start()

    @property
    def connected(self) -> bool:
        return self._thread.is_alive() and not self.closed_by_peer.is_set()

    def close(self) -> None:
        """Drop the connection (for usb-serial: the cable is pulled). Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        for fd in (*self._owned, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pump(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            writers = [self.fd] if self._outbox else []
            timeout = max(0.0, next_tick - time.monotonic())
            try:
                readable, writable, _ = select.select([self.fd, self._wake_r], writers, [], timeout)
            except (OSError, ValueError):
                break
            if self.fd in readable and not self._read():
                break
            if self.fd in writable:
                self._write()
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + TICK
                self._queue(self.sim.tick())
            self.rounds += 1
        if not self._stop.is_set():
            self.closed_by_peer.set()
            log.info("simulator link %s closed by the other side", self.name)

    def _read(self) -> bool:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return True
        except OSError as exc:
            # EIO on a pty master: no process has the slave open right now. Not the end of the link.
            if exc.errno == errno.EIO:
                time.sleep(TICK)
                return True
            return False
        if not data:
            return False
        if self.packet_mode:
            control, data = data[0], data[1:]
            if control & termios.TIOCPKT_FLUSHREAD:
                # The client flushed its input, as pyserial does on open(): treat it like the
                # reset a real board does when its port is opened, and greet it with the banner.
                self._queue(self.sim.connected())
            if not data:
                return True
        self._queue(self.sim.feed(data))
        return True

    def _queue(self, data: bytes) -> None:
        if not data:
            return
        self._outbox += data
        if len(self._outbox) > OUTBOX_LIMIT:
            del self._outbox[: len(self._outbox) - OUTBOX_LIMIT]
        self._write()

    def _write(self) -> None:
        try:
            sent = os.write(self.fd, self._outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("simulator link %s: write failed: %s", self.name, exc)
            return
        del self._outbox[:sent]


def connect_unix(sim: MarlinSim, path: Path, timeout: float = 10.0) -> SimLink:
    """Connect to a listening unix socket (QEMU's chardev server side); connecting is plugging in."""
    sock = waiting.connect_unix(path, timeout)
    fd = sock.detach()
    return SimLink(sim, fd, name=path.name)


class PtyLink(SimLink):
    """A simulator behind a pseudo-terminal: slave_path is the printer's serial port for a client.

    The banner ("start") is sent each time a client opens the port with pyserial (which flushes
    the input on open), like a board that resets when its port is opened.
    """

    slave_path: str

    def __init__(self, sim: MarlinSim, *, name: str = "pty") -> None:
        master, slave = os.openpty()
        # Raw mode so the line discipline neither echoes replies back nor mangles CR/LF.
        tty.setraw(slave)
        self.slave_path = os.ttyname(slave)
        # Packet mode tells us when the client flushes its input (what opening a port does).
        fcntl.ioctl(master, termios.TIOCPKT, struct.pack("i", 1))
        # Holding the slave open ourselves keeps the master readable while no client has it open.
        super().__init__(sim, master, name=name, owned=[master, slave], packet_mode=True)


def open_pty(sim: MarlinSim, name: str = "pty") -> PtyLink:
    return PtyLink(sim, name=name)
