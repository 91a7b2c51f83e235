"""The overview page's own behaviour in the real chromium (tests/deps/browser.sh), quickly: the page's
files and GET /api/farm (octobrixd.web.overview with loopback OctoPrint stand-ins) are served here by a
small stand-in of the front door that also plays a camera (a PNG snapshot, a multipart stream). The whole
farm (install.sh, nginx, the web service, real OctoPrints) is in tests/lab/test_overview_browser.py.
"""

from __future__ import annotations

import json
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from octobrixd.adding.found import build_found
from octobrixd.config.model import parse_config
from octobrixd.devices.inventory import Device, complete
from octobrixd.system.paths import Layout
from octobrixd.web.overview import FarmOverview
from tests.factories import loopback, printer
from tests.httpstub import QuietHandler, serving
from tests.lab.harness.browser import PHONE, TABLET, Browser
from tests.octoprint_standin import KEY, Behaviour, job_body, octoprints, printer_body
from tests.test_overview import props_of, unit

STATIC = Path(__file__).parents[1] / "octobrixd" / "web" / "static"
TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}


def png(width: int = 32, height: int = 18, rgb: tuple[int, int, int] = (40, 120, 200)) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@dataclass
class FrontDoor:
    """What the stand-in front door saw."""

    overview: FarmOverview
    printers: dict[str, Behaviour]
    farm_requests: int = 0
    snapshots: int = 0
    streams_open: int = 0
    streams_total: int = 0
    probes: int = 0  # the test's own requests from the page, counted apart from the page's
    # The found list it serves, the add/remove requests the page posted, and octobrixd's answer to them.
    found: list[dict[str, Any]] = field(default_factory=list)
    posted: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    setting_up: dict[str, str] = field(default_factory=dict)
    answer: dict[str, Any] = field(default_factory=lambda: {"ok": True, "message": "added"})
    lock: threading.Lock = field(default_factory=threading.Lock)


