"""The printers' own origins, as the web service answers for them behind nginx.

Each printer is served by nginx on its own port (render/nginx.py), so that no page of one printer
can read another's or the farm's. The farm login still gates them all, and a person who logged in
to the farm opens any printer already logged in to it: the farm page's link (/open/NAME) hands the
browser a one-time ticket for that printer's origin, where the web service logs in to that
OctoPrint as the farm's user (the account octobrix keeps in every OctoPrint with the farm's
password) and passes OctoPrint's own session cookie on. From then on OctoPrint judges the browser
itself: its login, logout, remember-me, CSRF and permissions all hold. Logging out of the farm logs
out the OctoPrint sessions it opened.

A camera on a printer's origin opens for the farm login, or for what that OctoPrint accepts with
the WEBCAM permission (its session, its API key): asked of OctoPrint, the answer kept a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any

from octobrixd.errors import OctobrixError
from octobrixd.render.nginx import OCTOPRINT_COOKIES
from octobrixd.system import loopback_http
from octobrixd.urls import origin, url_host

log = logging.getLogger(__name__)

TICKET_SECONDS = 60
WEBCAM_ANSWER_SECONDS = 10.0
OCTOPRINT_TIMEOUT = 10.0


@dataclass(frozen=True)
class PrinterLogin:
    """The farm user's account in every OctoPrint: single sign-on logs in as it."""

    username: str
    password: str


