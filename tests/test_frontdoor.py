"""The front door: the nginx config octobrix renders, checked and run by the real nginx.

nginx (Debian's, as the .deb and install.sh install it) runs here as a plain process on a free port
with the rendered site, in front of the real web service (on a unix socket) and small
loopback stand-ins for OctoPrint that report what reached them. The lab test
(tests/lab/test_frontdoor.py) does the same with real OctoPrints under systemd.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from octobrixd.config.model import parse_config
from octobrixd.errors import ConfigError, OctobrixError
from octobrixd.frontdoor import auth, secrets, tls
from octobrixd.instances.credentials import credentials_path, read_farm_credentials, web_key_path
from octobrixd.render.nginx import NGINX_SITE, WEB_SOCKET, render_frontdoor
from octobrixd.render.octoprint import octoprint_seed
from octobrixd.render.tree import render_all
from octobrixd.system import paths
from octobrixd.system.paths import Layout
from octobrixd.web.context import WebContext
from octobrixd.web.door import PrinterLogin
from octobrixd.web.server import FarmServer, unix_listener
from tests.conftest import REPO, require_programs

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# The rendered text's ports; the tests that run nginx take free ones, so they run beside anything.
FRONT, DEMO, DASHED, UNKEYED, CAM = 5500, 5501, 5502, 5503, 5504
# A missing nginx fails the test, as every missing tool does (tests/deps/base.sh installs it).
needs_nginx = pytest.mark.usefixtures("nginx_installed")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="nginx's master runs as root, as on a farm")


@pytest.fixture
def nginx_installed() -> None:
    require_programs(NGINX, deps="base.sh")


def farm_config(front: int = FRONT, ports: dict[str, int] | None = None) -> str:
    """The farm with its front door on port front; ports: each printer's and camera's port by name."""
    port = ports or {"demo": DEMO, "ender-3": DASHED, "unkeyed": UNKEYED, "cam1": CAM}
    return f"""
[octobrix]
listen = "::"
[frontdoor]
port = {front}
[printers.demo]
virtual = true
port = {port["demo"]}
[printers.ender-3]
virtual = true
port = {port["ender-3"]}
camera = "cam1"
[printers.unkeyed]
virtual = true
port = {port["unkeyed"]}
[cameras.cam1]
serial = "S1"
port = {port["cam1"]}
"""


FARM = farm_config()
SLICER_KEY = "SLICERKEY"
# The keys the stand-in OctoPrints accept: a slicer's application key (with the WEBCAM permission).
OCTOPRINT_KNOWS = frozenset({SLICER_KEY})
FARM_PASSWORD = "correct horse battery"  # noqa: S105 - the test's own farm login
# The tests judge the certificate by its fingerprint, as a maker does with the browser's warning.
UNVERIFIED = ssl.create_default_context()
UNVERIFIED.check_hostname = False
UNVERIFIED.verify_mode = ssl.CERT_NONE


def door_config(front: int, ports: dict[str, int], doors: dict[str, int]) -> str:
    """FARM on these ports, each printer's origin on its door port (the tests take free ones)."""
    text = farm_config(front, ports)
    for name, door_port in doors.items():
        text = text.replace(f"port = {ports[name]}\n", f"port = {ports[name]}\ndoor_port = {door_port}\n")
    return text


def nginx_main_conf(prefix: Path, site: Path) -> str:
    for sub in ("body", "proxy", "logs"):
        (prefix / sub).mkdir(exist_ok=True)
    return (
        # Workers as root: the test's folder is private to root (the lab runs them as www-data).
        f"user root;\npid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {prefix}/body;\n  proxy_temp_path {prefix}/proxy;\n"
        f"  include {site};\n}}\n"
    )


def site_for_test(text: str, prefix: Path) -> str:
    """The rendered site with its absolute paths (the web socket, the certificate) moved into prefix."""
    return text.replace(WEB_SOCKET, f"{prefix}/web.sock").replace(f"/{paths.TLS_DIR}/", f"{prefix}/{paths.TLS_DIR}/")


