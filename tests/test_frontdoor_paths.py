"""No spelling of a path gets past the front door's login: the real nginx in front of the real web service.

nginx routes by the path it normalised (`//` merged, `%XX` decoded, `.` and `..` resolved); the login
check must judge that same request, whatever the client wrote. Every trick below, on a camera, a
printer and the farm's own API, with made-up keys, tokens and identity headers: refused without the
farm login, served with it. The harness (nginx on free ports, stand-in OctoPrints) is test_frontdoor's.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable
from pathlib import Path

import pytest

from octobrixd.frontdoor import auth
from tests.test_frontdoor import Door, front_door, needs_nginx, needs_root, nginx_installed  # noqa: F401 - fixture

ALL = frozenset({"camera", "printer", "farm api", "printer's camera"})
# What a client may write for a path, and the kinds of location where nginx routes it to the same
# place; elsewhere it lands on the farm's web service, which has no such page (404 with the login).
TRICKS: dict[str, tuple[Callable[[str], str], frozenset[str]]] = {
    "plain": (lambda p: p, ALL),
    "leading //": (lambda p: "/" + p, ALL),
    "every / doubled": (lambda p: p.replace("/", "//"), ALL),
    "first letter %XX": (lambda p: f"/%{ord(p[1]):02x}{p[2:]}", ALL),
    "first letter %XX upper": (lambda p: f"/%{ord(p[1]):02X}{p[2:]}", ALL),
    "a / as %2F": (lambda p: p[:1] + p[1:].replace("/", "%2F", 1), ALL),
    "x/..": (lambda p: "/x/.." + p, ALL),
    "x/%2e%2e": (lambda p: "/x/%2e%2e" + p, ALL),
    "x/%2E%2E%2F": (lambda p: "/x/%2E%2E%2F" + p[1:], ALL),
    "/./": (lambda p: "/." + p, ALL),
    "/./ inside": (lambda p: p.replace("/", "/./", 2), ALL),
    "absolute form": (lambda p: "http://127.0.0.1" + p, ALL),
    # A ; is part of a path segment: the web service has no page "found;x=1", an OctoPrint judges its own.
    "trailing ;junk": (lambda p: p + ";x=1", frozenset({"camera", "printer", "printer's camera"})),
    "trailing ?junk": (lambda p: p + "?x=1&y", ALL),
    "; in the first segment": (lambda p: p.replace("/", ";/", 2).replace(";/", "/", 1), frozenset()),
}

# Where each kind of guarded location sends its plain path: (the path, the stand-in name or "farm" that
# receives it, the origin: "farm" or the printer whose own port it is on).
TARGETS = {
    "camera": ("/cam/cam1/snapshot", "cam1", "farm"),
    "printer": ("/api/version", "demo", "demo"),
    "farm api": ("/api/found", "farm", "farm"),
    "printer's camera": ("/cam/cam1/snapshot", "cam1", "ender-3"),
}

MADE_UP = "MADEUPKEY0000000"
FORGED_IDENTITY = {
    "X-Remote-User": "admin",
    "Remote-User": "admin",
    "X-Forwarded-User": "admin",
    "X-Auth-Request-User": "admin",
    "X-Octobrix-Login": "farm",
    "X-Octobrix-Refused": "",
    "X-Real-IP": "127.0.0.1",
    "X-Original-Args": "apikey=x",
    "X-Original-Method": "GET",
    "Cookie": f"{auth.COOKIE}=farm|9999999999|00|00",
}
# Without the farm login: nothing, or credentials of the client's own making.
FORGERIES: dict[str, tuple[dict[str, str], str]] = {
    "nothing": ({}, ""),
    "made-up X-Api-Key": ({"X-Api-Key": MADE_UP}, ""),
    "made-up ?apikey=": ({}, f"apikey={MADE_UP}"),
    "made-up bearer token": ({"Authorization": f"Bearer {MADE_UP}"}, ""),
    "identity headers, forged cookie": (FORGED_IDENTITY, ""),
    "all of it": ({**FORGED_IDENTITY, "X-Api-Key": MADE_UP, "Authorization": f"Bearer {MADE_UP}"}, f"apikey={MADE_UP}"),
}


def with_query(path: str, query: str) -> str:
    if not query:
        return path
    return path + ("&" if "?" in path else "?") + query


def get(door: Door, path: str, headers: dict[str, str], origin: str = "farm") -> tuple[int, bytes]:
    port = door.front if origin == "farm" else door.doors[origin]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    # skip_host: the absolute form names its own; a Host header is added below for every request.
    conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
    for key, value in {"Host": f"127.0.0.1:{port}", **headers}.items():
        conn.putheader(key, value)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


@needs_nginx
@needs_root
@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_no_spelling_of_a_path_passes_without_the_login(tmp_path: Path, kind: str) -> None:
    plain, where, origin = TARGETS[kind]
    with front_door(tmp_path) as door:
        for trick, (spell, _) in TRICKS.items():
            for forgery, (headers, query) in FORGERIES.items():
                path = with_query(spell(plain), query)
                status, body = get(door, path, headers, origin)
                said = f"{trick} ({path}) with {forgery}: {status} {body[:80]!r}"
                # The farm's own pages answer 401 or send to the login page; a printer's OctoPrint refuses
                # a key it does not know (403): nothing is served.
                assert status in (303, 401, 403), said
                if where == "farm":
                    assert b"found" not in body, said
        # Nothing reached a camera; what reached an OctoPrint carried the client's own key, no other,
        # and no identity header.
        reached = list(door.seen.requests)
        assert all(r["port"] != door.ports["cam1"] for r in reached), reached
        for r in reached:
            assert isinstance(r["headers"], dict)
            assert r["headers"].get("x-api-key") in (None, MADE_UP), r
            assert not {"x-remote-user", "remote-user", "x-forwarded-user", "x-octobrix-login"} & set(r["headers"]), r
        if kind == "printer's camera":
            # Asked whether it knows the key, or given what on its origin is not its camera's path.
            assert {r["port"] for r in reached} <= {door.ports["ender-3"]}, "only its OctoPrint was asked"
        elif kind != "printer":
            assert reached == [], "only a printer's OctoPrint sees a client's own key, to refuse it"

        # With the farm login, every spelling nginx routes to that place is served, from that place.
        cookie = door.log_in()
        for trick, (spell, same) in TRICKS.items():
            path = spell(plain)
            before = len(door.seen.requests)
            status, body = get(door, path, {**FORGED_IDENTITY, "Cookie": cookie}, origin)
            said = f"{trick} ({path}) with the login: {status} {body[:80]!r}"
            # On a printer's origin every path but its camera's is that OctoPrint's to answer.
            if kind not in same and kind == "printer's camera":
                assert status == 200 and door.seen.last()["port"] == door.ports["ender-3"], said
                continue
            if kind not in same and kind != "printer":
                assert status == 404, said
                assert len(door.seen.requests) == before, said
                continue
            assert status == 200, said
            if where == "farm":
                assert b'"found"' in body, said
                continue
            last = door.seen.last()
            assert last["port"] == door.ports[where], said
            assert isinstance(last["headers"], dict)
            assert last["headers"].get("x-api-key") is None, said
