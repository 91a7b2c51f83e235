"""is_busy: when octobrix may restart an instance. A real HTTP server on loopback plays OctoPrint."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import ClassVar

import pytest

from octobrixd.instances import api as octoprint_api
from tests.httpstub import QuietHandler, serving


class FakeOctoPrint(QuietHandler):
    status = 200
    flags: ClassVar[dict[str, bool]] = {}

    def do_GET(self) -> None:
        self.reply(self.status, json.dumps({"state": {"text": "x", "flags": self.flags}}).encode())


@pytest.fixture
def server() -> Iterator[int]:
    with serving(FakeOctoPrint) as port:
        yield port


@pytest.mark.parametrize(
    ("status", "flags", "busy"),
    [
        (200, {"printing": True, "operational": True}, True),
        (200, {"paused": True}, True),
        (200, {"cancelling": True}, True),
        (200, {"operational": True, "ready": True}, False),
        (409, {}, False),  # not connected to a printer
        (500, {}, True),  # an error says nothing about the printer
    ],
)
def test_busy_follows_octoprints_answer(
    server: int, monkeypatch: pytest.MonkeyPatch, status: int, flags: dict[str, bool], busy: bool
) -> None:
    monkeypatch.setattr(FakeOctoPrint, "status", status)
    monkeypatch.setattr(FakeOctoPrint, "flags", flags)
    assert octoprint_api.is_busy(server, "key") is busy


def test_an_instance_that_is_down_is_not_busy() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens there now: refused, as for a stopped OctoPrint.
    assert octoprint_api.is_busy(port, "key") is False


def test_an_instance_too_busy_to_answer_may_be_printing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(octoprint_api, "BUSY_TIMEOUT", 0.3)
    with socket.socket() as silent:
        # Listening, so the connection is taken, but nobody ever answers: a frozen or swamped OctoPrint.
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        assert octoprint_api.is_busy(silent.getsockname()[1], "key") is True
