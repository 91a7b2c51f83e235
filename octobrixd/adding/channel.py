"""The add interface between the web service and octobrixd: a unix socket that only the web
service's user may use. The file is root's, group octobrix_web, mode 0660 (so other users cannot
connect at all), and octobrixd checks the peer's uid with SO_PEERCRED on every connection, so a
process of any other user, root included, is refused (root edits the config with `octobrixctl add`).

One connection carries one request (a JSON line) and one answer (a JSON line).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from octobrixd.adding.found import RUN_DIR
from octobrixd.errors import OctobrixError

log = logging.getLogger(__name__)

SOCKET_FILE = RUN_DIR / "add.sock"
SOCKET_MODE = 0o660
MAX_REQUEST_BYTES = 4096
TIMEOUT_SECONDS = 10.0
# An add is checked, written and validated in well under this; apply goes on after the answer.
CLIENT_TIMEOUT_SECONDS = 30.0
_UCRED = struct.Struct("3i")  # pid, uid, gid


def socket_path(root: Path) -> Path:
    return root / PurePosixPath(SOCKET_FILE)


def peer_uid(conn: socket.socket) -> int:
    _pid, uid, _gid = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return int(uid)


def check_peer(conn: socket.socket, allowed_uid: int) -> None:
    uid = peer_uid(conn)
    if uid != allowed_uid:
        raise OctobrixError(
            f"refused: the add interface is the web service's only (uid {allowed_uid}), not uid {uid}'s",
            hint="add devices from the farm overview page, or run `sudo octobrixctl add`",
        )


def listen(path: Path, gid: int) -> socket.socket:
    """Bound with no moment at which another user could connect: the socket is made 0600."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    os.chown(path, -1, gid)
    path.chmod(SOCKET_MODE)
    listener.listen(8)
    return listener


def read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data and len(data) <= MAX_REQUEST_BYTES:
        chunk = conn.recv(MAX_REQUEST_BYTES + 1)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def _send(conn: socket.socket, body: dict[str, Any]) -> None:
    conn.sendall(json.dumps(body).encode() + b"\n")


def serve(conn: socket.socket, allowed_uid: int, handle: Callable[[bytes], dict[str, Any]]) -> None:
    """Answer one connection: the peer is checked before a byte of its request is read."""
    with conn:
        conn.settimeout(TIMEOUT_SECONDS)
        try:
            try:
                check_peer(conn, allowed_uid)
            except OctobrixError as error:
                log.warning("add interface: %s", error)
                _send(conn, {"ok": False, "error": str(error), "hint": error.hint})
                return
            _send(conn, handle(read_line(conn)))
        except OSError as error:
            log.info("add interface: connection lost: %s", error)


def ask(path: Path, request: dict[str, Any], timeout: float = CLIENT_TIMEOUT_SECONDS) -> dict[str, Any]:
    """Send one request to octobrixd and return its answer (the web service's side)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as conn:
            conn.settimeout(timeout)
            conn.connect(str(path))
            conn.sendall(json.dumps(request).encode() + b"\n")
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)
            line = read_line(conn)
    except OSError as error:
        raise OctobrixError(
            f"cannot reach octobrixd's add interface at {path}: {error.strerror or error}",
            hint="is octobrixd running? `systemctl status octobrixd`",
        ) from None
    try:
        body = json.loads(line)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise OctobrixError("octobrixd gave no answer", hint="see `journalctl -u octobrixd`")
    return body
