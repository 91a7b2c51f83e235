"""HTTP to octobrix's own servers on this computer (OctoPrints, streamers) over a bare socket.

octobrix only ever talks HTTP to programs it runs itself, on loopback. urllib was a third of
`octobrixctl status`'s start-up (http.client pulls in email and ssl) and several times the CPU of a
bare socket per request, which counts when status asks sixteen OctoPrints at once.
The request is HTTP/1.0, so a conforming server answers with its whole body and closes: no
keep-alive and no chunks to follow. A server that chunks anyway is still understood.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from time import monotonic

LIMIT = 16 << 20
# The clock of an exchange's deadline, bound here: it measures socket time, which code that fakes
# time.monotonic to step through its own schedule (tests of octobrixd's patience) must not cut short.
_socket_clock = monotonic
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})(?: |\r|$)")


class MalformedResponse(Exception):
    """Something answered that is not HTTP: closed the connection at once, or sent no status line
    (OctoPrint's placeholder server while the real one starts does either)."""


@dataclass(frozen=True)
class Response:
    status: int
    head: bytes  # the status line and the headers, without the blank line
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def header_values(self, name: str) -> list[str]:
        """Every value of header name (Set-Cookie comes once per cookie), in order."""
        wanted = name.lower().encode()
        values = []
        for line in self.head.split(b"\r\n")[1:]:
            key, sep, value = line.partition(b":")
            if sep and key.strip().lower() == wanted:
                values.append(value.strip().decode("latin-1"))
        return values


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip()
    return None


def _unchunk(body: bytes) -> bytes:
    parts = []
    rest = body
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0], 16)
        except ValueError:
            raise MalformedResponse("a chunk without a size") from None
        if not sep or size == 0:
            break
        parts.append(rest[:size])
        rest = rest[size + 2 :]
    return b"".join(parts)


def parse(data: bytes) -> Response:
    """One whole answer as read from the socket."""
    head, sep, body = data.partition(b"\r\n\r\n")
    status = _STATUS_LINE.match(head)
    if not sep or status is None:
        raise MalformedResponse("no HTTP answer" if not data else "not an HTTP answer")
    if (_header(head, b"transfer-encoding") or b"").lower() == b"chunked":
        body = _unchunk(body)
    else:
        length = _header(head, b"content-length")
        if length is not None and length.isdigit():
            body = body[: int(length)]
    return Response(int(status.group(1)), head, body)


def exchange(
    port: int,
    path: str,
    *,
    host: str = "127.0.0.1",
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 5.0,
    limit: int = LIMIT,
) -> Response:
    """One request and its answer. Raises OSError when nothing answers (TimeoutError: the connection
    was taken or tried, but no answer came within timeout), MalformedResponse for a non-HTTP answer.
    A body longer than limit is cut there."""
    lines = [f"{method} {path} HTTP/1.0", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{key}: {value}" for key, value in (headers or {}).items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
    deadline = _socket_clock() + timeout
    chunks = []
    size = 0
    with socket.create_connection((host.strip("[]"), port), timeout=timeout) as conn:
        conn.sendall(request)
        while size < limit:
            # A server that trickles bytes would reset a per-read timeout forever: one deadline.
            left = deadline - _socket_clock()
            if left <= 0:
                raise TimeoutError("timed out")
            conn.settimeout(left)
            data = conn.recv(65536)
            if not data:
                break
            chunks.append(data)
            size += len(data)
    return parse(b"".join(chunks))
