"""A SIGTERM or SIGHUP to a pytest-xdist run (a CI timeout, a closed terminal) reaches its workers.

The controller (the process tests/run starts) would otherwise die and leave its workers running
their tests, a lab worker its container or VM. It passes the signal on instead: each worker turns
it into KeyboardInterrupt (tests/lab/conftest.py), so the lab's finalizers run; then the workers
report the interruption and the run ends. tests/conftest.py registers it; `-p tests.xdist_signals`
loads it in another run.
"""

from __future__ import annotations

import contextlib
import signal
from types import FrameType

import psutil
import pytest


def _forward_to_workers(signum: int, _frame: FrameType | None) -> None:
    for worker in psutil.Process().children():
        with contextlib.suppress(psutil.NoSuchProcess):
            worker.send_signal(signum)


def register(config: pytest.Config) -> None:
    """On the controller of an xdist run, for signals nobody else handles."""
    if not getattr(config.option, "numprocesses", None) or hasattr(config, "workerinput"):
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _forward_to_workers)


def pytest_configure(config: pytest.Config) -> None:
    register(config)
