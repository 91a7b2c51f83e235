"""The farm overview in a real browser (issue #15): octobrix installed by install.sh in a systemd
container with three of OctoPrint's virtual printers (one with a dash in its name), the front door
on port 80; Debian's chromium, headless, driven by Selenium (tests/lab/harness/browser.py).

Through http://127.0.0.1/ and http://[::1]/: the farm login once; the overview shows three cards
with their states; a print started through OctoPrint's API (a G-code file uploaded and printed;
the virtual printer dwells through it) turns that printer's card to Printing with its progress
going up, without a reload; the card's title opens that printer's OctoPrint, whose Control tab
shows without a second login. Screenshots go to test-output/overview-browser/ in the checkout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from octobrixd.config.model import default_door_port
from tests.lab.harness.browser import PHONE, TABLET, Browser
from tests.lab.harness.container import Container, booted
from tests.lab.harness.installed import farm_base, install_checkout
from tests.lab.harness.installs import api, holding_printer_ports, upload_gcode, wait_operational
from tests.lab.harness.project import REPO

pytestmark = pytest.mark.lab

PRINTERS = {"vmk3": 5500, "voron-2": 5501, "ender": 5502}
# Each printer's own origin on the front door is held with its port (holding_printer_ports).
HELD_PORTS = [80, *range(5500, 5510)]
OUT = REPO / "test-output" / "overview-browser"
# 240 dwells of a quarter second: a print of about a minute, long enough to watch it move.
DWELLS = 240


def farm_config() -> str:
    return "".join(f"[printers.{name}]\nvirtual = true\nport = {port}\n\n" for name, port in PRINTERS.items())


@pytest.fixture(scope="module")
def farm(lab_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    workdir = Path(tmp_path_factory.mktemp("overview", numbered=True))
    with holding_printer_ports(HELD_PORTS), booted(workdir / "ct", boot_timeout=120, base=farm_base) as box:
        box.write_file("/etc/octobrix.toml", farm_config())
        installed = install_checkout(box)
        assert installed.returncode == 0, f"install.sh failed:\n{installed.stdout}\n{installed.stderr}"
        for name, port in PRINTERS.items():
            wait_operational(box, name, port)
        yield box


def farm_login(box: Container) -> tuple[str, str]:
    secret = json.loads(box.read_file("/var/lib/octobrix/.secrets/farm.json"))
    return str(secret["username"]), str(secret["password"])


def press_print(box: Container, name: str) -> str:
    """Upload a G-code file and print it, as OctoPrint's Upload-and-Print does (a multipart POST)."""
    filename = f"overview-{name}.gcode"
    gcode = "M104 S210\nM140 S60\nG28\n" + "".join(
        f"G1 X{i % 200} Y{(i * 7) % 200} F3000\nG4 P250\n" for i in range(DWELLS)
    )
    upload_gcode(box, PRINTERS[name], name, filename, gcode, print_it=True)
    return filename


def cards(browser: Browser) -> dict[str, dict[str, Any]]:
    """Each card as the page shows it: its state attribute, badge words, progress text, and link."""
    found: dict[str, dict[str, Any]] = browser.script(
        """
        const out = {};
        for (const card of document.querySelectorAll('#cards .card')) {
          const q = (s) => card.querySelector(s);
          out[card.dataset.name] = {
            state: card.dataset.state, badge: q('.badge').textContent, href: q('.open').getAttribute('href'),
            file: q('.job').hidden ? null : q('.file').textContent,
            percent: q('.job').hidden ? null : q('.percent').textContent,
            bar: q('.bar').hidden ? null : q('.bar').value,
            temps: q('.temps').hidden ? null : q('.temps').textContent,
          };
        }
        return out;
        """
    )
    return found


def no_sideways_scroll(browser: Browser) -> bool:
    return bool(browser.script("return document.documentElement.scrollWidth <= window.innerWidth"))


