"""Loopback stand-ins answering /api/job and /api/printer like OctoPrint 1.11 does, for the farm
overview's unit tests and benchmark (the real OctoPrint answers in the lab test)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.httpstub import QuietHandler, serving

KEY = "READONLY0123456789ABCDEF"


def job_body(state: str = "Operational", file: str | None = None, completion: float | None = None,
             time_left: float | None = None, error: str | None = None) -> dict[str, Any]:  # fmt: skip
    body: dict[str, Any] = {
        "job": {"file": {"name": file, "display": file, "origin": "local" if file else None, "path": file}},
        "progress": {"completion": completion, "printTime": 600 if completion else None, "printTimeLeft": time_left},
        "state": state,
    }
    if error is not None:
        body["error"] = error
    return body


def printer_body(tool: tuple[float, float] = (21.3, 0.0), bed: tuple[float, float] = (20.8, 0.0),
                 **flags: bool) -> dict[str, Any]:  # fmt: skip
    return {
        "state": {"text": "Operational", "flags": {"operational": True, "printing": False, "error": False, **flags}},
        "temperature": {
            "tool0": {"actual": tool[0], "target": tool[1], "offset": 0},
            "bed": {"actual": bed[0], "target": bed[1], "offset": 0},
        },
    }


@dataclass
class Behaviour:
    """What one stand-in OctoPrint answers; `printer` None answers /api/printer with 409 (not connected)."""

    job: dict[str, Any] = field(default_factory=job_body)
    printer: dict[str, Any] | None = field(default_factory=printer_body)
    delay: float = 0.0
    key: str = KEY
    hits: int = 0
    busy: int = 0
    most_at_once: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def handler_for(behaviour: Behaviour) -> type[BaseHTTPRequestHandler]:
    class StandIn(QuietHandler):
        def do_GET(self) -> None:
            with behaviour.lock:
                behaviour.hits += 1
                behaviour.busy += 1
                behaviour.most_at_once = max(behaviour.most_at_once, behaviour.busy)
            try:
                if behaviour.delay:
                    time.sleep(behaviour.delay)
                if self.headers.get("X-Api-Key") != behaviour.key:
                    self.reply(403, b'{"error": "You don\'t have the permission to access the requested resource."}')
                elif self.path.startswith("/api/job"):
                    self.reply(200, json.dumps(behaviour.job).encode())
                elif self.path.startswith("/api/printer"):
                    if behaviour.printer is None:
                        self.reply(409, b'{"error": "Printer is not operational"}')
                    else:
                        self.reply(200, json.dumps(behaviour.printer).encode())
                else:
                    self.reply(404, b"{}")
            finally:
                with behaviour.lock:
                    behaviour.busy -= 1

    return StandIn


@contextlib.contextmanager
def octoprints(behaviours: list[Behaviour]) -> Iterator[list[int]]:
    """One stand-in per behaviour, each on its own free loopback port; yields the ports."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(serving(handler_for(b))) for b in behaviours]