def read_printer_login(path: Path) -> PrinterLogin | None:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        return PrinterLogin(body["username"], body["password"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OctobrixError(
            f"cannot read the farm user's printer login from {path}: {exc}",
            hint="run `sudo octobrixctl apply`, which writes it, then `sudo systemctl restart octobrix-web`",
        ) from None


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Tickets:
    """One-time tickets from the farm's origin to one printer's, for one farm session, for a minute."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._open: dict[str, tuple[str, str, float]] = {}

    def issue(self, session_id: str, printer: str) -> str:
        ticket = secrets.token_urlsafe(24)
        now = self.clock()
        with self._lock:
            self._open = {k: v for k, v in self._open.items() if v[2] > now}
            self._open[_digest(ticket)] = (_digest(session_id), printer, now + TICKET_SECONDS)
        return ticket

    def redeem(self, ticket: str, session_id: str, printer: str) -> bool:
        with self._lock:
            entry = self._open.pop(_digest(ticket), None)
        return entry is not None and entry == (_digest(session_id), printer, entry[2]) and entry[2] > self.clock()


class PrinterSessions:
    """The OctoPrint sessions single sign-on opened, by the farm session they belong to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_session: dict[str, list[tuple[str, dict[str, str]]]] = {}

    def add(self, session_id: str, printer: str, cookies: Mapping[str, str]) -> None:
        with self._lock:
            self._by_session.setdefault(_digest(session_id), []).append((printer, dict(cookies)))

    def take(self, session_id: str) -> list[tuple[str, dict[str, str]]]:
        with self._lock:
            return self._by_session.pop(_digest(session_id), [])


# -- addresses -------------------------------------------------------------------------------------


def host_name(host_header: str) -> str:
    """The host part of a Host header (an IPv6 address keeps its brackets)."""
    host = host_header.strip()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else url_host(host)


def origin_url(scheme: str, host_header: str, port: int, path: str) -> str:
    return origin(scheme, host_name(host_header), port) + path


def cookie_names(door: int) -> frozenset[str]:
    """The names of the OctoPrint cookies of the printer served on door (as nginx lets through)."""
    return frozenset(f"{name}_P{door}" for name in OCTOPRINT_COOKIES)


def own_cookies(cookie_header: str, door: int) -> dict[str, str]:
    try:
        jar = SimpleCookie(cookie_header)
    except CookieError:
        return {}
    names = cookie_names(door)
    return {key: morsel.value for key, morsel in jar.items() if key in names}


def _cookie_line(cookies: Mapping[str, str]) -> str:
    return "; ".join(f"{key}={value}" for key, value in cookies.items())


def _cookie_named(line: str) -> str:
    """The name a Set-Cookie value sets."""
    return line.partition("=")[0].strip()


def _set_cookie_pairs(set_cookies: list[str]) -> dict[str, str]:
    return {_cookie_named(line): line.partition("=")[2].split(";", 1)[0].strip() for line in set_cookies}


# -- asking an OctoPrint as the browser would, through its own door --------------------------------


@dataclass(frozen=True)
class Upstream:
    """Printer NAME's OctoPrint as the web service reaches it, and the origin the browser used."""

    host: str  # loopback address of the OctoPrint
    port: int  # its own port
    door: int  # its door port: OctoPrint names its cookies by it
    forwarded_host: str  # HOST:DOOR, as nginx tells OctoPrint
    scheme: str = "http"  # as the browser reached it: OctoPrint marks its cookies Secure over https

    def exchange(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> loopback_http.Response:
        sent = {"X-Forwarded-Host": self.forwarded_host, "X-Forwarded-Proto": self.scheme, **headers}
        return loopback_http.exchange(
            self.port, path, host=self.host, method=method, headers=sent, body=body, timeout=OCTOPRINT_TIMEOUT
        )


def octoprint_login(upstream: Upstream, login: PrinterLogin) -> list[str]:
    """Log in to the OctoPrint as login's user: the Set-Cookie lines of its new session (none when it
    refuses: a changed password, two-factor login; the browser then meets OctoPrint's own login)."""
    page = upstream.exchange("GET", "/login", {})
    csrf = _set_cookie_pairs(page.header_values("Set-Cookie")).get(f"csrf_token_P{upstream.door}")
    if csrf is None:
        log.warning("single sign-on: OctoPrint on port %d gave no CSRF cookie (HTTP %d)", upstream.port, page.status)
        return []
    body = json.dumps({"user": login.username, "pass": login.password, "remember": False}).encode()
    answer = upstream.exchange(
        "POST",
        "/api/login",
        {
            "Content-Type": "application/json",
            "Cookie": f"csrf_token_P{upstream.door}={csrf}",
            "X-CSRF-Token": csrf,
        },
        body,
    )
    if not answer.ok:
        log.warning(
            "single sign-on: OctoPrint on port %d refused the farm user (HTTP %d)", upstream.port, answer.status
        )
        return []
    # The login page's anonymous session is replaced by the login's: one line per cookie, the last.
    lines = [*page.header_values("Set-Cookie"), *answer.header_values("Set-Cookie")]
    return list({_cookie_named(line): line for line in lines}.values())


def session_cookies(set_cookies: list[str], door: int) -> dict[str, str]:
    """What the browser holds for that OctoPrint after set_cookies: its session and CSRF cookies."""
    names = cookie_names(door)
    return {k: v for k, v in _set_cookie_pairs(set_cookies).items() if k in names and v}


def octoprint_logout(upstream: Upstream, cookies: Mapping[str, str]) -> bool:
    csrf = cookies.get(f"csrf_token_P{upstream.door}", "")
    try:
        answer = upstream.exchange("POST", "/api/logout", {"Cookie": _cookie_line(cookies), "X-CSRF-Token": csrf})
    except (OSError, loopback_http.MalformedResponse) as error:
        log.warning("could not log out of the OctoPrint on port %d: %s", upstream.port, error)
        return False
    return answer.ok


def client_credentials(headers: Any, args: str, door: int) -> dict[str, str]:
    """What of the client's request OctoPrint would judge: its own cookies, its key or token."""
    sent = {}
    cookies = own_cookies(headers.get("Cookie", ""), door)
    if cookies:
        sent["Cookie"] = _cookie_line(cookies)
    for name in ("X-Api-Key", "Authorization"):
        if headers.get(name):
            sent[name] = headers[name]
    query_key = urllib.parse.parse_qs(args).get("apikey")
    if query_key and "X-Api-Key" not in sent:
        sent["X-Api-Key"] = query_key[0]
    return sent


class WebcamAnswers:
    """Whether an OctoPrint lets these credentials see its camera (its WEBCAM permission), asked of
    that OctoPrint and kept for a few seconds: a snapshot refresh does not ask every time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[bool, float]] = {}

    def allowed(self, upstream: Upstream, credentials: Mapping[str, str]) -> bool:
        if not credentials:
            return False
        key = _digest(json.dumps([upstream.port, upstream.door, sorted(credentials.items())]))
        now = self.clock()
        with self._lock:
            known = self._answers.get(key)
        if known is not None and known[1] > now:
            return known[0]
        answer = _ask_webcam(upstream, credentials)
        with self._lock:
            if len(self._answers) > 1000:
                self._answers = {k: v for k, v in self._answers.items() if v[1] > now}
            self._answers[key] = (answer, now + WEBCAM_ANSWER_SECONDS)
        return answer


def _ask_webcam(upstream: Upstream, credentials: Mapping[str, str]) -> bool:
    try:
        answer = upstream.exchange("GET", "/api/currentuser", credentials)
        body = json.loads(answer.body) if answer.ok else None
    except (OSError, ValueError, loopback_http.MalformedResponse) as error:
        log.warning("could not ask the OctoPrint on port %d about its camera: %s", upstream.port, error)
        return False
    if not isinstance(body, dict) or not body.get("name"):
        return False
    permissions = body.get("permissions")
    return isinstance(permissions, list) and "WEBCAM" in permissions
