"""The web service behind nginx: the farm login, nginx's auth check, and the overview's hooks.

A stdlib ThreadingHTTPServer keeps the service small (no framework to bundle, ~20 MB RSS). It
listens on the unix socket systemd passes it (octobrix-web.socket: only nginx's group may
connect), or, by hand for development, on a loopback TCP port.

Routes (nginx sends everything not under /NAME/ or /cam/NAME/ here):
  GET  /_octobrix/auth/printer, /_octobrix/auth/camera   nginx's auth_request (one per kind of
                         location; nginx keeps them internal): 204 + X-Octobrix-Login: farm|client, or 401
  GET  /login, POST /login (wrong passwords: limits.LoginLimiter per client address, then 429)
  POST /logout           ends the session on the server too (from this site only: Origin or Referer);
                         GET /logout is a page with the button, which logs nobody out
  GET  /                 static/index.html            (farm login required)
  GET  /static/PATH      files under static/          (farm login required)
  GET  /api/farm         overview.farm(context): JSON bytes (farm login required)
  GET  /metrics          metrics.scrape(context): Prometheus text ([frontdoor] metrics = true; the metrics
                         token as a bearer token, or the farm login)
  GET  /api/found        the devices octobrixd found that no entry binds (farm login required)
  POST /api/add, /api/remove   passed on to octobrixd's add interface (farm login, same origin)
"""

from __future__ import annotations

import html
import json
import logging
import mimetypes
import socket
import urllib.parse
from collections.abc import Sequence
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from octobrixd.adding import channel
from octobrixd.adding.found import FOUND_FILE
from octobrixd.cameras.streams import local_host
from octobrixd.errors import OctobrixError
from octobrixd.frontdoor import auth
from octobrixd.render.nginx import PRINTER_HEADER, REFUSED_HEADER
from octobrixd.system import loopback_http
from octobrixd.urls import AUTH_CAMERA, AUTH_PREFIX, AUTH_PRINTER, OPEN_PREFIX, SSO_PATH
from octobrixd.web import door, overview
from octobrixd.web.context import WebContext

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
LOGIN_HEADER = "X-Octobrix-Login"
METRICS_REFUSED = b"send the metrics token (`sudo octobrixctl credentials` shows it) as a bearer token\n"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# What the page may send octobrixd: nothing else of a posted body is passed on.
EDIT_FIELDS = {"/api/add": ("add", ("device", "name", "port", "printer")), "/api/remove": ("remove", ("kind", "name"))}

LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>octobrix farm: log in</title>
<style>body{{font-family:sans-serif;max-width:22rem;margin:4rem auto;padding:0 1rem}}
input,button{{font-size:1.1rem;width:100%;margin:.3rem 0;padding:.4rem;box-sizing:border-box}}
.error{{color:#b00}}</style></head>
<body><h1>octobrix farm</h1>{message}
<form method="post" action="/login">
<input type="hidden" name="next" value="{next}">
<label>User <input name="username" autocomplete="username" autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit">Log in</button></form>
<p><small><code>sudo octobrixctl credentials</code> on the farm computer shows the farm login.</small></p>
</body></html>
"""

LOGOUT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>octobrix farm: log out</title>
<style>body{font-family:sans-serif;max-width:22rem;margin:4rem auto;padding:0 1rem}
button{font-size:1.1rem;width:100%;padding:.4rem}</style></head>
<body><h1>octobrix farm</h1>
<form method="post" action="/logout"><button type="submit">Log out of the farm</button></form>
<p><a href="/">Back to the farm</a></p>
</body></html>
"""
LOGOUT_REFUSED = b"not logged out: log out with the Log out button of the farm's own page\n"


def _plain_path(text: str) -> bool:
    """A path of this site as a browser reads it: one leading slash, then no second one or backslash
    (//host and /\\host are other sites), no whitespace or control character (a browser drops a tab or
    a newline, which makes / TAB /host //host), printable ASCII only."""
    if not text.startswith("/") or text[1:2] in ("/", "\\"):
        return False
    return all(0x21 <= ord(c) < 0x7F and c != "\\" for c in text)


def safe_next(value: str | None) -> str:
    """Where to go after logging in: only a path on this site, never another site; anything else "/".
    Judged as written and once percent-decoded (/%09/host, /%2F%2Fhost), with no scheme or host."""
    if not value or len(value) > 2048:
        return "/"
    if not (_plain_path(value) and _plain_path(urllib.parse.unquote(value))):
        return "/"
    parts = urllib.parse.urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


def client_brings_credentials(headers: Any, query: str) -> bool:
    """An API client (slicer, app) with its own OctoPrint key: OctoPrint judges that key, not us.
    query: the query string nginx passes on to the OctoPrint ($args)."""
    if headers.get("X-Api-Key"):
        return True
    if headers.get("Authorization", "").startswith("Bearer "):
        return True
    return bool(urllib.parse.parse_qs(query).get("apikey"))


def same_site_post(headers: Any) -> bool:
    """A form of this site posted it: its Origin (or, from a browser that sends none, its Referer)
    names this host. Neither, or "null": refused, as a request another site's page could make."""
    host = headers.get("Host", "")
    origin = headers.get("Origin")
    source = origin if origin is not None else headers.get("Referer")
    if not host or not source or source == "null":
        return False
    return bool(urllib.parse.urlsplit(source).netloc == host)


def same_origin(headers: Any) -> bool:
    """A state-changing request made by a page of this farm, not by another site the user visits."""
    origin = headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    host = headers.get("Host", "")
    return bool(urllib.parse.urlsplit(origin).netloc == host)


class Handler(BaseHTTPRequestHandler):
    server: FarmServer
    protocol_version = "HTTP/1.1"
    server_version = "octobrix-web"
    sys_version = ""

    @property
    def context(self) -> WebContext:
        return self.server.context

    def address_string(self) -> str:
        # On the unix socket only nginx connects (octobrix-web.socket), and it sets X-Real-IP, never
        # the client; on a TCP port (a development run) the peer is the client.
        if self.server.address_family == socket.AF_UNIX:
            return self.headers.get("X-Real-IP") or "nginx"
        return str(self.client_address[0])

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- helpers ----------------------------------------------------------------------------
    def _cookie(self) -> str | None:
        try:
            jar = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            return None
        morsel = jar.get(auth.COOKIE)
        return morsel.value if morsel else None

    def session(self) -> str | None:
        """The live session the request's cookie names, if any."""
        session_id = auth.cookie_session(self.context.login, self._cookie())
        return session_id if session_id is not None and self.context.sessions.live(session_id) else None

    def logged_in(self) -> bool:
        return self.session() is not None

    def send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
        cookies: Sequence[str] = (),
    ) -> None:
        """cookies: Set-Cookie values, one header each."""
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        for cookie in cookies:
            self.send_header("Set-Cookie", cookie)
        if body or status not in (HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED):
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def redirect(self, location: str, headers: dict[str, str] | None = None, cookies: Sequence[str] = ()) -> None:
        self.send(HTTPStatus.SEE_OTHER, b"", headers={"Location": location, **(headers or {})}, cookies=cookies)

    def to_login(self) -> None:
        self.redirect("/login?" + urllib.parse.urlencode({"next": self.path}))

    def read_form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > 64 * 1024:
            return {}
        fields = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        return {key: values[0] for key, values in fields.items()}

    # -- routes -----------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self.do_GET()

    def printer(self) -> str | None:
        """The printer whose origin nginx took this request on (its server sets the header, and the
        farm's clears it); None on the farm's origin."""
        name = self.headers.get(PRINTER_HEADER) or None
        if name is not None and name not in self.context.config.printers:
            # A site of another config than the service's: answer as for no printer, never another's.
            log.warning("nginx named a printer the web service does not know: %r", name)
            return None
        return name

    def scheme(self) -> str:
        """As the browser reached nginx (which sets the header, never the client)."""
        return "https" if self.headers.get("X-Forwarded-Proto") == "https" else "http"

    def cookie_flags(self) -> str:
        return "; Secure" if self.scheme() == "https" else ""

    def farm_url(self, path: str) -> str:
        frontdoor = self.context.config.frontdoor
        port = frontdoor.https_port if self.scheme() == "https" else frontdoor.port
        return door.origin_url(self.scheme(), self.headers.get("Host", ""), port, path)

    def upstream(self, name: str) -> door.Upstream:
        config = self.context.config
        port = config.door_port(name)
        forwarded = f"{door.host_name(self.headers.get('Host', ''))}:{port}"
        host = local_host(config.services_listen())
        return door.Upstream(host, config.printers[name].port, port, forwarded, self.scheme())

    def refused(self) -> None:
        """nginx found no login for a printer or camera: a browser goes to the login page, a program gets 401."""
        if self.command in ("GET", "HEAD") and "text/html" in self.headers.get("Accept", ""):
            printer = self.printer()
            if printer is None:
                self.to_login()
            else:
                next_path = urllib.parse.urlencode({"next": OPEN_PREFIX + printer})
                self.redirect(self.farm_url(f"/login?{next_path}"))
            return
        self.send(
            HTTPStatus.UNAUTHORIZED,
            b'{"error": "log in to the farm, or send this printer\'s API key"}\n',
            "application/json",
        )

    def do_GET(self) -> None:
        if self.headers.get(REFUSED_HEADER):
            self.refused()
            return
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith(AUTH_PREFIX) and path != SSO_PATH:
            self.auth_check(path)
            return
        if self.printer() is not None:
            # On a printer's origin nginx sends only its checks, its refusals and the sign-on here.
            if path == SSO_PATH:
                self.single_sign_on(self.printer() or "")
            else:
                self.send(HTTPStatus.NOT_FOUND, b"not found\n")
            return
        if path == "/login":
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            self.login_page(safe_next(query.get("next", ["/"])[0]))
            return
        if path == "/logout":
            self.send(HTTPStatus.OK, LOGOUT_PAGE.encode(), "text/html; charset=utf-8")
            return
        if path == "/metrics":
            self.metrics()
            return
        if not self.logged_in():
            if path.startswith("/api/"):
                self.send(HTTPStatus.UNAUTHORIZED, b'{"error": "log in first"}\n', "application/json")
                return
            self.to_login()
            return
        if path == "/":
            self.static("index.html")
            return
        if path.startswith("/static/"):
            self.static(path.removeprefix("/static/"))
            return
        if path == "/api/farm":
            self.api_farm()
            return
        if path == "/api/found":
            self.api_found()
            return
        if path.startswith(OPEN_PREFIX):
            self.open_printer(path.removeprefix(OPEN_PREFIX))
            return
        self.send(HTTPStatus.NOT_FOUND, b"not found\n")

    def do_POST(self) -> None:
        if self.headers.get(REFUSED_HEADER):
            self.refused()
            return
        path = urllib.parse.urlsplit(self.path).path
        if self.printer() is not None:
            self.send(HTTPStatus.NOT_FOUND, b"not found\n")
            return
        if path == "/login":
            self.login()
            return
        if path == "/logout":
            self.logout()
            return
        if path in EDIT_FIELDS:
            self.api_edit(path)
            return
        self.send(HTTPStatus.NOT_FOUND, b"not found\n")

    do_PUT = do_DELETE = do_PATCH = do_POST

    def auth_check(self, path: str) -> None:
        """nginx asks this before every request to a printer (AUTH_PRINTER) or a camera (AUTH_CAMERA);
        the client's headers come along. Which endpoint nginx asked is what the request is for: the
        client's path is never read, so no spelling of it can make a camera look like a printer."""
        if path not in (AUTH_PRINTER, AUTH_CAMERA):
            # An nginx site of another version, or a typo: refuse, never guess.
            log.warning("refused an auth check for an unknown kind of location: %r", path)
            self.send(HTTPStatus.UNAUTHORIZED)
            return
        printer = self.printer()
        if path == AUTH_PRINTER and printer is None:
            # Printers live on their own origins only: the farm's has none to let through.
            self.send(HTTPStatus.UNAUTHORIZED)
            return
        method = self.headers.get("X-Original-Method", "GET")
        if self.logged_in() and (method in SAFE_METHODS or same_origin(self.headers)):
            self.send(HTTPStatus.NO_CONTENT, headers={LOGIN_HEADER: "farm"})
            return
        args = self.headers.get("X-Original-Args", "")
        if path == AUTH_PRINTER and client_brings_credentials(self.headers, args):
            # An OctoPrint judges a client's own key itself.
            self.send(HTTPStatus.NO_CONTENT, headers={LOGIN_HEADER: "client"})
            return
        # A streamer checks no key, so a key of the client's own (any string) would be the whole
        # login: on a printer's origin its OctoPrint is asked whether it lets these in to its camera.
        if path == AUTH_CAMERA and printer is not None and method in SAFE_METHODS:
            upstream = self.upstream(printer)
            credentials = door.client_credentials(self.headers, args, upstream.door)
            if self.context.webcam_answers.allowed(upstream, credentials):
                self.send(HTTPStatus.NO_CONTENT, headers={LOGIN_HEADER: "client"})
                return
        self.send(HTTPStatus.UNAUTHORIZED)

    def open_printer(self, name: str) -> None:
        """From the farm page to a printer: a one-time ticket for its origin, where it becomes that
        OctoPrint's own session (single_sign_on)."""
        session_id = self.session()
        if name not in self.context.config.printers or session_id is None:
            self.send(HTTPStatus.NOT_FOUND, b"no such printer\n")
            return
        ticket = self.context.tickets.issue(session_id, name)
        upstream = self.upstream(name)
        sso = f"{SSO_PATH}?ticket={ticket}"
        self.redirect(door.origin_url(self.scheme(), self.headers.get("Host", ""), upstream.door, sso))

    def single_sign_on(self, name: str) -> None:
        session_id = self.session()
        if session_id is None:
            self.redirect(self.farm_url("/login?" + urllib.parse.urlencode({"next": OPEN_PREFIX + name})))
            return
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        ticket = query.get("ticket", [""])[0]
        if not self.context.tickets.redeem(ticket, session_id, name):
            # Used, expired, or made for another session or printer: the farm page makes a new one.
            self.redirect(self.farm_url(OPEN_PREFIX + name))
            return
        login = self.context.printer_login
        set_cookies: list[str] = []
        if login is not None:
            upstream = self.upstream(name)
            try:
                set_cookies = door.octoprint_login(upstream, login)
            except (OSError, loopback_http.MalformedResponse) as error:
                log.warning("single sign-on to %s failed: %s", name, error)
            if set_cookies:
                self.context.printer_sessions.add(session_id, name, door.session_cookies(set_cookies, upstream.door))
        # Logged in or not, OctoPrint takes it from here (its own login page if not).
        self.redirect("/", cookies=set_cookies)

    def login_page(
        self, next_path: str, message: str = "", status: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        page = LOGIN_PAGE.format(message=message, next=html.escape(next_path, quote=True))
        status = status or (HTTPStatus.UNAUTHORIZED if message else HTTPStatus.OK)
        self.send(status, page.encode(), "text/html; charset=utf-8", headers)

    def login(self) -> None:
        form = self.read_form()
        next_path = safe_next(form.get("next"))
        address = self.address_string()
        wait = self.context.limiter.begin(address)
        if wait is not None:
            log.info("refused a farm login from %s: too many wrong passwords", address)
            line = f"Too many wrong passwords from your address: try again in {wait} seconds."
            self.login_page(
                next_path, f'<p class="error">{line}</p>', HTTPStatus.TOO_MANY_REQUESTS, {"Retry-After": str(wait)}
            )
            return
        login = self.context.login
        user_ok = form.get("username", "") == login.username
        password_ok = auth.check_password(form.get("password", ""), login.password_hash)
        self.context.limiter.end(address, failed=not (user_ok and password_ok))
        if not (user_ok and password_ok):
            log.info("failed farm login from %s", address)
            self.login_page(next_path, '<p class="error">Wrong user or password.</p>')
            return
        cookie = (
            f"{auth.COOKIE}={session_cookie(self.context)}; Path=/; Max-Age={auth.SESSION_SECONDS}; "
            # Lax: a link from elsewhere opens the farm logged in, but no other site can post to it.
            "HttpOnly; SameSite=Lax" + self.cookie_flags()
        )
        self.redirect(next_path, headers={"Set-Cookie": cookie})

    def logout(self) -> None:
        """Only a form of this site logs out (another site's page must not), and the session ends on
        the server: its cookie, replayed, is no login."""
        if not same_site_post(self.headers):
            self.send(HTTPStatus.FORBIDDEN, LOGOUT_REFUSED)
            return
        session_id = self.session()
        if session_id is not None:
            self.context.sessions.end(session_id)
            for name, cookies in self.context.printer_sessions.take(session_id):
                if name in self.context.config.printers:
                    door.octoprint_logout(self.upstream(name), cookies)
        gone = f"{auth.COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{self.cookie_flags()}"
        self.redirect("/login", headers={"Set-Cookie": gone})

    def static(self, relative: str) -> None:
        root = STATIC_DIR.resolve()
        target = (root / relative).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            self.send(HTTPStatus.NOT_FOUND, b"not found\n")
            return
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type == "application/javascript":
            content_type += "; charset=utf-8"
        self.send(HTTPStatus.OK, target.read_bytes(), content_type)

    def metrics(self) -> None:
        if not self.context.config.frontdoor.metrics:
            # Off unless enabled: not even a login page says it is there.
            self.send(HTTPStatus.NOT_FOUND, b"not found\n")
            return
        if not (auth.bearer_ok(self.context.metrics_token_sha256, self.headers.get("Authorization"))
                or self.logged_in()):  # fmt: skip
            log.info("refused /metrics to %s: no metrics token, no farm login", self.address_string())
            self.send(HTTPStatus.UNAUTHORIZED, METRICS_REFUSED, headers={"WWW-Authenticate": 'Bearer realm="octobrix"'})
            return
        # Imported on the first scrape: a farm without metrics never loads prometheus-client (~1 MiB).
        from octobrixd.web import metrics  # noqa: PLC0415 - on the first scrape only

        self.send(HTTPStatus.OK, metrics.scrape(self.context), metrics.CONTENT_TYPE)

    def api_farm(self) -> None:
        self.send(HTTPStatus.OK, overview.farm(self.context), "application/json")

    def send_json(self, status: int, body: dict[str, Any]) -> None:
        self.send(status, json.dumps(body).encode() + b"\n", "application/json")

    def api_found(self) -> None:
        try:
            body = self.context.layout.path(FOUND_FILE).read_bytes()
        except FileNotFoundError:
            self.send_json(HTTPStatus.OK, {"found": [], "note": "octobrixd has not looked for devices yet"})
            return
        self.send(HTTPStatus.OK, body, "application/json")

    def api_edit(self, path: str) -> None:
        """Add or remove: the web service only passes the narrow request on; octobrixd checks and writes."""
        if not self.logged_in():
            self.send_json(HTTPStatus.UNAUTHORIZED, {"ok": False, "error": "log in first"})
            return
        if not same_origin(self.headers):
            self.send_json(HTTPStatus.FORBIDDEN, {"ok": False, "error": "only the farm's own page may change it"})
            return
        op, fields = EDIT_FIELDS[path]
        length = int(self.headers.get("Content-Length") or 0)
        try:
            posted = json.loads(self.rfile.read(length)) if 0 < length <= 4096 else None
        except ValueError:
            posted = None
        if not isinstance(posted, dict):
            self.send_json(HTTPStatus.BAD_REQUEST, {"ok": False, "error": "send one small JSON object"})
            return
        request = {"op": op, **{key: posted[key] for key in fields if posted.get(key) is not None}}
        try:
            answer = channel.ask(channel.socket_path(self.context.layout.root), request)
        except OctobrixError as error:
            self.send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"ok": False, "error": str(error), "hint": error.hint})
            return
        self.send_json(HTTPStatus.OK if answer.get("ok") else HTTPStatus.CONFLICT, answer)


def session_cookie(context: WebContext) -> str:
    """A new session's cookie value: recorded as live until it expires or its browser logs out."""
    expires = auth.session_expiry(context.sessions.clock())
    return auth.issue_cookie(context.login, context.sessions.open(expires), expires)


class FarmServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: WebContext, listener: socket.socket) -> None:
        self.context = context
        # The socket is made (by systemd or make_listener) before; nothing to bind here.
        super().__init__(listener.getsockname(), Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener
        self.address_family = listener.family

    def server_bind(self) -> None:  # never called: the listener arrives bound
        raise NotImplementedError


SD_LISTEN_FDS_START = 3


def systemd_listener(environ: dict[str, str], pid: int) -> socket.socket | None:
    """The socket systemd passed (socket activation), if it passed one to this process."""
    if environ.get("LISTEN_PID") != str(pid) or environ.get("LISTEN_FDS") != "1":
        return None
    return socket.socket(fileno=SD_LISTEN_FDS_START)


def tcp_listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(64)
    return listener


def unix_listener(path: Path) -> socket.socket:
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)
    return listener
