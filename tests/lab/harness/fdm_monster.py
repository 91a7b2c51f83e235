"""A real FDM Monster (npm @fdm-monster/server, SQLite mode) on a loopback port of this machine.

tests/deps/fdm-monster.sh installs it once into the lab cache. It writes its database, logs and
uploads into its own package folder, so each run gets an overlay of the cached install (the cache
stays untouched, a run starts with no data) and its first-time setup is done through its API, as
a new user's browser would. It listens on 0.0.0.0 whatever it is told; a preloaded shim
(fdm_monster_loopback.js) keeps it on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.lab.harness.build import CACHE
from tests.lab.harness.container import LabError
from tests.lab.harness.procs import REAPER, lab_tempdir
from tests.lab.harness.project import REPO
from tests.lab.harness.waiting import wait_until

VERSION = "1.9.4"
INSTALL = CACHE / f"fdm-monster-{VERSION}"
SERVER = Path("node_modules/@fdm-monster/server/dist/index.js")
LOOPBACK_SHIM = Path(__file__).with_name("fdm_monster_loopback.js")
ROOT_USER = "labroot"
ROOT_PASSWORD = "lab-" + uuid.uuid4().hex


def ensure_installed() -> Path:
    """The cached install; installs it (npm, ~4 min) when this machine has none yet."""
    script = REPO / "tests/deps/fdm-monster.sh"
    result = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LabError(f"tests/deps/fdm-monster.sh failed:\n{result.stderr[-3000:]}")
    return INSTALL


def multipart(parts: Sequence[tuple[str, str, str | None]]) -> tuple[bytes, str]:
    """(field, value, filename or None) parts as a multipart/form-data body, and its content type."""
    boundary = uuid.uuid4().hex
    body = b""
    for field, value, filename in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n{value}\r\n".encode()
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class FdmMonster:
    def __init__(self, port: int, home: Path) -> None:
        self.port = port
        self.home = home
        self.token = ""

    def log_tail(self) -> str:
        """The end of FDM Monster's own log, for a failing assertion."""
        logs = sorted(self.home.glob("media/logs/*.log"))
        return logs[-1].read_text(errors="replace")[-4000:] if logs else "(FDM Monster wrote no log)"

    def call(self, method: str, path: str, body: bytes | None = None, kind: str = "application/json") -> Any:
        """FDM Monster's answer to one API call as JSON (None when empty); HTTPError on an error status."""
        headers = {"Content-Type": kind}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=body, headers=headers, method=method
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read()
        return json.loads(text) if text.strip() else None

    def post(self, path: str, payload: dict[str, Any]) -> Any:
        return self.call("POST", path, json.dumps(payload).encode())

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def upload(self, path: str, parts: Sequence[tuple[str, str, str | None]]) -> Any:
        body, kind = multipart(parts)
        return self.call("POST", path, body, kind)

    def answering(self) -> bool:
        try:
            self.get("/api/auth/login-required")
        except (urllib.error.URLError, OSError):
            return False
        return True

    def first_time_setup(self) -> None:
        self.post(
            "/api/first-time-setup/complete",
            {"loginRequired": True, "registration": False, "rootUsername": ROOT_USER, "rootPassword": ROOT_PASSWORD},
        )
        self.token = self.post("/api/auth/login", {"username": ROOT_USER, "password": ROOT_PASSWORD})["token"]


@contextlib.contextmanager
def fdm_monster(port: int) -> Iterator[FdmMonster]:
    """FDM Monster on 127.0.0.1:port with its first-time setup done and logged in as its root user."""
    install = ensure_installed()
    workdir = lab_tempdir("fdm")
    merged, upper, work = workdir / "merged", workdir / "upper", workdir / "work"
    for folder in (merged, upper, work):
        folder.mkdir()
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={install},upperdir={upper},workdir={work}", merged],
        check=True,
    )

    def unmount_lazily() -> None:
        subprocess.run(["umount", "--lazy", merged], check=False)

    unmount = REAPER.add_callback(f"unmount {merged}", unmount_lazily)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(workdir),
        "NODE_ENV": "production",
        "SERVER_PORT": str(port),
        "ENABLE_EXPERIMENTAL_TYPEORM": "true",
    }
    log_path = workdir / "fdm-monster.log"
    with log_path.open("wb") as log_file:
        proc = REAPER.spawn(
            [merged / "bin/node", "--require", LOOPBACK_SHIM, merged / SERVER], stdout=log_file, env=env
        )
    server = FdmMonster(port, merged / SERVER.parent.parent)
    try:
        wait_until(f"FDM Monster on port {port} (log: {log_path})", server.answering, timeout=120, every=1)
        server.first_time_setup()
        yield server
    finally:
        REAPER.stop(proc)
        subprocess.run(["umount", merged], check=False)
        REAPER.remove_callback(unmount)
