"""The farm login as a browser and an attacker meet it: logging out ends a session for good, only this
site's own pages log out, after the login only a path of this site, and wrong passwords are limited.

The real web service on a unix socket, asked as nginx asks it (X-Real-IP names the client); the
limit's clock is the test's, so a minute passes without waiting for it. The last test runs the
whole front door (real nginx) to replay a logged-out cookie on a camera and a printer.
"""

from __future__ import annotations

import contextlib
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from octobrixd.config.model import parse_config
from octobrixd.frontdoor import auth
from octobrixd.frontdoor.sessions import SessionStore
from octobrixd.system.paths import Layout
from octobrixd.urls import AUTH_CAMERA, AUTH_PRINTER
from octobrixd.web.context import WebContext
from octobrixd.web.limits import LoginLimiter
from octobrixd.web.server import FarmServer, unix_listener
from tests.conftest import UnixHTTPConnection
from tests.test_frontdoor import FARM, front_door, needs_nginx, needs_root, nginx_installed  # noqa: F401 - fixture

PASSWORD = "correct horse battery"  # noqa: S105 - the test's own farm login
HOST = "farm.example:8080"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Web:
    socket: Path
    clock: Clock
    context: WebContext

    def ask(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None,
        client: str = "192.0.2.10",
    ) -> Reply:  # fmt: skip
        conn = UnixHTTPConnection(self.socket)
        # As nginx sends it: the Host the browser used, the client's address in X-Real-IP.
        conn.request(method, path, body=body, headers={"Host": HOST, "X-Real-IP": client, **(headers or {})})
        response = conn.getresponse()
        reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        conn.close()
        return reply

    def log_in(self, password: str = PASSWORD, next_path: str | None = None, client: str = "192.0.2.10") -> Reply:
        fields = {"username": "farm", "password": password, **({"next": next_path} if next_path is not None else {})}
        return self.ask("POST", "/login", FORM, urllib.parse.urlencode(fields).encode(), client)


def cookie_of(reply: Reply) -> str:
    assert reply.status == 303, reply
    return reply.headers["set-cookie"].split(";", 1)[0]


@contextlib.contextmanager
def web_service(
    tmp_path: Path, sessions_file: Path | None = None, login: auth.FarmLogin | None = None
) -> Iterator[Web]:
    clock = Clock()
    context = WebContext(
        config=parse_config(FARM, "/etc/octobrix.toml"),
        login=login or auth.make_login("farm", PASSWORD),
        layout=Layout(tmp_path),
        sessions=SessionStore(sessions_file),
        limiter=LoginLimiter(clock=clock),
    )
    path = tmp_path / f"web-{id(context)}.sock"
    server = FarmServer(context, unix_listener(path))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Web(path, clock, context)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    with web_service(tmp_path) as running:
        yield running


def open_to(web: Web, cookie: str) -> dict[str, int]:
    """What a cookie opens: the farm's API, a printer and a camera (as nginx asks about them)."""
    return {
        "farm": web.ask("GET", "/api/found", {"Cookie": cookie}).status,
        # nginx names the printer whose origin the request came to.
        "printer": web.ask("GET", AUTH_PRINTER, {"Cookie": cookie, "X-Octobrix-Printer": "demo"}).status,
        "camera": web.ask("GET", AUTH_CAMERA, {"Cookie": cookie}).status,
    }


LOGGED_IN = {"farm": 200, "printer": 204, "camera": 204}
LOGGED_OUT = {"farm": 401, "printer": 401, "camera": 401}


def test_a_cookie_replayed_after_logout_opens_nothing_even_after_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    sessions = state / "sessions.json"
    with web_service(tmp_path, sessions) as web:
        laptop, phone = cookie_of(web.log_in()), cookie_of(web.log_in())
        assert open_to(web, laptop) == open_to(web, phone) == LOGGED_IN
        out = web.ask("POST", "/logout", {"Cookie": laptop, "Origin": f"http://{HOST}"})
        assert out.status == 303 and out.headers["location"] == "/login"
        assert "Max-Age=0" in out.headers["set-cookie"]
        assert open_to(web, laptop) == LOGGED_OUT, "the logged-out cookie, replayed"
        assert open_to(web, phone) == LOGGED_IN, "another browser's session goes on"
    # The record is the service's own, holds no cookie, and outlives a restart of the service.
    assert sessions.stat().st_mode & 0o777 == 0o600
    text = sessions.read_text()
    assert phone.split("|")[2] not in text and laptop.split("|")[2] not in text
    with web_service(tmp_path, sessions, web.context.login) as again:
        assert open_to(again, phone) == LOGGED_IN
        assert open_to(again, laptop) == LOGGED_OUT


