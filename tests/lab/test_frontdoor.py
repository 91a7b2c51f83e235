"""The front door in the lab (issues #15, #30): install.sh in a systemd container, three of
OctoPrint's virtual printers (one with a dash in its name), nginx on port 80 for the farm and on each
printer's door port (its own origin), the real web service, real OctoPrints. Everything is asked
through 127.0.0.1 and [::1], as a browser or a slicer on the network would.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import socket
import struct
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from octobrixd.config.model import default_door_port
from tests.lab.harness.container import Container, booted
from tests.lab.harness.guest_probe import main_pid
from tests.lab.harness.installed import farm_base, install_checkout
from tests.lab.harness.installs import holding_printer_ports, stream_upload, unit_identity, wait_operational
from tests.lab.harness.waiting import wait_until

pytestmark = pytest.mark.lab

PRINTERS = {"prusa-mk4": 5500, "voron": 5501, "ender": 5502}
NEWBIE, NEWBIE_PORT = "newbie", 5503
# Each printer's own origin on the front door (holding_printer_ports holds it with the printer's port).
DOORS = {name: default_door_port(port) for name, port in {**PRINTERS, NEWBIE: NEWBIE_PORT}.items()}
HELD_PORTS = [80, 443, *range(5500, 5510)]
HOSTS = ("127.0.0.1", "::1")
UPLOAD_BYTES = 500 * 1024**2


def farm_config(printers: dict[str, int]) -> str:
    return "".join(f"[printers.{name}]\nvirtual = true\nport = {port}\n\n" for name, port in printers.items())


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(method: str, path: str, *, host: str = "127.0.0.1", port: int = 80, headers: dict[str, str] | None = None,
         body: bytes | None = None, timeout: float = 60) -> Response:  # fmt: skip
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Response(response.status, response.headers, response.read())
    finally:
        conn.close()


def admin_key(box: Container, name: str) -> str:
    return str(json.loads(box.read_file(f"/var/lib/octobrix/.secrets/{name}.json"))["api_key"])


def signed_on(host: str, name: str, farm: str) -> str:
    """From the farm page to printer NAME: the farm's cookie and the OctoPrint session single sign-on
    gave the browser, as one Cookie header for that printer's origin."""
    opened = call("GET", f"/open/{name}", host=host, headers={"Cookie": farm})
    assert opened.status == 303, opened
    target = urllib.parse.urlsplit(opened.headers["Location"])
    assert target.port == DOORS[name], target
    landed = call("GET", f"{target.path}?{target.query}", host=host, port=DOORS[name], headers={"Cookie": farm})
    assert landed.status == 303 and landed.headers["Location"] == "/", landed
    session = [c.split(";", 1)[0] for c in landed.headers.get_all("Set-Cookie") or []]
    assert any(c.startswith(f"session_P{DOORS[name]}=") for c in session), session
    return "; ".join([farm, *session])


