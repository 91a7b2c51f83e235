"""loopback_http: the bare-socket HTTP client octobrix asks its OctoPrints and streamers with, against
real servers on loopback (Python's http.server, and raw sockets for what servers do wrong)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from octobrixd.instances import api as octoprint_api
from octobrixd.system import loopback_http
from tests.httpstub import QuietHandler, serving


class Echo(QuietHandler):
    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "key": self.headers.get("X-Api-Key"), "host": self.headers["Host"]})
        self.reply(200, body.encode())

    def do_POST(self) -> None:
        sent = self.rfile.read(int(self.headers["Content-Length"]))
        if json.loads(sent).get("refuse"):
            self.reply(409, b'{"error": "exists"}')
        else:
            self.reply(200, sent)


def test_get_and_post_reach_the_server_with_their_headers_and_body() -> None:
    with serving(Echo) as port:
        got = octoprint_api.request(port, "secret", "/api/job?x=1")
        assert got == {"path": "/api/job?x=1", "key": "secret", "host": f"127.0.0.1:{port}"}
        assert octoprint_api.request(port, "secret", "/api/users", {"name": "ada"}) == {"name": "ada"}
        with pytest.raises(octoprint_api.ApiError) as refused:
            octoprint_api.request(port, "secret", "/api/users", {"refuse": True})
    assert refused.value.conflict and str(refused.value) == "HTTP 409 from /api/users"


@contextmanager
def raw_server(answer: Callable[[socket.socket], None]) -> Iterator[int]:
    """A loopback server that reads the request and then does answer(connection), once."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            answer(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(timeout=5)


def test_a_chunked_answer_is_joined() -> None:
    def chunked(conn: socket.socket) -> None:
        conn.sendall(
            b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"a"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\n\r\n'
        )

    with raw_server(chunked) as port:
        assert octoprint_api.request(port, "k", "/api/job") == {"a": 1}


def test_a_body_is_cut_at_its_content_length() -> None:
    def extra(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}garbage")

    with raw_server(extra) as port:
        assert octoprint_api.request(port, "k", "/api/job") == {}


@pytest.mark.parametrize("reply", [b"", b"hello\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"])
def test_an_answer_that_is_not_http_means_starting(reply: bytes) -> None:
    with raw_server(lambda conn: conn.sendall(reply)) as port, pytest.raises(octoprint_api.ApiError) as error:
        octoprint_api.request(port, "k", "/api/job")
    assert error.value.failure is octoprint_api.Failure.STARTING


def test_a_server_that_trickles_is_given_up_on_at_the_timeout() -> None:
    stop = threading.Event()

    def trickle(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.0 200 OK\r\n")
        while not stop.wait(0.05):
            try:
                conn.sendall(b"X-Slow: 1\r\n")
            except OSError:
                return

    with raw_server(trickle) as port:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            loopback_http.exchange(port, "/", timeout=0.5)
        took = time.monotonic() - started
        stop.set()
    assert took < 2.0


def test_nothing_listening_is_not_answering_and_not_timed_out() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(octoprint_api.ApiError) as error:
        octoprint_api.request(port, "k", "/api/job")
    assert error.value.failure is octoprint_api.Failure.NOT_ANSWERING and not error.value.timed_out
