"""Waiting for something in a guest, with a message that says what never happened."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def wait_until(what: str, check: Callable[[], Any], timeout: float = 600.0, every: float = 2.0) -> Any:
    """check()'s first truthy result; AssertionError naming `what` (and the last result) on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def connect_unix(path: Path, timeout: float) -> socket.socket:
    """A stream socket connected to a unix socket that a just-started QEMU may not have made yet."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