def farm_cookie(box: Container, host: str) -> str:
    secret = json.loads(box.read_file("/var/lib/octobrix/.secrets/farm.json"))
    form = urllib.parse.urlencode({"username": secret["username"], "password": secret["password"], "next": "/"})
    response = call("POST", "/login", host=host, body=form.encode(),
                    headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert response.status == 303, response
    return str(response.headers["Set-Cookie"]).split(";", 1)[0]


@pytest.fixture(scope="module")
def farm(lab_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    workdir = Path(tmp_path_factory.mktemp("frontdoor", numbered=True))
    with holding_printer_ports(HELD_PORTS), booted(workdir / "ct", boot_timeout=120, base=farm_base) as box:
        box.write_file("/etc/octobrix.toml", farm_config(PRINTERS))
        installed = install_checkout(box)
        assert installed.returncode == 0, f"install.sh failed:\n{installed.stdout}\n{installed.stderr}"
        for name, port in PRINTERS.items():
            wait_operational(box, name, port)
        yield box


# --- a minimal websocket client (RFC 6455), for SockJS's raw websocket -------------------------------


class WebSocket:
    def __init__(self, host: str, port: int, path: str, cookie: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        cookie_line = f"Cookie: {cookie}\r\n" if cookie else ""
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {'[::1]' if ':' in host else host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
            f"{cookie_line}\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            assert chunk, f"closed during the handshake: {head!r}"
            head += chunk
        self.status_line = head.split(b"\r\n", 1)[0].decode()

    def _exact(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            assert chunk, "the websocket was closed"
            data += chunk
        return data

    def receive(self) -> str:
        first, second = self._exact(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._exact(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._exact(8))
        payload = self._exact(length)
        if first & 0x0F == 0x9:  # ping: answer it and read on
            self.send(payload.decode(), opcode=0xA)
            return self.receive()
        return payload.decode()

    def send(self, text: str, opcode: int = 0x1) -> None:
        data = text.encode()
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        if len(data) < 126:
            header += bytes([0x80 | len(data)])
        else:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(data))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def receive_until(self, wanted: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.5, deadline - time.monotonic()))
            message = self.receive()
            if wanted in message:
                return message
        raise AssertionError(f"no {wanted!r} on the websocket within {timeout:.0f} s")

    def current_after(self, moment: float, timeout: float) -> dict[str, Any]:
        """The first of OctoPrint's state pushes made after moment (its serverTime): a fresh one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.5, deadline - time.monotonic()))
            message = json.loads(self.receive())
            current = message.get("current") if isinstance(message, dict) else None
            if current and current.get("serverTime", 0) > moment:
                return dict(current)
        raise AssertionError(f"no state push made after {moment} within {timeout:.0f} s")

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def octoprint_socket(host: str, name: str, api_key: str) -> Iterator[WebSocket]:
    """OctoPrint's push socket through the front door as an API client opens it (`octoprint client
    listen`): a passive login with its key for a session, then SockJS's (raw) websocket with no
    cookie at all, the session as its auth message."""
    door = DOORS[name]
    login = call("POST", "/api/login", host=host, port=door, body=b'{"passive": true}',
                 headers={"X-Api-Key": api_key, "Content-Type": "application/json"})  # fmt: skip
    assert login.status == 200, login
    user = login.json()
    ws = WebSocket(host, door, "/sockjs/websocket", "")
    try:
        assert ws.status_line.startswith("HTTP/1.1 101"), ws.status_line
        # SockJS's raw websocket: plain JSON messages, OctoPrint's "connected" first.
        assert "connected" in json.loads(ws.receive()), "OctoPrint's greeting"
        ws.send(json.dumps({"auth": f"{user['name']}:{user['session']}"}))
        yield ws
    finally:
        ws.close()


def test_the_farm_login_opens_each_printer_as_its_own_octoprint_session(farm: Container) -> None:
    for host in HOSTS:
        cookie = farm_cookie(farm, host)
        for name in PRINTERS:
            door = DOORS[name]
            # Past the farm login but not signed on: OctoPrint sees an anonymous browser, no injected admin.
            anonymous = call("GET", "/api/currentuser", host=host, port=door, headers={"Cookie": cookie}).json()
            assert anonymous["name"] is None, f"{name}: no identity injected"
            both = signed_on(host, name, cookie)
            who = call("GET", "/api/currentuser", host=host, port=door, headers={"Cookie": both}).json()
            assert who["name"] == "farm" and "admins" in who["groups"], f"{name}: the farm's own account, {who}"
            # OctoPrint's CSRF check holds for that session: a POST without its token is refused.
            posted = call("POST", "/api/connection", host=host, port=door, body=b'{"command": "disconnect"}',
                          headers={"Cookie": both, "Content-Type": "application/json"})  # fmt: skip
            assert posted.status == 400, posted
        door = DOORS["prusa-mk4"]
        page = call("GET", "/", host=host, port=door, headers={"Cookie": cookie, "Accept": "text/html"})
        assert page.status == 302 and page.headers["Location"].startswith("/login/"), "OctoPrint's own login page"
        both = signed_on(host, "prusa-mk4", cookie)
        page = call("GET", "/", host=host, port=door, headers={"Cookie": both, "Accept": "text/html"})
        assert page.status == 200 and b'"/static/' in page.body, "OctoPrint's UI at the root of its origin"
    # Logging out of the farm logs out the OctoPrint session it opened, at OctoPrint itself.
    cookie = farm_cookie(farm, "127.0.0.1")
    both = signed_on("127.0.0.1", "voron", cookie)
    octoprint_only = "; ".join(c for c in both.split("; ") if c.startswith("session_P"))
    out = call("POST", "/logout", headers={"Cookie": cookie, "Origin": "http://127.0.0.1"})
    assert out.status == 303, out
    replayed = call("GET", "/api/currentuser", port=PRINTERS["voron"],
                    headers={"Cookie": octoprint_only.replace(f"_P{DOORS['voron']}", f"_P{PRINTERS['voron']}"),
                             "X-Forwarded-Host": f"127.0.0.1:{DOORS['voron']}"}).json()  # fmt: skip
    assert replayed["name"] is None, "the OctoPrint session ended with the farm's"


def test_without_the_farm_login_everything_is_refused(farm: Container) -> None:
    basic = "Basic " + base64.b64encode(b"admin:x").decode()
    forged = {"X-Remote-User": "admin", "Remote-User": "admin", "X-Forwarded-User": "admin",
              "X-Octobrix-Login": "farm", "X-Octobrix-Printer": "voron", "Authorization": basic}  # fmt: skip
    for host in HOSTS:
        overview = call("GET", "/", host=host, headers={"Accept": "text/html"})
        assert overview.status == 303 and overview.headers["Location"].startswith("/login"), overview
        assert call("GET", "/api/farm", host=host).status == 401
        for name in PRINTERS:
            page = call("GET", "/", host=host, port=DOORS[name], headers={"Accept": "text/html"})
            shown = "[::1]" if ":" in host else host
            assert page.status == 303, page
            assert page.headers["Location"] == f"http://{shown}/login?next=%2Fopen%2F{name}", page.headers["Location"]
            assert call("GET", "/api/version", host=host, port=DOORS[name]).status == 401
            assert call("GET", "/api/version", host=host, port=DOORS[name], headers=forged).status == 401
    # Forged identity headers with a key that is no one's: OctoPrint sees no user, not "admin".
    for name, port in PRINTERS.items():
        refused = call("GET", "/api/currentuser", port=DOORS[name], headers={**forged, "X-Api-Key": "NOTAKEY"})
        assert refused.status == 403 or refused.json().get("name") is None, refused
        # The direct port trusts no header either (OctoPrint's own login only).
        direct = call("GET", "/api/currentuser", port=port, headers=forged)
        assert direct.status == 403 or direct.json().get("name") is None, direct


def test_a_slicers_own_key_keeps_its_own_rights(farm: Container) -> None:
    """PrusaSlicer, Cura and OrcaSlicer send X-Api-Key to the printer's address: OctoPrint judges
    that key, the front door never swaps it for another. The overview's read-only key stands in for a
    slicer's key with few rights: it may read the status, not upload."""
    keys = json.loads(farm.read_file("/var/lib/octobrix/.secrets/web/keys.json"))
    assert sorted(keys) == sorted(PRINTERS)
    for name in PRINTERS:
        door = DOORS[name]
        who = call("GET", "/api/currentuser", port=door, headers={"X-Api-Key": keys[name]}).json()
        assert who["name"] == "octobrix-web"
        assert call("GET", "/api/job", port=door, headers={"X-Api-Key": keys[name]}).status == 200
        upload = call("POST", "/api/files/local", port=door, headers={"X-Api-Key": keys[name],
                      "Content-Type": "multipart/form-data; boundary=x"}, body=b"--x--\r\n")  # fmt: skip
        assert upload.status == 403, "the read-only key is not upgraded to the admin's"
    other = next(iter(PRINTERS))
    someone_elses = call("GET", "/api/currentuser", port=DOORS["voron"], headers={"X-Api-Key": keys[other]})
    assert someone_elses.status == 403 or someone_elses.json().get("name") is None, "one printer's key, not another's"


def test_octoprints_push_socket_connects_through_the_front_door(farm: Container) -> None:
    for host in HOSTS:
        with octoprint_socket(host, "prusa-mk4", admin_key(farm, "prusa-mk4")) as ws:
            # OctoPrint pushes its printer state only to a socket whose auth it accepted.
            ws.receive_until("current", 30)


def test_a_500_mb_upload_lands_in_the_printers_uploads(farm: Container) -> None:
    filename = f"big-{uuid.uuid4().hex[:6]}.gcode"
    status, body, seconds = stream_upload(DOORS["ender"], admin_key(farm, "ender"), filename, UPLOAD_BYTES, timeout=600)
    assert status == 201, body[:500]
    landed = farm.path(f"/var/lib/octobrix/ender/basedir/uploads/{filename}")
    assert landed.stat().st_size == UPLOAD_BYTES
    print(f"\n500 MB upload through the front door: {seconds:.1f} s ({UPLOAD_BYTES / seconds / 1e6:.0f} MB/s)")
    landed.unlink()


def nginx_pids(box: Container) -> tuple[str, set[str]]:
    master = box.systemctl("show", "-p", "MainPID", "--value", "nginx.service").stdout.strip()
    workers = box.run(["sh", "-c", f"cat /proc/[0-9]*/stat | awk '$4 == {master} {{print $1}}'"]).stdout.split()
    return master, set(workers)


def forget_the_overview_user(box: Container, name: str) -> None:
    """Make printer NAME look set up before the front door: its OctoPrint has no overview user."""
    admin_key = json.loads(box.read_file(f"/var/lib/octobrix/.secrets/{name}.json"))["api_key"]
    removed = call("DELETE", "/api/access/users/octobrix-web", port=PRINTERS[name], headers={"X-Api-Key": admin_key})
    assert removed.status == 200, removed
    box.run(["rm", f"/var/lib/octobrix/.secrets/web/printers/{name}.json"])


def overview_card(box: Container, cookie: str, name: str) -> dict[str, Any]:
    def card() -> dict[str, Any]:
        answer = call("GET", "/api/farm", headers={"Cookie": cookie}, timeout=10)
        return dict(next(c for c in answer.json()["printers"] if c["name"] == name))

    return dict(
        wait_until(
            f"/api/farm to answer with {name}'s card asked",
            card,
            timeout=60,
            every=1,
            until=lambda card: card["asked"],
            # The web service restarts when its keys change.
            ignoring=(OSError, http.client.HTTPException, ValueError),
            detail=lambda: box.journal("octobrix-web.service", 30),
        )
    )


def test_a_printer_added_by_apply_answers_and_open_sessions_survive(farm: Container) -> None:
    cookie = farm_cookie(farm, "127.0.0.1")
    master, workers = nginx_pids(farm)
    assert master != "0" and workers
    # voron was set up before the front door (#15): the same apply gives it its overview user.
    forget_the_overview_user(farm, "voron")
    instances = unit_identity(farm, [f"octoprint@{name}.service" for name in PRINTERS])
    with octoprint_socket("127.0.0.1", "voron", admin_key(farm, "voron")) as ws:
        ws.receive_until("current", 30)
        farm.write_file("/etc/octobrix.toml", farm_config({**PRINTERS, NEWBIE: NEWBIE_PORT}))
        applied = farm.run(["octobrixctl", "apply"], check=False, timeout=900)
        assert applied.returncode == 0, applied.stderr
        wait_operational(farm, NEWBIE, NEWBIE_PORT)
        wait_until(
            f"{NEWBIE}'s OctoPrint to answer behind the farm login (its own 403 to an anonymous browser)",
            lambda: call("GET", "/api/version", port=DOORS[NEWBIE], headers={"Cookie": cookie}),
            timeout=60,
            every=1,
            until=lambda answer: answer.status == 403 and b"permission" in answer.body,
            ignoring=(OSError,),
        )
        both = signed_on("127.0.0.1", NEWBIE, cookie)
        who = call("GET", "/api/currentuser", port=DOORS[NEWBIE], headers={"Cookie": both}).json()
        assert who["name"] == "farm", "the new printer has the farm's account, and single sign-on to it"
        new_master, new_workers = nginx_pids(farm)
        assert new_master == master, "nginx was reloaded, not restarted"
        # Reloaded: new workers with the new config (an old one may linger, serving our socket).
        assert new_workers - workers, "no new nginx workers: not reloaded"
        # The socket opened before the reload still carries OctoPrint's pushes, made after it.
        ws.current_after(time.time(), 30)
    assert unit_identity(farm, list(instances)) == instances, "no other printer's OctoPrint was restarted"
    key = json.loads(farm.read_file("/var/lib/octobrix/.secrets/web/keys.json"))["voron"]
    who = call("GET", "/api/currentuser", port=DOORS["voron"], headers={"X-Api-Key": key}).json()
    assert (who["name"], who["groups"], who["permissions"]) == ("octobrix-web", [], ["STATUS"]), who
    card = overview_card(farm, cookie, "voron")
    assert card["asked"] and card["state_text"] != "Cannot be asked", card
    assert call("GET", "/api/version", port=DOORS[NEWBIE]).status == 401, "and it is refused without the login"
    # octobrixd follows the saved config too (octobrix-config.path), inside its own sandbox: its
    # apply must have checked and reloaded nginx as well, not failed at it.
    daemon_log = farm.journal("octobrixd.service", 300)
    assert "nginx" not in daemon_log.lower() or "refused" not in daemon_log, daemon_log


def test_the_web_service_is_unprivileged_and_hardened(farm: Container) -> None:
    call("GET", "/login")  # socket-activated: make sure it runs
    pid = str(main_pid(farm, "octobrix-web.service"))
    user = farm.run(["stat", "-c", "%U", f"/proc/{pid}"]).stdout.strip()
    assert pid != "0" and user == "octobrix_web", user
    result = farm.run(["systemd-analyze", "security", "--no-pager", "octobrix-web.service"], check=False)
    summary = next(line for line in result.stdout.splitlines() if "Overall exposure level" in line)
    score = float(summary.split(":")[1].split()[0])
    daemon = farm.run(["systemd-analyze", "security", "--no-pager", "octobrixd.service"], check=False).stdout
    daemon_score = next(line for line in daemon.splitlines() if "Overall exposure level" in line).split(":")[1]
    print(f"\nsystemd-analyze security: octobrix-web.service {score}, octobrixd.service {daemon_score.split()[0]}")
    assert score <= 2.0
    # nginx holds no secret: no key in its site, nothing of octobrix's secrets included.
    site = farm.path("/etc/nginx/conf.d/octobrix.conf").read_text()
    keys = [admin_key(farm, n) for n in PRINTERS]
    assert not any(key in site for key in keys) and ".secrets" not in site


def test_credentials_show_the_farm_login_first_and_debians_default_site_is_off(farm: Container) -> None:
    secret = json.loads(farm.read_file("/var/lib/octobrix/.secrets/farm.json"))
    first = farm.run(["octobrixctl", "credentials"]).stdout.splitlines()[0]
    assert first.startswith("farm login: http://") and f"user farm  password {secret['password']}" in first, first
    # nginx's "Welcome" site, Debian's unchanged file, is switched off; the file itself stays.
    assert not farm.path("/etc/nginx/sites-enabled/default").is_symlink()
    assert farm.path("/etc/nginx/sites-available/default").is_file()
    # The farm login works with the password shown, and the web service keeps only its hash.
    login = json.loads(farm.read_file("/var/lib/octobrix/.secrets/web/login.json"))
    assert secret["password"] not in json.dumps(login)


def approve_app_keys(host: str, name: str, session: str, app: str, timeout: float) -> None:
    """The user approving a pending app-key request in OctoPrint, as its dialog does: the pending
    requests of the logged-in account, then its decision (a session request: with the CSRF token)."""
    door = DOORS[name]
    csrf = next(c.split("=", 1)[1] for c in session.split("; ") if c.startswith(f"csrf_token_P{door}="))

    def pending() -> str | None:
        listed = call("GET", "/api/plugin/appkeys", host=host, port=door, headers={"Cookie": session}).json()
        return next((token for token, p in listed["pending"].items() if p["app_id"] == app), None)

    token = wait_until(f"{app}'s key request to show in OctoPrint", pending, timeout=timeout, every=0.5)
    decided = call("POST", f"/plugin/appkeys/decision/{token}", host=host, port=door, body=b'{"decision": true}',
                   headers={"Cookie": session, "Content-Type": "application/json", "X-CSRF-Token": csrf})  # fmt: skip
    assert decided.status == 204, decided


def test_home_assistants_setup_through_the_front_door(farm: Container) -> None:
    """Home Assistant's own client library (pyoctoprintapi) through a printer's origin, as HA's config
    flow and coordinator use it: a key asked for by OctoPrint's app-keys workflow (no farm login, no
    key given), approved by the user in OctoPrint, then the coordinator's calls with that key."""
    import asyncio  # noqa: PLC0415 - this test's alone

    import aiohttp  # noqa: PLC0415
    from pyoctoprintapi import OctoprintClient  # type: ignore[import-untyped]  # noqa: PLC0415

    name, app = "prusa-mk4", f"Home Assistant {uuid.uuid4().hex[:6]}"
    session = signed_on("127.0.0.1", name, farm_cookie(farm, "127.0.0.1"))

    async def setup() -> dict[str, Any]:
        async with aiohttp.ClientSession() as http_session:
            client = OctoprintClient("127.0.0.1", http_session, DOORS[name], False, "/")
            asked = asyncio.create_task(client.request_app_key(app, "farm", 120))
            await asyncio.to_thread(approve_app_keys, "127.0.0.1", name, session, app, 60)
            key = await asked
            client.set_api_key(key)
            printer = await client.get_printer_info()
            job = await client.get_job_info()
            server = await client.get_server_info()
            discovery = await client.get_discovery_info()
            return {"key": key, "printer": printer, "job": job, "server": server, "discovery": discovery}

    got = asyncio.run(setup())
    assert got["key"] and got["server"].version, got
    assert got["printer"].state.flags.operational, "the coordinator reads the printer"
    assert got["job"].job is not None and got["discovery"].upnp_uuid, got
    who = call("GET", "/api/currentuser", port=DOORS[name], headers={"X-Api-Key": got["key"]}).json()
    assert who["name"] == "farm", "the key is the approving account's, judged by OctoPrint"


def test_zeroconf_announces_each_printer_at_its_own_origin(farm: Container) -> None:
    """Apps that find printers by Zeroconf (OctoPrint's `_octoprint._tcp`) land on the front door:
    each printer at its door port, none at its OctoPrint's own port. Browsed from the host, which
    shares the container's network."""
    from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf  # noqa: PLC0415 - this test's alone

    kind = "_octoprint._tcp.local."
    zc = Zeroconf()
    names: set[str] = set()

    def seen(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Added:
            names.add(name)

    browser = ServiceBrowser(zc, kind, handlers=[seen])
    try:

        def ports() -> set[int] | None:
            found = set()
            for name in list(names):
                info = zc.get_service_info(kind, name, timeout=2000)
                if info is not None and info.port is not None:
                    found.add(info.port)
            return found if {DOORS[n] for n in PRINTERS} <= found else None

        announced = wait_until("every printer's door port announced by Zeroconf", ports, timeout=60, every=1)
    finally:
        browser.cancel()
        zc.close()
    assert not set(PRINTERS.values()) & announced, f"an OctoPrint's own port announced: {announced}"


def test_https_with_the_certificate_octobrix_makes(farm: Container) -> None:
    """`[frontdoor] https = true`, applied: a certificate is made (its fingerprint in `credentials`),
    plain HTTP is sent to HTTPS, the farm login and single sign-on work over it, and OctoPrint marks its
    own session cookie Secure. Last in the module: it leaves the farm on HTTPS."""
    import ssl  # noqa: PLC0415 - this test's alone

    config = farm.read_file("/etc/octobrix.toml")
    farm.write_file("/etc/octobrix.toml", "[frontdoor]\nhttps = true\n\n" + config)
    applied = farm.run(["octobrixctl", "apply"], check=False, timeout=600)
    assert applied.returncode == 0, applied.stderr
    said = farm.run(["octobrixctl", "credentials"]).stdout.splitlines()
    assert said[0].startswith("farm login: https://"), said
    shown = next(line for line in said if line.startswith("https certificate: "))
    fingerprint = shown.split("SHA-256 ", 1)[1].split()[0]
    assert fingerprint.count(":") == 31, shown
    unverified = ssl.create_default_context()
    unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE

    def https(method: str, path: str, port: int = 443, **kwargs: Any) -> Response:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=60, context=unverified)
        try:
            conn.request(method, path, **kwargs)
            answer = conn.getresponse()
            return Response(answer.status, answer.headers, answer.read())
        finally:
            conn.close()

    plain = call("GET", "/login")
    assert (plain.status, plain.headers["Location"]) == (308, "https://127.0.0.1/login"), plain
    for port in (443, DOORS["voron"]):
        pem = ssl.get_server_certificate(("127.0.0.1", port))
        digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
        assert ":".join(digest[i : i + 2] for i in range(0, 64, 2)) == fingerprint, port
    secret = json.loads(farm.read_file("/var/lib/octobrix/.secrets/farm.json"))
    form = urllib.parse.urlencode({"username": secret["username"], "password": secret["password"]}).encode()
    login = https("POST", "/login", body=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert login.status == 303 and "; Secure" in login.headers["Set-Cookie"], login.headers
    cookie = login.headers["Set-Cookie"].split(";", 1)[0]
    opened = https("GET", "/open/voron", headers={"Cookie": cookie})
    target = urllib.parse.urlsplit(opened.headers["Location"])
    assert (target.scheme, target.port) == ("https", DOORS["voron"]), target
    landed = https("GET", f"{target.path}?{target.query}", DOORS["voron"], headers={"Cookie": cookie})
    session = next(c for c in landed.headers.get_all("Set-Cookie") or [] if c.startswith("session_P"))
    assert "; Secure" in session, "OctoPrint's own session cookie, over HTTPS"
    both = "; ".join([cookie, session.split(";", 1)[0]])
    who = https("GET", "/api/currentuser", DOORS["voron"], headers={"Cookie": both}).json()
    assert who["name"] == "farm", who