def nginx_check(prefix: Path, site_text: str) -> subprocess.CompletedProcess[str]:
    site = prefix / "octobrix.conf"
    site.write_text(site_for_test(site_text, prefix))
    (prefix / "nginx.conf").write_text(nginx_main_conf(prefix, site))
    return subprocess.run(
        [NGINX, "-t", "-q", "-e", "stderr", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
        capture_output=True,
        text=True,
        check=False,
    )


@needs_nginx
@pytest.mark.parametrize("case", ["farm", "starter"])
def test_nginx_accepts_the_rendered_site(tmp_path: Path, case: str) -> None:
    source = {"farm": REPO / "tests/data/farm.toml", "starter": REPO / "packaging/octobrix.toml"}[case]
    config = parse_config(source.read_text(), str(source))
    text = render_all(config)[NGINX_SITE].text
    result = nginx_check(tmp_path, text)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@needs_nginx
def test_nginx_check_catches_a_broken_site(tmp_path: Path) -> None:
    """The check above can fail: a site nginx cannot load is reported."""
    config = parse_config(FARM, "/etc/octobrix.toml")
    result = nginx_check(tmp_path, render_frontdoor(config).replace("server_name _;", "server_name _"))
    assert result.returncode != 0 and "nginx" in result.stderr


def test_off_means_no_site_and_absolute_stream_urls() -> None:
    config = parse_config(FARM + "\n", "/etc/octobrix.toml")
    assert NGINX_SITE in render_all(config)
    stream = octoprint_seed(config, "ender-3")["plugins"]["classicwebcam"]["stream"]
    assert stream == "/cam/cam1/stream", "relative: works by any name the browser used"
    off = parse_config(FARM.replace(f"port = {FRONT}", f"port = {FRONT}\nenabled = false"), "/etc/octobrix.toml")
    assert NGINX_SITE not in render_all(off)
    assert octoprint_seed(off, "ender-3")["plugins"]["classicwebcam"]["stream"].startswith("http://")


def test_listen_follows_the_config() -> None:
    config = parse_config(FARM, "x")
    text = render_frontdoor(config)
    assert f"listen 0.0.0.0:{FRONT} default_server;" in text and f"listen [::]:{FRONT} default_server;" in text
    local = parse_config(FARM.replace('listen = "::"', 'listen = "127.0.0.1"'), "x")
    assert f"listen 127.0.0.1:{FRONT} default_server;" in render_frontdoor(local)
    assert "listen [::]" not in render_frontdoor(local)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[frontdoor]\nport = 5000\n[printers.p]\nvirtual = true\nport = 5000\n", "frontdoor.port: 5000 is also used"),
        ("[frontdoor]\nport = 0\n", "frontdoor.port"),
        ("[frontdoor]\nprot = 81\n", "frontdoor.prot: unknown key"),
        ("[frontdoor]\nenabled = 1\n", "frontdoor.enabled"),
        ("[printers.login]\nvirtual = true\nport = 5000\n", "'login' is a path of the front door"),
    ],
)
def test_bad_frontdoor_config_names_the_key(extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(extra, "/etc/octobrix.toml")
    assert any(message in problem for problem in caught.value.problems), caught.value.problems


def test_a_reserved_name_is_fine_with_the_front_door_off() -> None:
    parse_config("[frontdoor]\nenabled = false\n[printers.login]\nvirtual = true\nport = 5000\n", "x")


# --- the real nginx in front of the real web service ---------------------------------------------


class Seen:
    """What reached each stand-in OctoPrint."""

    def __init__(self) -> None:
        self.requests: list[dict[str, object]] = []
        self.lock = threading.Lock()

    def add(self, entry: dict[str, object]) -> None:
        with self.lock:
            self.requests.append(entry)

    def last(self) -> dict[str, object]:
        with self.lock:
            return self.requests[-1]


def _stand_in_answer(method: str, target: str, headers: dict[str, str]) -> bytes:
    """Like OctoPrint: a key it does not know is refused (no key: anonymous, left to the test); its
    login page sets a CSRF cookie, and a login with it (the farm's account) a session cookie, each
    named by the port the browser used (X-Forwarded-Host)."""
    bearer = headers.get("authorization", "").removeprefix("Bearer ") or None
    path, _, query = target.partition("?")
    key = headers.get("x-api-key") or bearer or urllib.parse.parse_qs(query).get("apikey", [None])[0]
    suffix = "_P" + headers.get("x-forwarded-host", "").rsplit(":", 1)[-1]
    cookies = dict(c.strip().split("=", 1) for c in headers.get("cookie", "").split(";") if "=" in c)
    extra = ""
    status = b"200 OK" if key is None or key in OCTOPRINT_KNOWS else b"403 Forbidden"
    answer: dict[str, object] = {"ok": status.startswith(b"200")}
    if path == "/login":
        # Like OctoPrint, an anonymous session along with the CSRF cookie.
        extra = f"Set-Cookie: session{suffix}=ANONYMOUS; Path=/\r\nSet-Cookie: csrf_token{suffix}=CSRF; Path=/\r\n"
    elif path == "/api/login" and method == "POST":
        csrf_ok = cookies.get(f"csrf_token{suffix}") == "CSRF" == headers.get("x-csrf-token")
        status = b"200 OK" if csrf_ok else b"400 Bad Request"
        extra = f"Set-Cookie: session{suffix}=OCTOSESSION; Path=/; HttpOnly\r\n" if csrf_ok else ""
    elif path == "/api/currentuser":
        session = cookies.get(f"session{suffix}") == "OCTOSESSION"
        known = session or key in OCTOPRINT_KNOWS
        answer = {"name": "someone" if known else None, "permissions": ["WEBCAM"] if known else []}
    body = json.dumps(answer).encode()
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\nContent-Type: application/json\r\nConnection: close\r\n"
        + extra.encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def octoprint_stand_in(seen: Seen) -> socket.socket:
    """On a free loopback port: records each request's headers and body size; answers a websocket
    upgrade with 101 and echoes."""
    listener = socket.create_server(("127.0.0.1", 0), reuse_port=False)
    port = listener.getsockname()[1]

    def handle(conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
            if headers.get("upgrade", "").lower() == "websocket":
                seen.add({"port": port, "method": method, "target": target, "headers": headers, "body": 0})
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                while chunk := conn.recv(65536):
                    conn.sendall(chunk)
                return
            size = len(rest)
            if "content-length" in headers:
                want = int(headers["content-length"])
                while size < want:
                    chunk = conn.recv(1 << 20)
                    if not chunk:
                        break
                    size += len(chunk)
            seen.add({"port": port, "method": method, "target": target, "headers": headers, "body": size})
            conn.sendall(_stand_in_answer(method, target, headers))

    def loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return listener


def free_port() -> int:
    """A port free on IPv4 and IPv6 alike (nginx listens on both) as the kernel hands them out."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        probe.bind(("::", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Door:
    """The running front door of FARM: nginx on port front, stand-ins on the printers' ports."""

    seen: Seen
    nginx: subprocess.Popen[bytes]
    password: str
    front: int
    ports: dict[str, int]  # printer or camera name -> its stand-in's port
    doors: dict[str, int]  # printer name -> its own port on the front door (its origin)
    server: FarmServer

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        host: str = "127.0.0.1",
        *,
        port: int | None = None,
        tls: bool = False,
    ) -> http.client.HTTPResponse:
        conn: http.client.HTTPConnection = (
            http.client.HTTPSConnection(host, port or self.front, timeout=30, context=UNVERIFIED)
            if tls
            else http.client.HTTPConnection(host, port or self.front, timeout=30)
        )
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response

    def log_in(self, host: str = "127.0.0.1") -> str:
        form = urllib.parse.urlencode({"username": "farm", "password": self.password, "next": "/open/demo"}).encode()
        response = self.request("POST", "/login", {"Content-Type": "application/x-www-form-urlencoded"}, form, host)
        assert response.status == 303 and response.getheader("Location") == "/open/demo"
        cookie = response.getheader("Set-Cookie") or ""
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
        return cookie.split(";", 1)[0]


@contextlib.contextmanager
def front_door(tmp_path: Path, https_port: int | None = None) -> Iterator[Door]:
    """FARM's front door on free ports: the real web service, stand-in OctoPrints and the real nginx;
    https_port: over HTTPS there, with the certificate octobrix makes (the real openssl)."""
    seen = Seen()
    stand_ins = [octoprint_stand_in(seen) for _ in range(4)]
    ports = dict(zip(("demo", "ender-3", "unkeyed", "cam1"), (s.getsockname()[1] for s in stand_ins), strict=True))
    front = free_port()
    doors = {name: free_port() for name in ("demo", "ender-3", "unkeyed")}
    text = door_config(front, ports, doors)
    if https_port is not None:
        text = text.replace(f"port = {front}\n", f"port = {front}\nhttps = true\nhttps_port = {https_port}\n", 1)
    config = parse_config(text, "/etc/octobrix.toml")
    if https_port is not None:
        assert tls.ensure_certificate(config, Layout(tmp_path)), "made"
    password = FARM_PASSWORD
    login = auth.make_login("farm", password)
    listener = unix_listener(tmp_path / "web.sock")
    context = WebContext(config=config, login=login, printer_login=PrinterLogin("farm", password))
    server = FarmServer(context, listener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    result = nginx_check(tmp_path, render_frontdoor(config))
    assert result.returncode == 0, result.stderr
    nginx = subprocess.Popen(
        [NGINX, "-e", "stderr", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        for port in (front, *doors.values(), *([] if https_port is None else [https_port])):
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                assert time.monotonic() < deadline and nginx.poll() is None, "nginx did not come up"
                time.sleep(0.05)
        yield Door(seen, nginx, password, front, ports, doors, server)
    finally:
        nginx.send_signal(signal.SIGQUIT)
        nginx.wait(timeout=10)
        server.shutdown()
        server.server_close()
        for stand_in in stand_ins:
            stand_in.close()


@needs_nginx
@needs_root
def test_front_door_gives_no_more_than_the_login(tmp_path: Path) -> None:
    with front_door(tmp_path) as door:
        request, seen, demo = door.request, door.seen, door.doors["demo"]
        # No login: the farm page, a printer's origin, a camera are refused, and nothing reaches an OctoPrint.
        assert request("GET", "/", {"Accept": "text/html"}).status == 303
        browser = request("GET", "/", {"Accept": "text/html"}, port=demo)
        assert browser.status == 303
        assert browser.getheader("Location") == f"http://127.0.0.1:{door.front}/login?next=%2Fopen%2Fdemo"
        assert request("GET", "/api/version", port=demo).status == 401
        assert request("GET", "/cam/cam1/snapshot").status == 401
        # A key of one's own is no login for a camera: its streamer checks none; the printer's
        # OctoPrint is asked, and it knows no such key.
        for port in (door.front, door.doors["ender-3"]):
            assert request("GET", "/cam/cam1/snapshot", {"X-Api-Key": "ANYTHING"}, port=port).status == 401
            assert request("GET", "/cam/cam1/stream?apikey=ANYTHING", port=port).status == 401
            assert request("GET", "/cam/cam1/snapshot", {"Authorization": "Bearer ANYTHING"}, port=port).status == 401
        assert all(r["target"] == "/api/currentuser" for r in seen.requests), "only OctoPrint was asked"
        # Forged identities: a remote-user header, a made-up cookie, the web service's own answers.
        forged = {
            "X-Remote-User": "admin",
            "Remote-User": "admin",
            "X-Forwarded-User": "admin",
            "X-Octobrix-Login": "farm",
            "X-Octobrix-Printer": "demo",
            "Cookie": f"{auth.COOKIE}=farm|9999999999|00",
        }
        assert request("GET", "/api/version", forged, port=demo).status == 401
        assert request("GET", "/api/version", forged).status == 401, "the farm's origin has no printer in it"
        asked = len(seen.requests)
        # An old link to /NAME/ on the farm's origin goes on to the printer's own, method and all.
        moved = request("POST", "/demo/api/files/local?x=1", {})
        assert moved.status == 308 and moved.getheader("Location") == f"http://127.0.0.1:{demo}/api/files/local?x=1"
        assert len(seen.requests) == asked, "nothing reached an OctoPrint without a login"
        # A wrong password gets no cookie.
        wrong = urllib.parse.urlencode({"username": "farm", "password": "nope"}).encode()
        bad = request("POST", "/login", {"Content-Type": "application/x-www-form-urlencoded"}, wrong)
        assert bad.status == 401 and bad.getheader("Set-Cookie") is None

        # A slicer with its own key: passed on as it is, and the camera opens for it (OctoPrint says so).
        posted = request("POST", "/api/files/local", {"X-Api-Key": SLICER_KEY, **forged}, b"x" * 10, port=demo)
        assert posted.status == 200
        got = seen.last()["headers"]
        assert isinstance(got, dict)
        assert got["x-api-key"] == SLICER_KEY
        assert not {"x-remote-user", "remote-user", "x-forwarded-user", "x-octobrix-login"} & set(got)
        assert "cookie" not in got, "the farm's cookie never reaches a printer"
        ender = door.doors["ender-3"]
        assert request("GET", "/cam/cam1/snapshot", {"X-Api-Key": SLICER_KEY}, port=ender).status == 200
        assert seen.last()["port"] == door.ports["cam1"] and seen.last()["target"] == "/snapshot"
        request("GET", "/cam/cam1/snapshot", {"X-Api-Key": SLICER_KEY}, port=demo)
        assert seen.last()["port"] == door.ports["demo"], "a printer's origin has only its own camera"
        # What OctoPrint authenticates itself passes without the farm login: the app-keys workflow
        # and the push socket (its client logs in after the handshake).
        for path in ("/plugin/appkeys/probe", "/sockjs/info"):
            assert request("GET", path, port=demo).status == 200, path
            assert seen.last()["port"] == door.ports["demo"] and seen.last()["target"] == path

        # Logged in (IPv4 and IPv6 alike): no identity is injected; only that OctoPrint's own cookies reach it.
        for host in ("127.0.0.1", "::1"):
            cookie = door.log_in(host)
            jar = f"{cookie}; session_P{ender}=ENDERS; session_P{demo}=DEMOS; csrf_token_P{demo}=C; other=1"
            headers = {"Cookie": jar, "X-Remote-User": "admin", "X-Forwarded-For": "6.6.6.6"}
            assert request("GET", "/api/version", headers, host=host, port=demo).status == 200
            reached = seen.last()
            assert reached["port"] == door.ports["demo"] and reached["target"] == "/api/version"
            got = reached["headers"]
            assert isinstance(got, dict)
            assert "x-api-key" not in got, "OctoPrint logs its users in itself"
            assert got["cookie"] == f"session_P{demo}=DEMOS; csrf_token_P{demo}=C;", got["cookie"]
            assert got["x-forwarded-host"].endswith(f":{demo}") and got["x-scheme"] == "http"
            assert got["x-forwarded-for"] in ("127.0.0.1", "::1"), "the client's own X-Forwarded-For is not passed on"
            assert "x-remote-user" not in got and not got.get("x-script-name")
            assert request("GET", "/cam/cam1/snapshot", {"Cookie": cookie}, host=host).status == 200

        # Another printer's page (another origin) posting with the user's cookies is refused; its own passes.
        cross = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{ender}"}
        assert request("POST", "/api/job", cross, b"{}", port=demo).status == 401
        same = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{demo}", "Host": f"127.0.0.1:{demo}"}
        assert request("POST", "/api/job", same, b"{}", port=demo).status == 200
        # ... and the farm's own interface refuses a printer's page.
        add = request("POST", "/api/add", {"Cookie": cookie, "Origin": f"http://127.0.0.1:{demo}"}, b"{}")
        assert add.status == 403


@needs_nginx
@needs_root
def test_the_farm_login_opens_each_printer_as_its_own_octoprint_session(tmp_path: Path) -> None:
    with front_door(tmp_path) as door:
        request, seen, demo = door.request, door.seen, door.doors["demo"]
        cookie = door.log_in()
        opened = request("GET", "/open/demo", {"Cookie": cookie})
        assert opened.status == 303
        target = urllib.parse.urlsplit(opened.getheader("Location") or "")
        assert (target.hostname, target.port, target.path) == ("127.0.0.1", demo, "/_octobrix/sso")
        signed_on = request("GET", f"{target.path}?{target.query}", {"Cookie": cookie}, port=demo)
        assert signed_on.status == 303 and signed_on.getheader("Location") == "/"
        set_cookies = signed_on.headers.get_all("Set-Cookie") or []
        sessions = [line for line in set_cookies if line.startswith(f"session_P{demo}=")]
        assert len(sessions) == 1 and sessions[0].startswith(f"session_P{demo}=OCTOSESSION"), set_cookies
        login = next(r for r in seen.requests if r["target"] == "/api/login")
        assert login["port"] == door.ports["demo"]
        # The ticket is spent: the same link again signs on no one.
        again = request("GET", f"{target.path}?{target.query}", {"Cookie": cookie}, port=demo)
        assert again.status == 303 and again.getheader("Location") == f"http://127.0.0.1:{door.front}/open/demo"
        # Not for another session, nor another printer.
        other = request("GET", "/open/demo", {"Cookie": door.log_in()}).getheader("Location") or ""
        stolen = urllib.parse.urlsplit(other)
        wrong_printer = request("GET", f"{stolen.path}?{stolen.query}", {"Cookie": cookie}, port=door.doors["ender-3"])
        assert not wrong_printer.headers.get_all("Set-Cookie")
        assert (
            request("GET", f"{stolen.path}?{stolen.query}", {"Cookie": cookie}, port=demo).getheader("Set-Cookie")
            is None
        ), "a ticket of another farm session"

        # That OctoPrint session opens the printer's camera by itself (OctoPrint says it may).
        octoprint_cookie = f"session_P{door.doors['ender-3']}=OCTOSESSION"
        ender = door.doors["ender-3"]
        assert request("GET", "/cam/cam1/snapshot", {"Cookie": octoprint_cookie}, port=ender).status == 200

        # Logging out of the farm logs out the OctoPrint session it opened.
        origin = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{door.front}", "Host": f"127.0.0.1:{door.front}"}
        assert request("POST", "/logout", origin).status == 303
        logout = seen.last()
        assert logout["target"] == "/api/logout" and logout["port"] == door.ports["demo"]
        assert isinstance(logout["headers"], dict) and f"session_P{demo}=OCTOSESSION" in logout["headers"]["cookie"]
        assert request("GET", "/api/version", {"Cookie": cookie}, port=demo).status == 401


@needs_nginx
@needs_root
def test_uploads_stream_and_websockets_survive_a_reload(tmp_path: Path) -> None:
    with front_door(tmp_path) as door:
        request, seen, nginx = door.request, door.seen, door.nginx
        cookie = door.log_in()
        # 600 MB (more than the 500 MB docs/promises.md promises), sent in chunks: nginx passes it on
        # as it comes (no body limit, nothing spooled to its temp folder).
        size, chunk = 600 * 1024**2, b"\0" * (1 << 20)
        conn = http.client.HTTPConnection("127.0.0.1", door.doors["demo"], timeout=120)
        conn.putrequest("POST", "/api/files/local")
        conn.putheader("Cookie", cookie)
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        spooled = 0
        for i in range(size // len(chunk)):
            conn.send(chunk)
            if i == 300:
                spooled = sum(f.stat().st_size for f in (tmp_path / "body").rglob("*") if f.is_file())
        assert conn.getresponse().status == 200
        assert seen.last()["body"] == size
        assert spooled == 0, "nginx spooled the upload instead of streaming it"

        # A websocket through the front door, kept open across a reload with a new printer.
        ws = socket.create_connection(("127.0.0.1", door.doors["demo"]), timeout=10)
        ws.sendall(
            f"GET /sockjs/websocket HTTP/1.1\r\nHost: 127.0.0.1:{door.doors['demo']}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Cookie: {cookie}\r\n\r\n".encode()
        )
        assert ws.recv(4096).startswith(b"HTTP/1.1 101")
        upgrade = seen.last()["headers"]
        assert isinstance(upgrade, dict) and upgrade["upgrade"] == "websocket"
        ws.sendall(b"before")
        assert ws.recv(100) == b"before"
        stand_in = octoprint_stand_in(seen)
        newbie = free_port()
        grown = door_config(door.front, door.ports, door.doors) + (
            f"[printers.newbie]\nvirtual = true\nport = {stand_in.getsockname()[1]}\ndoor_port = {newbie}\n"
        )
        grown_config = parse_config(grown, "x")
        (tmp_path / "octobrix.conf").write_text(site_for_test(render_frontdoor(grown_config), tmp_path))
        # apply restarts the web service with the new config, as it reloads nginx.
        door.server.context = dataclasses.replace(door.server.context, config=grown_config)
        try:
            nginx.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while _answers(request, newbie, cookie) != 200:
                assert time.monotonic() < deadline, "the new printer never answered after the reload"
                time.sleep(0.1)
            ws.sendall(b"after")
            assert ws.recv(100) == b"after", "the open websocket survived the reload"
            assert nginx.poll() is None
        finally:
            stand_in.close()
            ws.close()


def _answers(request: Any, port: int, cookie: str) -> int:
    try:
        return int(request("GET", "/api/job", {"Cookie": cookie}, port=port).status)
    except ConnectionRefusedError:
        return 0


def test_session_cookies_cannot_be_forged_or_outlive_their_time() -> None:
    login = auth.make_login("farm", "pw")
    expires = auth.session_expiry(1000.0)
    cookie = auth.issue_cookie(login, "SESSION", expires)
    assert auth.cookie_session(login, cookie, now=1001.0) == "SESSION"
    assert auth.cookie_session(login, cookie, now=1000.0 + auth.SESSION_SECONDS + 1) is None, "expired"
    user, _, session, signature = cookie.split("|")
    assert auth.cookie_session(login, f"{user}|{expires + 10**6}|{session}|{signature}", now=1001.0) is None
    assert auth.cookie_session(login, f"admin|{expires}|{session}|{signature}", now=1001.0) is None, "another user"
    assert auth.cookie_session(login, f"{user}|{expires}|OTHER|{signature}", now=1001.0) is None, "another session"
    assert auth.cookie_session(login, f"{user}|{expires}|{signature}", now=1001.0) is None, "a cookie of before"
    other = auth.make_login("farm", "pw")
    assert auth.cookie_session(other, cookie, now=1001.0) is None, "a new secret logs everyone out"
    assert auth.check_password("pw", login.password_hash) and not auth.check_password("pW", login.password_hash)
    assert "pw" not in login.to_json(), "the web service's copy holds no clear password"


def test_secrets_are_made_once_private_and_follow_the_printers(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    for name in ("demo", "ender-3"):
        path = layout.path(credentials_path(name))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"username": "admin", "password": "p", "api_key": f"KEY-{name}"}))
    web = layout.path(web_key_path("demo"))
    web.parent.mkdir(parents=True, exist_ok=True)
    web.write_text(json.dumps({"password": "w", "api_key": "READONLY-demo"}))
    # The admin-key maps of the single-origin front door, left by an older octobrix.
    old = layout.path(secrets.OLD_KEY_MAP_DIR)
    old.mkdir(parents=True)
    (old / "demo.map").write_text('farm "KEY-demo";\n')

    first = secrets.sync(layout, ["demo", "ender-3"])
    assert first.nginx_changed and first.web_changed
    assert not old.exists(), "no admin key stays where nginx once read it"
    farm = read_farm_credentials(layout)
    assert farm is not None and farm.username == "farm" and len(farm.password) >= 16
    for made in (secrets.WEB_LOGIN, secrets.WEB_PRINTER_LOGIN, secrets.WEB_KEYS):
        assert layout.path(made).stat().st_mode & 0o077 == 0, made
    assert json.loads(layout.path(secrets.WEB_KEYS).read_text()) == {"demo": "READONLY-demo"}, "never an admin key"
    login = auth.read_login(layout.path(secrets.WEB_LOGIN))
    assert auth.check_password(farm.password, login.password_hash)
    printer_login = json.loads(layout.path(secrets.WEB_PRINTER_LOGIN).read_text())
    assert printer_login == {"username": farm.username, "password": farm.password}

    again = secrets.sync(layout, ["demo", "ender-3"])
    assert not again.nginx_changed and not again.web_changed, "a second apply changes nothing"
    assert read_farm_credentials(layout) == farm, "the farm login is made once"


def test_without_direct_ports_the_front_door_is_the_one_way_in() -> None:
    """`[frontdoor] direct_ports = false`: every OctoPrint and streamer on this computer only, nginx
    (on `[octobrix] listen`) in front of them; the default leaves the direct ports where they were."""
    closed = parse_config(FARM.replace(f"port = {FRONT}\n", f"port = {FRONT}\ndirect_ports = false\n", 1), "x")
    files = render_all(closed)
    units = {str(path): rendered.text for path, rendered in files.items() if "octoprint@" in str(path)}
    streams = {str(path): rendered.text for path, rendered in files.items() if "ustreamer@" in str(path)}
    assert units and all("OCTOBRIX_LISTEN=127.0.0.1\n" in text for text in units.values()), units
    assert streams and all("OCTOBRIX_LISTEN=127.0.0.1\n" in text for text in streams.values()), streams
    site = files[NGINX_SITE].text
    assert f"listen [::]:{FRONT} default_server;" in site and f"proxy_pass http://127.0.0.1:{DEMO};" in site
    assert octoprint_seed(closed, "ender-3")["plugins"]["classicwebcam"]["snapshot"].startswith("http://127.0.0.1:")
    opened = render_all(parse_config(FARM, "x"))
    assert all("OCTOBRIX_LISTEN=::\n" in r.text for p, r in opened.items() if "octoprint@" in str(p))
    # A streamer checks no login: with the front door on, it is behind it whatever direct_ports says.
    assert all("OCTOBRIX_LISTEN=127.0.0.1\n" in r.text for p, r in opened.items() if "ustreamer@" in str(p))
    off = render_all(parse_config(FARM.replace(f"port = {FRONT}\n", f"port = {FRONT}\nenabled = false\n", 1), "x"))
    assert all("OCTOBRIX_LISTEN=::\n" in r.text for p, r in off.items() if "ustreamer@" in str(p))


@needs_nginx
@needs_root
def test_over_https_plain_http_is_sent_there_and_cookies_are_secure(tmp_path: Path) -> None:
    https = free_port()
    with front_door(tmp_path, https_port=https) as door:
        request, demo = door.request, door.doors["demo"]
        # Plain HTTP: the farm's port and a printer's door both send the browser to HTTPS, path and all.
        farm = request("GET", "/login?next=%2Fopen%2Fdemo")
        assert (farm.status, farm.getheader("Location")) == (
            308,
            f"https://127.0.0.1:{https}/login?next=%2Fopen%2Fdemo",
        )
        printer = request("POST", "/api/files/local?x=1", port=demo)
        assert (printer.status, printer.getheader("Location")) == (308, f"https://127.0.0.1:{demo}/api/files/local?x=1")
        # The certificate is the one `credentials` names by its fingerprint.
        made = tls.read_certificate(door.server.context.config, Layout(tmp_path))
        assert made is not None
        for port in (https, demo):
            pem = ssl.get_server_certificate(("127.0.0.1", port))
            assert tls.fingerprint_of(pem) == made.fingerprint, port
        # The farm login over HTTPS: its cookie Secure; single sign-on to the printer's HTTPS origin.
        form = urllib.parse.urlencode({"username": "farm", "password": door.password, "next": "/open/demo"}).encode()
        login = request(
            "POST", "/login", {"Content-Type": "application/x-www-form-urlencoded"}, form, port=https, tls=True
        )
        cookie_line = login.getheader("Set-Cookie") or ""
        assert login.status == 303 and "; Secure" in cookie_line, cookie_line
        cookie = cookie_line.split(";", 1)[0]
        opened = request("GET", "/open/demo", {"Cookie": cookie}, port=https, tls=True)
        target = urllib.parse.urlsplit(opened.getheader("Location") or "")
        assert (target.scheme, target.port, target.path) == ("https", demo, "/_octobrix/sso"), target
        signed_on = request("GET", f"{target.path}?{target.query}", {"Cookie": cookie}, port=demo, tls=True)
        assert signed_on.status == 303
        login_seen = next(r for r in door.seen.requests if r["target"] == "/api/login")
        assert isinstance(login_seen["headers"], dict)
        assert login_seen["headers"]["x-forwarded-proto"] == "https", "OctoPrint marks its own cookies Secure"
        reached = request("GET", "/api/version", {"Cookie": cookie}, port=demo, tls=True)
        assert reached.status == 200 and door.seen.last()["headers"]["x-forwarded-proto"] == "https"  # type: ignore[index]


def test_the_certificate_is_renewed_a_month_before_it_ends(tmp_path: Path) -> None:
    config = parse_config(FARM.replace(f"port = {FRONT}\n", f"port = {FRONT}\nhttps = true\n", 1), "x")
    layout = Layout(tmp_path)
    assert tls.ensure_certificate(config, layout), "made on the first apply"
    first = tls.read_certificate(config, layout)
    assert first is not None and not tls.ensure_certificate(config, layout), "kept while it is good"
    key = layout.path(paths.TLS_KEY)
    assert key.stat().st_mode & 0o077 == 0 and layout.path(paths.TLS_DIR).stat().st_mode & 0o077 == 0
    assert (first.expires - datetime.now(UTC)).days >= tls.VALID_DAYS - 1
    month_before = first.expires.timestamp() - 29 * 24 * 3600
    assert tls.ensure_certificate(config, layout, now=month_before), "renewed within its last month"
    renewed = tls.read_certificate(config, layout)
    assert renewed is not None and renewed.fingerprint != first.fingerprint
    # The user's own certificate is theirs: octobrix only checks that it is there.
    own = parse_config(
        FARM.replace(f"port = {FRONT}\n", f'port = {FRONT}\nhttps = true\ncertificate = "/nope.pem"\n'
                     'certificate_key = "/nope.key"\n', 1), "x"
    )  # fmt: skip
    with pytest.raises(OctobrixError, match=r"frontdoor\.certificate: /nope\.pem does not exist"):
        tls.ensure_certificate(own, layout)
