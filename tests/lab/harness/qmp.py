"""Minimal clients for QEMU's two JSON-over-socket protocols: QMP (the machine) and QGA (the guest agent)."""

from __future__ import annotations

import base64
import json
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from tests.lab.harness.waiting import connect_unix

log = logging.getLogger(__name__)

JSON = dict[str, Any]


class QmpError(RuntimeError):
    pass


class _JsonLines:
    """A unix-socket client reading newline-delimited JSON objects."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        sock = connect_unix(path, timeout)
        self.sock = sock
        self.buffer = b""

    def send(self, message: JSON | bytes, timeout: float = 10.0) -> None:
        data = message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n"
        # receive() leaves whatever timeout it last needed on the socket: set our own.
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
        except TimeoutError as exc:
            raise QmpError(f"{self.path}: the other side has not read for {timeout}s") from exc

    def receive(self, timeout: float) -> JSON | None:
        """The next JSON object, or None if none arrives within timeout."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise QmpError(f"{self.path}: connection closed")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        # QGA prefixes a guest-sync-delimited answer with 0xFF: anything before it is stale.
        line = line.rsplit(b"\xff", 1)[-1].strip()
        if not line:
            return self.receive(max(0.0, deadline - time.monotonic()))
        return cast(JSON, json.loads(line))

    def close(self) -> None:
        self.sock.close()


class Qmp:
    """QEMU Machine Protocol: device_add/device_del, chardev-add, and the events they cause."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.conn = _JsonLines(path, timeout)
        self.events: list[JSON] = []
        greeting = self.conn.receive(timeout)
        if not greeting or "QMP" not in greeting:
            raise QmpError(f"unexpected QMP greeting: {greeting}")
        self.execute("qmp_capabilities")

    def execute(self, command: str, arguments: JSON | None = None, *, timeout: float = 30.0) -> Any:
        message: JSON = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        log.debug("qmp -> %s", message)
        self.conn.send(message)
        deadline = time.monotonic() + timeout
        while True:
            reply = self.conn.receive(max(0.0, deadline - time.monotonic()))
            if reply is None:
                raise QmpError(f"no QMP reply to {command} within {timeout}s")
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise QmpError(f"{command} {arguments}: {reply['error'].get('desc', reply['error'])}")
            return reply.get("return")

    def wait_event(self, name: str, match: Callable[[JSON], bool] = lambda _e: True, timeout: float = 30.0) -> JSON:
        """Wait for (and consume) an event, including one that arrived while waiting for a reply."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event["event"] == name and match(event):
                    self.events.remove(event)
                    return event
            reply = self.conn.receive(max(0.0, deadline - time.monotonic()))
            if reply is None:
                raise QmpError(f"no {name} event within {timeout}s")
            if "event" in reply:
                self.events.append(reply)

    def close(self) -> None:
        self.conn.close()


class GuestAgent:
    """qemu-guest-agent: run commands and move files in the guest without a network."""

    def __init__(self, path: Path) -> None:
        self.conn = _JsonLines(path, timeout=30.0)

    def sync(self, timeout: float) -> None:
        """Wait until the agent answers; resynchronises the stream after a reconnect or a timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            token = random.randint(1, 2**31)
            # 0xFF resets the agent's JSON parser in case a previous request was cut short.
            # Short send timeouts: before the agent runs, nothing reads what we send.
            self.conn.send(b"\xff" + json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": token}})
                           .encode() + b"\n", timeout=1.0)  # fmt: skip
            inner = time.monotonic() + 2.0
            while time.monotonic() < inner:
                reply = self.conn.receive(max(0.0, inner - time.monotonic()))
                if reply is None:
                    break
                if reply.get("return") == token:
                    return
        raise QmpError(f"guest agent did not answer within {timeout}s")

    def call(self, command: str, arguments: JSON | None = None, *, timeout: float = 60.0) -> Any:
        message: JSON = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self.conn.send(message)
        reply = self.conn.receive(timeout)
        if reply is None:
            # The answer may still come later and confuse the next call: resync now.
            self.sync(timeout=30.0)
            raise QmpError(f"guest agent: no reply to {command} within {timeout}s")
        if "error" in reply:
            raise QmpError(f"guest agent {command}: {reply['error'].get('desc', reply['error'])}")
        return reply.get("return")

    def exec(
        self,
        argv: list[str],
        *,
        stdin: bytes | None = None,
        env: list[str] | None = None,
        timeout: float = 120.0,
    ) -> tuple[int, bytes, bytes]:
        """Run argv in the guest, wait for it; returns (exit code, stdout, stderr)."""
        arguments: JSON = {"path": argv[0], "arg": argv[1:], "capture-output": True}
        if stdin is not None:
            arguments["input-data"] = base64.b64encode(stdin).decode()
        if env is not None:
            arguments["env"] = env
        pid = self.call("guest-exec", arguments)["pid"]
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            status = self.call("guest-exec-status", {"pid": pid})
            if status["exited"]:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"guest command {argv} still running after {timeout}s")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.3)
        out = base64.b64decode(status.get("out-data", ""))
        err = base64.b64decode(status.get("err-data", ""))
        code = status.get("exitcode")
        if code is None:
            code = 128 + int(status.get("signal", 0))
        return int(code), out, err

    def write_file(self, path: str, data: bytes, chunk: int = 192 * 1024) -> None:
        handle = self.call("guest-file-open", {"path": path, "mode": "wb"})
        try:
            for start in range(0, len(data), chunk):
                piece = base64.b64encode(data[start : start + chunk]).decode()
                self.call("guest-file-write", {"handle": handle, "buf-b64": piece})
        finally:
            self.call("guest-file-close", {"handle": handle})

    def read_file(self, path: str, chunk: int = 1024 * 1024) -> bytes:
        handle = self.call("guest-file-open", {"path": path, "mode": "rb"})
        parts: list[bytes] = []
        try:
            while True:
                result = self.call("guest-file-read", {"handle": handle, "count": chunk})
                parts.append(base64.b64decode(result.get("buf-b64", "")))
                if result.get("eof") or not result.get("count"):
                    break
        finally:
            self.call("guest-file-close", {"handle": handle})
        return b"".join(parts)

    def close(self) -> None:
        self.conn.close()