@pytest.mark.parametrize(
    ("how", "headers"),
    [
        ("another site's form", {"Origin": "http://evil.example"}),
        ("a sandboxed page", {"Origin": "null"}),
        ("another site's link, no Origin", {"Referer": "http://evil.example/page"}),
        ("neither Origin nor Referer", {}),
        ("a look-alike host", {"Origin": f"http://{HOST}.evil.example"}),
    ],
)
def test_only_this_sites_own_page_logs_out(web: Web, how: str, headers: dict[str, str]) -> None:
    cookie = cookie_of(web.log_in())
    refused = web.ask("POST", "/logout", {"Cookie": cookie, **headers})
    assert refused.status == 403, how
    assert refused.body == b"not logged out: log out with the Log out button of the farm's own page\n"
    assert "set-cookie" not in refused.headers
    # A GET (a link, an <img> on another site) shows the button and logs nobody out.
    page = web.ask("GET", "/logout", {"Cookie": cookie, **headers})
    assert page.status == 200 and b'<form method="post" action="/logout">' in page.body
    assert "set-cookie" not in page.headers
    assert open_to(web, cookie) == LOGGED_IN, how
    # The farm's own page (a browser that sends only Referer, too) logs out.
    own = web.ask("POST", "/logout", {"Cookie": cookie, "Referer": f"http://{HOST}/"})
    assert own.status == 303 and open_to(web, cookie) == LOGGED_OUT


def test_the_farm_page_logs_out_with_a_post() -> None:
    page = (Path(__file__).parents[1] / "octobrixd/web/static/index.html").read_text()
    assert '<form method="post" action="logout">' in page and 'href="logout"' not in page


@pytest.mark.parametrize(
    ("asked", "goes_to"),
    [
        ("/demo/", "/demo/"),
        ("/cam/cam1/stream?x=1", "/cam/cam1/stream?x=1"),
        (None, "/"),
        ("", "/"),
        ("demo/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example/", "/"),
        ("\\\\evil.example/", "/"),
        ("/%09/evil.example/", "/"),
        ("/\t/evil.example/", "/"),
        ("/%2F/evil.example/", "/"),
        ("/%5Cevil.example/", "/"),
        (" //evil.example/", "/"),
        ("/demo/ x", "/"),
        ("/demo/\r\nSet-Cookie: x=1", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("http:/evil.example", "/"),
    ],
)
def test_after_login_only_a_path_of_this_site(web: Web, asked: str | None, goes_to: str) -> None:
    assert web.log_in(next_path=asked).headers["location"] == goes_to
    query = "" if asked is None else "?" + urllib.parse.urlencode({"next": asked})
    page = web.ask("GET", "/login" + query)
    assert page.status == 200 and f'name="next" value="{goes_to}"'.encode() in page.body


def wrong(web: Web, client: str = "192.0.2.10") -> Reply:
    return web.log_in(password="guess", client=client)  # noqa: S106 - a wrong one


def test_five_wrong_passwords_a_minute_then_429_saying_when(web: Web) -> None:
    for _ in range(5):
        assert wrong(web).status == 401
    refused = wrong(web)
    assert refused.status == 429 and refused.headers["retry-after"] == "60"
    assert b"Too many wrong passwords from your address: try again in 60 seconds." in refused.body
    # The right password is refused too while the limit holds: guessing learns nothing.
    right = web.log_in()
    assert right.status == 429 and "set-cookie" not in right.headers
    web.clock.now += 45
    assert b"try again in 15 seconds" in wrong(web).body
    # Another address has its own count.
    assert wrong(web, client="192.0.2.99").status == 401
    # An IPv6 client counts by its /64: a new address in the same /64 is the same client.
    for i in range(5):
        assert wrong(web, client=f"2001:db8:1:2::{i + 1}").status == 401
    assert wrong(web, client="2001:db8:1:2::ffff").status == 429
    assert wrong(web, client="2001:db8:1:3::1").status == 401
    # The minute over, the right password works (and the page it opens with it).
    web.clock.now += 15.5
    cookie = cookie_of(web.log_in())
    assert open_to(web, cookie) == LOGGED_IN


def test_wrong_passwords_sent_at_once_get_no_more_tries(web: Web) -> None:
    start = threading.Barrier(20)
    statuses: list[int] = []
    lock = threading.Lock()

    def guess() -> None:
        start.wait()
        status = wrong(web).status
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=guess) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [401] * 5 + [429] * 15
    web.clock.now += 61
    assert web.log_in().status == 303, "the right password after the minute"


@needs_nginx
@needs_root
def test_through_nginx_a_logged_out_cookie_opens_no_camera_or_printer(tmp_path: Path) -> None:
    with front_door(tmp_path) as door:
        cookie = door.log_in()
        assert door.request("GET", "/cam/cam1/snapshot", {"Cookie": cookie}).status == 200
        origin = {"Cookie": cookie, "Host": f"127.0.0.1:{door.front}"}
        # Another site's page posting to /logout, or a link to it: the session goes on.
        assert door.request("POST", "/logout", {**origin, "Origin": "http://evil.example"}).status == 403
        assert door.request("GET", "/logout", origin).status == 200
        demo = door.doors["demo"]
        assert door.request("GET", "/api/version", {"Cookie": cookie}, port=demo).status == 200
        out = door.request("POST", "/logout", {**origin, "Origin": f"http://127.0.0.1:{door.front}"})
        assert out.status == 303
        before = len(door.seen.requests)
        assert door.request("GET", "/cam/cam1/snapshot", {"Cookie": cookie}).status == 401
        assert door.request("GET", "/api/version", {"Cookie": cookie}, port=demo).status == 401
        assert door.request("GET", "/api/found", {"Cookie": cookie}).status == 401
        assert len(door.seen.requests) == before, "nothing reached a camera or an OctoPrint"