@pytest.mark.parametrize(("host", "printer"), [("127.0.0.1", "voron-2"), ("[::1]", "vmk3")])
def test_the_farm_overview_in_a_real_browser(farm: Container, host: str, printer: str) -> None:
    user, password = farm_login(farm)
    base = f"http://{host}"
    out = OUT / ("ipv4" if host == "127.0.0.1" else "ipv6")
    with Browser(out, TABLET) as browser:
        try:
            browser.get(f"{base}/")
            browser.wait_for("the farm login form", lambda: browser.all("input[name=password]"), timeout=30)
            browser.screenshot("login")
            browser.fill_login(user, password)

            shown = browser.wait_for(
                "three cards, each with its printer's state",
                lambda: (
                    (c := cards(browser)) and len(c) == 3 and all(v["state"] == "operational" for v in c.values()) and c
                ),
                timeout=60,
            )
            assert set(shown) == set(PRINTERS)
            for name, card in shown.items():
                assert card["badge"] == "Operational"
                assert card["href"] == f"/open/{name}"
                assert "Nozzle" in card["temps"] and "Bed" in card["temps"]
            assert browser.text("#summary") == "0 printing, 3 idle, 0 need attention"
            assert not browser.one("#problem").is_displayed(), browser.text("#problem")
            browser.screenshot("overview")
            browser.set_size(*PHONE)
            assert no_sideways_scroll(browser), "the overview scrolls sideways on a 375 px phone"
            browser.screenshot("overview-phone")
            browser.set_size(*TABLET)

            # A mark in this page's JavaScript: a reload would wipe it.
            browser.script("window.__octobrixSamePage = 'yes'")
            filename = press_print(farm, printer)
            first = browser.wait_for(
                f"{printer}'s card to say Printing with its progress",
                lambda: (c := cards(browser)[printer])["state"] == "printing" and c["bar"] is not None and c,
                timeout=60,
            )
            assert first["badge"].startswith("Printing")
            assert first["file"] == filename
            assert re.fullmatch(r"\d+ %", first["percent"]), first["percent"]
            later = browser.wait_for(
                f"{printer}'s progress to go up by itself",
                lambda: (c := cards(browser)[printer])["bar"] is not None and c["bar"] > first["bar"] and c,
                timeout=60,
            )
            assert browser.script("return window.__octobrixSamePage") == "yes", "the page reloaded"
            assert later["file"] == filename
            # OctoPrint says how long is left once it has an estimate, seconds into the print.
            browser.wait_for(
                f"{printer}'s time left",
                lambda: re.search(
                    r"\d+ min left|less than a minute left", browser.text(f'.card[data-name="{printer}"] .left')
                ),
                timeout=60,
            )
            assert browser.text("#summary") == "1 printing, 2 idle, 0 need attention"
            browser.screenshot("printing")

            browser.one(f'.card[data-name="{printer}"] .open').click()
            own = f"{base}:{default_door_port(PRINTERS[printer])}/"
            browser.wait_for(f"{printer}'s OctoPrint on its own origin", lambda: browser.url == own)
            browser.open_octoprint_tab("control")
            assert not browser.all("#login-user") or not browser.one("#login-user").is_displayed(), "a second login"
            browser.screenshot("octoprint-control")
            assert browser.url.startswith(own), "single sign-on: OctoPrint's own session, no login asked"
        finally:
            cancel(farm, printer)
    print(f"screenshots: {', '.join(str(p) for p in browser.shots)}")


def cancel(box: Container, name: str) -> None:
    try:
        job = api(box, PRINTERS[name], name, "/api/job")
        if job and str(job.get("state", "")).startswith(("Printing", "Paused")):
            api(box, PRINTERS[name], name, "/api/job", {"command": "cancel"})
    except OSError:
        pass


# A plugin's script in one printer's page (ender's origin), run as that page's own code: what it can
# do to another printer (voron-2) and to the farm. Each read answers "read STATUS" or "blocked".
ATTACK = """
const other = `http://${location.hostname}:%(other)d`, farm = `http://${location.hostname}`;
async function read(url) {
  try { const r = await fetch(url, {credentials: "include"}); return `read ${r.status}`; }
  catch (e) { return "blocked"; }
}
const got = {
  own: await read("/api/settings"),
  other_settings: await read(other + "/api/settings"),
  other_users: await read(other + "/api/access/users"),
  farm_found: await read(farm + "/api/found"),
  farm_page: await read(farm + "/api/farm"),
};
// Writes whose answers it cannot read: the servers must refuse them.
const upload = new FormData();
upload.append("file", new Blob(["G28\\n"]), "%(evil)s");
await fetch(other + "/api/files/local", {method: "POST", mode: "no-cors", credentials: "include", body: upload});
await fetch(farm + "/api/add", {method: "POST", mode: "no-cors", credentials: "include",
  headers: {"Content-Type": "text/plain"}, body: JSON.stringify({device: "x", name: "%(evil_name)s"})});
await fetch(farm + "/logout", {method: "POST", mode: "no-cors", credentials: "include"});
return got;
"""


def test_a_printers_page_cannot_read_or_change_another_printer_or_the_farm(farm: Container) -> None:
    """OctoPrint's plugins run their own script in its pages. In a browser logged in to the farm and
    signed on to ender, a script of ender's page tries to read voron-2 and the farm's interfaces and
    to upload to voron-2, add to the farm and log the browser out: every read is blocked by the
    browser (other origins), every write refused by the front door. Its own printer it reads (the
    positive control: the script ran)."""
    user, password = farm_login(farm)
    attacker, victim = "ender", "voron-2"
    evil = "planted-by-ender.gcode"
    with Browser(OUT / "cross-origin", TABLET) as browser:
        browser.get("http://127.0.0.1/")
        browser.wait_for("the farm login form", lambda: browser.all("input[name=password]"), timeout=30)
        browser.fill_login(user, password)
        browser.wait_for("the farm page", lambda: browser.all(f'.card[data-name="{attacker}"] .open'), timeout=60)
        browser.get(f"http://127.0.0.1/open/{attacker}")
        own = f"http://127.0.0.1:{default_door_port(PRINTERS[attacker])}/"
        browser.wait_for(f"{attacker}'s OctoPrint on its own origin", lambda: browser.url == own, timeout=60)
        script = ATTACK % {"other": default_door_port(PRINTERS[victim]), "evil": evil, "evil_name": "evil"}
        got = browser.run_async(script)
        assert got == {
            "own": "read 200",
            "other_settings": "blocked",
            "other_users": "blocked",
            "farm_found": "blocked",
            "farm_page": "blocked",
        }, got
        # Still logged in to the farm: its page answers, the logout from ender's page did nothing.
        browser.get("http://127.0.0.1/")
        browser.wait_for("the farm page, still logged in", lambda: browser.all(".card"), timeout=60)
    files = api(farm, PRINTERS[victim], victim, "/api/files/local")
    assert evil not in json.dumps(files), "the upload from another printer's page was refused"
    assert "evil" not in farm.read_file("/etc/octobrix.toml"), "the farm's add interface refused it"
