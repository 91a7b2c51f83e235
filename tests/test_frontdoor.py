"""The front door: the nginx config octobrix renders, checked and run by the real nginx.

nginx (Debian's, as the .deb and install.sh install it) runs here as a plain process on a free port
with the rendered site, in front of the real web service (on a unix socket) and small
loopback stand-ins for OctoPrint that report what reached them. The lab test
(tests/lab/test_frontdoor.py) does the same with real OctoPrints under systemd.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from octobrixd.config.model import parse_config
from octobrixd.errors import ConfigError
from octobrixd.frontdoor import auth, secrets
from octobrixd.instances.credentials import credentials_path, web_key_path
from octobrixd.render.nginx import KEY_MAP_DIR, NGINX_SITE, WEB_SOCKET, key_map_entry, render_frontdoor
from octobrixd.render.octoprint import octoprint_seed
from octobrixd.render.tree import render_all
from octobrixd.system.paths import Layout
from octobrixd.web.context import WebContext
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
KEYS = {"demo": "DEMOADMINKEY0000", "ender-3": "ENDERADMINKEY000"}
SLICER_KEY = "SLICERKEY"
# The keys the stand-in OctoPrints accept: their admin keys and a slicer's application key.
OCTOPRINT_KNOWS = frozenset({*KEYS.values(), SLICER_KEY})


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
    """The rendered site with its absolute paths (secrets, the web socket) moved into prefix."""
    return text.replace(f"/{KEY_MAP_DIR}/", f"{prefix}/keys/").replace(WEB_SOCKET, f"{prefix}/web.sock")


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
    (tmp_path / "keys").mkdir()
    # One printer with its key made, the others not yet: both must load.
    (tmp_path / "keys" / f"{sorted(config.printers)[0]}.map").write_text(key_map_entry("K" * 32))
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
            # Like OctoPrint: a key it does not know is refused (no key: anonymous, left to the test).
            bearer = headers.get("authorization", "").removeprefix("Bearer ") or None
            query_key = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query).get("apikey", [None])[0]
            key = headers.get("x-api-key") or bearer or query_key
            status = b"200 OK" if key is None or key in OCTOPRINT_KNOWS else b"403 Forbidden"
            body = json.dumps({"ok": status.startswith(b"200")}).encode()
            conn.sendall(
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Type: application/json\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )

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

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        host: str = "127.0.0.1",
    ) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection(host, self.front, timeout=30)
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response

    def log_in(self, host: str = "127.0.0.1") -> str:
        form = urllib.parse.urlencode({"username": "farm", "password": self.password, "next": "/demo/"}).encode()
        response = self.request("POST", "/login", {"Content-Type": "application/x-www-form-urlencoded"}, form, host)
        assert response.status == 303 and response.getheader("Location") == "/demo/"
        cookie = response.getheader("Set-Cookie") or ""
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
        return cookie.split(";", 1)[0]


@contextlib.contextmanager
def front_door(tmp_path: Path) -> Iterator[Door]:
    """FARM's front door on free ports: the real web service, stand-in OctoPrints and the real nginx."""
    seen = Seen()
    stand_ins = [octoprint_stand_in(seen) for _ in range(4)]
    ports = dict(zip(("demo", "ender-3", "unkeyed", "cam1"), (s.getsockname()[1] for s in stand_ins), strict=True))
    front = free_port()
    config = parse_config(farm_config(front, ports), "/etc/octobrix.toml")
    password = "correct horse battery"  # noqa: S105 - the test's own farm login
    login = auth.make_login("farm", password)
    (tmp_path / "keys").mkdir(exist_ok=True)
    for name, key in KEYS.items():
        (tmp_path / "keys" / f"{name}.map").write_text(key_map_entry(key))
    listener = unix_listener(tmp_path / "web.sock")
    server = FarmServer(WebContext(config=config, login=login), listener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    result = nginx_check(tmp_path, render_frontdoor(config))
    assert result.returncode == 0, result.stderr
    nginx = subprocess.Popen(
        [NGINX, "-e", "stderr", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", front), timeout=1):
                break
            assert time.monotonic() < deadline and nginx.poll() is None, "nginx did not come up"
            time.sleep(0.05)
        yield Door(seen, nginx, password, front, ports)
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
        request, seen = door.request, door.seen
        # No login: the overview, a printer, a camera are refused, and nothing reaches an OctoPrint.
        assert request("GET", "/", {"Accept": "text/html"}).status == 303
        browser = request("GET", "/demo/", {"Accept": "text/html"})
        assert browser.status == 303 and browser.getheader("Location") == "/login?next=%2Fdemo%2F"
        assert request("GET", "/demo/api/version").status == 401
        assert request("GET", "/cam/cam1/snapshot").status == 401
        # A key of one's own is no login for a camera: its streamer checks none (OctoPrint checks a slicer's).
        assert request("GET", "/cam/cam1/snapshot", {"X-Api-Key": "ANYTHING"}).status == 401
        assert request("GET", "/cam/cam1/stream?apikey=ANYTHING").status == 401
        assert request("GET", "/cam/cam1/snapshot", {"Authorization": "Bearer ANYTHING"}).status == 401
        # Forged identities: a remote-user header, a made-up cookie, the web service's own answer.
        forged = {
            "X-Remote-User": "admin",
            "Remote-User": "admin",
            "X-Forwarded-User": "admin",
            "X-Octobrix-Login": "farm",
            "Cookie": f"{auth.COOKIE}=farm|9999999999|00",
        }
        assert request("GET", "/demo/api/version", forged).status == 401
        assert request("GET", "/demo", {}).status == 301
        assert seen.requests == [], "nothing reached an OctoPrint without a login"
        # A wrong password gets no cookie.
        wrong = urllib.parse.urlencode({"username": "farm", "password": "nope"}).encode()
        bad = request("POST", "/login", {"Content-Type": "application/x-www-form-urlencoded"}, wrong)
        assert bad.status == 401 and bad.getheader("Set-Cookie") is None

        # A slicer with its own key: passed on as it is, never swapped for the admin key.
        assert request("POST", "/demo/api/files/local", {"X-Api-Key": SLICER_KEY, **forged}, b"x" * 10).status == 200
        got = seen.last()["headers"]
        assert isinstance(got, dict)
        assert got["x-api-key"] == SLICER_KEY
        assert not {"x-remote-user", "remote-user", "x-forwarded-user", "x-octobrix-login"} & set(got)

        # Logged in (IPv4 and IPv6 alike): each OctoPrint gets its own key, set by nginx.
        for host in ("127.0.0.1", "::1"):
            cookie = door.log_in(host)
            headers = {"Cookie": cookie, "X-Remote-User": "admin", "X-Forwarded-For": "6.6.6.6", "X-Api-Key": "MINE"}
            assert request("GET", "/demo/api/version", headers, host=host).status == 200
            demo = seen.last()
            assert demo["port"] == door.ports["demo"] and demo["target"] == "/api/version"
            got = demo["headers"]
            assert isinstance(got, dict)
            assert got["x-api-key"] == KEYS["demo"]
            assert got["x-script-name"] == "/demo" and got["x-scheme"] == "http"
            assert got["x-forwarded-for"] in ("127.0.0.1", "::1"), "the client's own X-Forwarded-For is not passed on"
            assert "x-remote-user" not in got
            assert request("GET", "/ender-3/api/job", {"Cookie": cookie}, host=host).status == 200
            ender = seen.last()
            assert ender["port"] == door.ports["ender-3"] and isinstance(ender["headers"], dict)
            assert ender["headers"]["x-api-key"] == KEYS["ender-3"], "a dash in the name, its own key"
            assert ender["headers"]["x-script-name"] == "/ender-3"
            assert request("GET", "/unkeyed/api/job", {"Cookie": cookie}, host=host).status == 200
            unkeyed = seen.last()["headers"]
            assert isinstance(unkeyed, dict) and "x-api-key" not in unkeyed, "no key made yet: none, not another's"
            assert request("GET", "/cam/cam1/snapshot", {"Cookie": cookie}, host=host).status == 200
            assert seen.last()["port"] == door.ports["cam1"] and seen.last()["target"] == "/snapshot"

        # Another site's page posting with the user's cookie gets no key: SameSite aside, Origin says so.
        cross = {"Cookie": cookie, "Origin": "http://evil.example"}
        assert request("POST", "/demo/api/job", cross, b"{}").status == 401
        same = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{door.front}", "Host": f"127.0.0.1:{door.front}"}
        assert request("POST", "/demo/api/job", same, b"{}").status == 200


@needs_nginx
@needs_root
def test_uploads_stream_and_websockets_survive_a_reload(tmp_path: Path) -> None:
    with front_door(tmp_path) as door:
        request, seen, nginx = door.request, door.seen, door.nginx
        cookie = door.log_in()
        # 600 MB (more than the 500 MB docs/promises.md promises), sent in chunks: nginx passes it on
        # as it comes (no body limit, nothing spooled to its temp folder).
        size, chunk = 600 * 1024**2, b"\0" * (1 << 20)
        conn = http.client.HTTPConnection("127.0.0.1", door.front, timeout=120)
        conn.putrequest("POST", "/demo/api/files/local")
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
        ws = socket.create_connection(("127.0.0.1", door.front), timeout=10)
        ws.sendall(
            f"GET /demo/sockjs/websocket HTTP/1.1\r\nHost: 127.0.0.1:{door.front}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Cookie: {cookie}\r\n\r\n".encode()
        )
        assert ws.recv(4096).startswith(b"HTTP/1.1 101")
        upgrade = seen.last()["headers"]
        assert isinstance(upgrade, dict) and upgrade["x-api-key"] == KEYS["demo"]
        ws.sendall(b"before")
        assert ws.recv(100) == b"before"
        stand_in = octoprint_stand_in(seen)
        grown = farm_config(door.front, door.ports) + (
            f"[printers.newbie]\nvirtual = true\nport = {stand_in.getsockname()[1]}\n"
        )
        (tmp_path / "octobrix.conf").write_text(site_for_test(render_frontdoor(parse_config(grown, "x")), tmp_path))
        try:
            nginx.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while request("GET", "/newbie/api/job", {"Cookie": cookie}).status != 200:
                assert time.monotonic() < deadline, "the new printer never answered after the reload"
                time.sleep(0.1)
            ws.sendall(b"after")
            assert ws.recv(100) == b"after", "the open websocket survived the reload"
            assert nginx.poll() is None
        finally:
            stand_in.close()
            ws.close()


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

    first = secrets.sync(layout, ["demo", "ender-3"])
    assert first.nginx_changed and first.web_changed
    farm = secrets.read_farm_credentials(layout)
    assert farm is not None and farm.username == "farm" and len(farm.password) >= 16
    maps = {p.name: p for p in layout.path(KEY_MAP_DIR).iterdir()}
    assert maps["ender-3.map"].read_text() == key_map_entry("KEY-ender-3")
    assert all(p.stat().st_mode & 0o077 == 0 for p in [*maps.values(), layout.path(secrets.WEB_LOGIN)])
    assert json.loads(layout.path(secrets.WEB_KEYS).read_text()) == {"demo": "READONLY-demo"}, "never an admin key"
    login = auth.read_login(layout.path(secrets.WEB_LOGIN))
    assert auth.check_password(farm.password, login.password_hash)

    again = secrets.sync(layout, ["demo", "ender-3"])
    assert not again.nginx_changed and not again.web_changed, "a second apply changes nothing"
    assert secrets.read_farm_credentials(layout) == farm, "the farm login is made once"

    gone = secrets.sync(layout, ["demo"])
    assert gone.nginx_changed and not layout.path(KEY_MAP_DIR / "ender-3.map").exists()