def front_door_handler(door: FrontDoor) -> type[QuietHandler]:
    class Handler(QuietHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/":
                path = "/static/index.html"
            if path.startswith("/static/") and (STATIC / path.removeprefix("/static/")).is_file():
                file = STATIC / path.removeprefix("/static/")
                self.reply(200, file.read_bytes(), TYPES.get(file.suffix, "application/octet-stream"))
            elif path == "/api/farm":
                with door.lock:
                    door.farm_requests += 1
                self.reply(200, door.overview.answer())
            elif path == "/api/found":
                self.reply(200, json.dumps({"found": door.found, "setting_up": door.setting_up}).encode())
            elif path == "/cam/vcam/snapshot":
                with door.lock:
                    door.snapshots += 1
                self.reply(200, png(), "image/png")
            elif path == "/cam/vcam/stream":
                self.stream()
            elif path == "/test-probe":
                with door.lock:
                    door.probes += 1
                self.reply(200, b"seen", "text/plain")
            else:
                self.reply(404, b"not here", "text/plain")

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            with door.lock:
                door.posted.append((self.path, body))
            self.reply(200 if door.answer["ok"] else 409, json.dumps(door.answer).encode())

        def stream(self) -> None:
            with door.lock:
                door.streams_open += 1
                door.streams_total += 1
            try:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Connection", "close")
                self.end_headers()
                for shade in range(1000):
                    frame = png(rgb=(shade % 255, 80, 80))
                    part = f"--frame\r\nContent-Type: image/png\r\nContent-Length: {len(frame)}\r\n\r\n".encode()
                    self.wfile.write(part + frame + b"\r\n")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass  # the browser closed the stream
            finally:
                with door.lock:
                    door.streams_open -= 1
                self.close_connection = True

    return Handler


def behaviours() -> dict[str, Behaviour]:
    return {
        "vcam-printer": Behaviour(),
        "voron-2": Behaviour(
            job=job_body("Printing", "benchy.gcode", 42.4, 3720), printer=printer_body((214.9, 215.0), (59.9, 60.0))
        ),
        "ender": Behaviour(job=job_body("Offline after error", error="Thermal Runaway"), printer=None),
        "mini": Behaviour(job=job_body("Paused", "clip.gcode", 73.0, 1800), printer=printer_body(paused=True)),
    }


@pytest.fixture
def door() -> Iterator[tuple[FrontDoor, Browser, str]]:
    printers = behaviours()
    with octoprints(list(printers.values())) as ports, tempfile.TemporaryDirectory() as scratch:
        toml = "".join(
            f"[printers.{name}]\nvirtual = true\nport = {port}\n"
            + ('camera = "vcam"\n' if name == "vcam-printer" else "")
            for name, port in zip(printers, ports, strict=True)
        )
        toml += '[printers.gone]\nvirtual = true\nport = 5519\n[cameras.vcam]\nserial = "C1"\nport = 8081\n'
        config = parse_config(toml, "/etc/octobrix.toml")
        props = {f"octoprint@{n}.service": unit(f"octoprint@{n}.service") for n in printers}
        props["octoprint@gone.service"] = unit("octoprint@gone.service", "failed")
        props["ustreamer@vcam.service"] = unit("ustreamer@vcam.service")
        overview = FarmOverview(lambda: config, lambda _n: KEY, layout=Layout(Path(scratch)), query=props_of(props))
        state = FrontDoor(overview, printers)
        with serving(front_door_handler(state)) as port, Browser(Path(scratch) / "shots", TABLET) as browser:
            yield state, browser, f"http://127.0.0.1:{port}"


def badges(browser: Browser) -> dict[str, str]:
    found: dict[str, str] = browser.script(
        "return Object.fromEntries([...document.querySelectorAll('#cards .card')]"
        ".map(c => [c.dataset.name, c.querySelector('.badge').textContent]))"
    )
    return found


def test_the_page_shows_every_state_and_follows_the_farm(door: tuple[FrontDoor, Browser, str]) -> None:
    state, browser, base = door
    browser.get(f"{base}/")
    shown = browser.wait_for("five cards", lambda: len(b := badges(browser)) == 5 and b, timeout=20)
    assert shown == {
        "ender": "Offline after error",
        "gone": "Not running",
        "mini": "Paused",
        "vcam-printer": "Operational",
        "voron-2": "Printing",
    }
    assert browser.text("#summary") == "1 printing, 1 paused, 1 idle, 2 need attention"
    assert "Thermal Runaway" in browser.text('.card[data-name="ender"] .detail')
    assert "journalctl -u octoprint@gone.service" in browser.text('.card[data-name="gone"] .detail')
    voron = '.card[data-name="voron-2"]'
    assert browser.text(f"{voron} .percent") == "42 %"
    assert browser.text(f"{voron} .left") == "1 h 02 min left"
    assert "214.9 °C / 215 °C" in browser.text(f"{voron} .temps")
    assert browser.one(f"{voron} .open").get_attribute("href") == f"{base}/open/voron-2"
    assert browser.console_errors() == []

    # The farm changes; the page follows without a reload.
    browser.script("window.__same = 1")
    state.printers["vcam-printer"].job = job_body("Printing", "gear.gcode", 5.0, 600)
    browser.wait_for("the idle printer's card to say Printing", lambda: badges(browser)["vcam-printer"] == "Printing")
    assert browser.script("return window.__same") == 1
    assert browser.text("#summary") == "2 printing, 1 paused, 0 idle, 2 need attention"


def test_the_camera_picture_refreshes_and_the_stream_runs_only_on_demand(door: tuple[FrontDoor, Browser, str]) -> None:
    state, browser, base = door
    browser.get(f"{base}/")
    card = '.card[data-name="vcam-printer"]'
    browser.wait_for("the camera's first picture", lambda: browser.script(
        f"return document.querySelector('{card} .snapshot')?.naturalWidth") == 32, timeout=20)  # fmt: skip
    first = state.snapshots
    browser.wait_for("the next snapshots", lambda: state.snapshots >= first + 1, timeout=20)
    assert state.streams_total == 0, "a stream was opened that nobody asked for"

    browser.one(f"{card} .live").click()
    browser.wait_for("the live stream", lambda: state.streams_open == 1, timeout=10)
    assert browser.one(f"{card} .live").get_attribute("aria-pressed") == "true"
    browser.one(f"{card} .live").click()
    browser.wait_for("the stream to close", lambda: state.streams_open == 0, timeout=10)


def test_a_hidden_page_asks_nothing(door: tuple[FrontDoor, Browser, str]) -> None:
    state, browser, base = door
    browser.get(f"{base}/")
    browser.wait_for("cards", lambda: len(badges(browser)) == 5, timeout=20)
    browser.one('.card[data-name="vcam-printer"] .live').click()
    browser.wait_for("the live stream", lambda: state.streams_open == 1, timeout=10)
    # Headless chromium has no other tab to switch to: the page is told it is hidden, as a
    # browser tells it when the tab goes to the background or the tablet's screen turns off.
    browser.script(
        "Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});"
        "document.dispatchEvent(new Event('visibilitychange'))"
    )
    browser.wait_for("the stream to close when hidden", lambda: state.streams_open == 0, timeout=10)
    asked, pictures = state.farm_requests, state.snapshots
    # The window is the page's own clock, not the test's: a timer of the test's in the page, longer
    # than a round of either refresh (3 s and 5 s), asks the door once it fired. Once that request is
    # seen, a refresh still running would have fired and been seen too, however slow the machine.
    browser.script("setTimeout(() => fetch('/test-probe'), 6500)")
    browser.wait_for("the page's own 6.5 s timer to ask the door", lambda: state.probes == 1, timeout=60)
    assert (state.farm_requests, state.snapshots) == (asked, pictures), "a hidden page went on asking"
    browser.script(
        "Object.defineProperty(document, 'visibilityState', {value: 'visible', configurable: true});"
        "document.dispatchEvent(new Event('visibilitychange'))"
    )
    browser.wait_for("asking again once visible", lambda: state.farm_requests > asked, timeout=10)


def test_readable_on_a_phone(door: tuple[FrontDoor, Browser, str]) -> None:
    _state, browser, base = door
    browser.set_size(*PHONE)
    browser.get(f"{base}/")
    browser.wait_for("cards", lambda: len(badges(browser)) == 5, timeout=20)
    assert browser.script("return document.documentElement.scrollWidth <= window.innerWidth")
    widths = browser.script("return [...document.querySelectorAll('.card')].map(c => c.getBoundingClientRect().width)")
    assert all(300 <= w <= 375 for w in widths), widths
    # Text at least 16 px for the names and states: readable at arm's length.
    sizes = browser.script(
        "return [...document.querySelectorAll('.name, .badge')].map(e => parseFloat(getComputedStyle(e).fontSize))"
    )
    assert min(sizes) >= 16, sizes


def show_found(door: tuple[FrontDoor, Browser, str], tmp_path: Path, devices: list[Device]) -> None:
    """The farm page with devices, as one scan of octobrixd's saw them, in its found list."""
    state, browser, base = door
    (tmp_path / "proc").mkdir()
    seen = complete(devices, config=None, layout=Layout(tmp_path), query_formats=None).devices
    state.found = [item.to_json() for item in build_found(seen, None)]
    browser.get(f"{base}/")
    browser.wait_for("the found list", lambda: len(browser.script(
        "return [...document.querySelectorAll('.found-item')]")) == len(devices), timeout=20)  # fmt: skip


def test_a_found_board_is_added_with_only_its_name_and_a_card_removed_after_asking(
    door: tuple[FrontDoor, Browser, str], tmp_path: Path
) -> None:
    state, browser, _base = door
    show_found(door, tmp_path, [printer("/dev/ttyUSB0", "1-1", "SAME"), printer("/dev/ttyUSB1", "1-2", "SAME")])
    first = f'.found-item[data-id="{state.found[0]["id"]}"]'
    assert "USB port 1-1" in browser.text(f"{first} .facts") and "serial SAME" in browser.text(f"{first} .facts")
    assert "Bound by USB port" in browser.text(f"{first} .port-note")
    assert "follows the cable" in browser.text(f"{first} .port-note")
    name = browser.one(f"{first} .name")
    assert name.get_attribute("value") == state.found[0]["proposed_name"]
    name.clear()
    name.send_keys("prusa")
    browser.one(f"{first} button").click()
    browser.wait_for("the add request", lambda: state.posted, timeout=10)
    assert state.posted == [("/api/add", {"device": state.found[0]["id"], "name": "prusa"})]
    browser.wait_for("setting up", lambda: "Setting up prusa" in browser.text("#found-result"), timeout=10)
    state.setting_up = {"prusa": "printer", "mini": "printer"}
    browser.wait_for("its setting-up entry", lambda: "prusa: setting up" in browser.text("#found-list"), timeout=10)
    assert "mini: setting up" not in browser.text("#found-list"), "one with a card already is not listed"

    state.answer = {"ok": False, "error": "printers.mini: mini is printing, so it is not taken out", "hint": "wait"}
    browser.script("window.confirm = () => true")
    browser.one('.card[data-name="mini"] .remove').click()
    browser.wait_for("the refusal", lambda: "mini is printing" in browser.text("#problem"), timeout=10)
    assert state.posted[-1] == ("/api/remove", {"kind": "printer", "name": "mini"})
    browser.script("window.confirm = () => false")
    browser.one('.card[data-name="voron-2"] .remove').click()
    time.sleep(0.5)
    assert state.posted[-1][1]["name"] == "mini", "nothing is removed without a yes"
    assert browser.console_errors() == [] or all("409" in e for e in browser.console_errors())


def test_a_found_camera_off_usb_says_it_is_not_on_usb_and_why_a_twin_cannot_be_added(
    door: tuple[FrontDoor, Browser, str], tmp_path: Path
) -> None:
    state, browser, _base = door
    show_found(
        door,
        tmp_path,
        [loopback("/dev/video10", "Lab Cam"), loopback("/dev/video11", "Twin"), loopback("/dev/video12", "Twin")],
    )
    lab, twin = (f'.found-item[data-id="{item["id"]}"]' for item in state.found[:2])
    assert browser.text(f"{lab} .facts") == "Lab Cam, not on USB (a virtual device), now /dev/video10"
    assert browser.text(f"{lab} .port-note").startswith("Bound by its V4L2 name 'Lab Cam' (it is not on USB)")
    assert browser.one(f"{lab} button").is_enabled()
    note = browser.text(f"{twin} .port-note")
    assert note.startswith("Cannot be added: its V4L2 name 'Twin' is also the name of /dev/video12"), note
    assert "card_label" in note
    assert not browser.one(f"{twin} button").is_enabled()
    shown = browser.text("#found-list")
    assert "null" not in shown and "undefined" not in shown and "USB port" not in shown, shown
