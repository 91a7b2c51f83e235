"""Waiting for something in a guest, with a message that says what never happened."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def wait_until(
    what: str,
    check: Callable[[], Any],
    timeout: float = 600.0,
    every: float = 2.0,
    *,
    until: Callable[[Any], object] = bool,
    ignoring: tuple[type[BaseException], ...] = (),
    detail: Callable[[], object] | None = None,
) -> Any:
    """check()'s first result for which until(result) is true (by default: its first truthy
    result), e.g. until=lambda job: job["state"] == "Printing" returns the job. check() runs at
    least once, and once more at the deadline, so a slow round never fails a wait without a look
    after the whole timeout. An exception of a type in `ignoring` counts as "not yet" (e.g. a
    service still starting). On timeout: AssertionError naming `what` and the last result (or
    exception), then detail() if given (a journal, a log's tail), read at that moment."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except ignoring as exc:
            last = exc
        else:
            if until(last):
                return last
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(every, remaining))
    message = f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})"
    raise AssertionError(message if detail is None else f"{message}\n{detail()}")


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
