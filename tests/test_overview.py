"""The farm overview's data (GET /api/farm): systemd's unit properties as `systemctl show` gives
them, and loopback stand-ins answering like OctoPrint (tests/octoprint_standin.py); the real
OctoPrints, systemd and browser are in tests/lab/test_overview_browser.py."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from octobrixd.config.model import Config, parse_config
from octobrixd.errors import OctobrixError
from octobrixd.system.paths import Layout
from octobrixd.web.overview import Asked, FarmOverview, farm, farm_view, gather
from tests.factories import systemd_says
from tests.octoprint_standin import KEY, Behaviour, job_body, octoprints, printer_body

NOW_USEC = time.monotonic_ns() // 1000


def unit(name: str, state: str = "active", up_seconds: float = 3600) -> dict[str, str]:
    active = state == "active"
    return {
        "Id": name, "LoadState": "not-found" if state == "not-installed" else "loaded",
        "ActiveState": "inactive" if state == "not-installed" else state,
        "SubState": "running" if active else "dead", "MainPID": "4242" if active else "0",
        "ActiveEnterTimestampMonotonic": str(int(NOW_USEC - up_seconds * 1e6)) if active else "0",
        "MemoryCurrent": str(90 * 1_048_576), "CPUUsageNSec": str(10**9),
    }  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def farm_config(ports: dict[str, int], extra: str = "") -> Config:
    text = ""
    for name, port in ports.items():
        match = "virtual = true" if name.startswith("v") else f'serial = "SN-{name}"'
        camera = f'camera = "{name}-cam"\n' if name == "voron-2" else ""
        text += f"[printers.{name}]\n{match}\nport = {port}\n{camera}\n"
    text += '[cameras.voron-2-cam]\nserial = "CAM1"\nport = 8081\n' if "voron-2" in ports else ""
    return parse_config(text + extra, "/etc/octobrix.toml")


def props_of(props: dict[str, dict[str, str]]) -> Any:
    """What `systemctl show` would say of these units (no systemd here)."""
    return lambda units: systemd_says({u: props[u] for u in units if u in props})


def by_name(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {card["name"]: card for card in view["printers"]}


def test_every_printer_is_a_card_with_what_a_maker_looks_at(tmp_path: Path) -> None:
    printing = Behaviour(
        job=job_body("Printing", "benchy.gcode", completion=42.44, time_left=3720),
        printer=printer_body(tool=(214.96, 215.0), bed=(59.9, 60.0), printing=True),
    )
    idle = Behaviour()
    with octoprints([printing, idle]) as (p1, p2):
        down = free_port()  # its service "runs", but nothing answers there
        config = farm_config({"voron-2": p1, "vmk3": p2, "ender": 5003, "prusa": 5004, "hung": down})
        props = {
            "octoprint@voron-2.service": unit("octoprint@voron-2.service"),
            "octoprint@vmk3.service": unit("octoprint@vmk3.service"),
            "octoprint@ender.service": unit("octoprint@ender.service", "failed"),
            "octoprint@prusa.service": unit("octoprint@prusa.service", "inactive"),
            "octoprint@hung.service": unit("octoprint@hung.service"),
            "ustreamer@voron-2-cam.service": unit("ustreamer@voron-2-cam.service"),
        }
        (tmp_path / "dev/octobrix").mkdir(parents=True)
        (tmp_path / "dev/octobrix/voron-2").touch()
        (tmp_path / "dev/octobrix/voron-2-cam").touch()
        view = farm_view(
            config, gather(config, Layout(tmp_path), {"voron-2": KEY, "vmk3": KEY}.get, query=props_of(props))
        )

    cards = by_name(view)
    assert list(cards) == sorted(cards)
    voron = cards["voron-2"]
    assert voron["state"] == "printing" and voron["state_text"] == "Printing"
    assert voron["url"] == "/open/voron-2", "through single sign-on to its own origin"
    assert voron["job"] == {"file": "benchy.gcode", "progress": 42.4, "print_time": 600, "time_left": 3720}
    assert voron["temperatures"] == {
        "tools": [{"name": "tool0", "actual": 215.0, "target": 215.0}],
        "bed": {"actual": 59.9, "target": 60.0},
    }
    assert voron["camera"] == {
        "name": "voron-2-cam",
        "snapshot": "/cam/voron-2-cam/snapshot",
        "stream": "/cam/voron-2-cam/stream",
        "state": "streaming",
    }
    assert cards["vmk3"]["state"] == "operational" and cards["vmk3"]["job"] is None
    assert cards["vmk3"]["temperatures"]["tools"][0]["actual"] == 21.3
    assert cards["ender"]["state"] == "not-running"
    assert "journalctl -u octoprint@ender.service" in cards["ender"]["detail"]
    assert cards["prusa"]["state"] == "not-running"
    # Running for an hour but refusing connections: not "starting" any more; the card says why.
    hung = cards["hung"]
    assert (hung["state"], hung["state_text"], hung["asked"]) == ("unreachable", "Cannot be asked", False)
    assert "no key" in hung["detail"]
    assert view["summary"]["text"] == "1 printing, 1 idle, 3 need attention"
    assert view["summary"]["total"] == 5


def test_a_printer_that_does_not_answer_is_said_so_in_time(tmp_path: Path) -> None:
    slow = Behaviour(delay=1.0)
    with octoprints([slow, Behaviour()]) as (p1, p2):
        config = farm_config({"slow": p1, "quick": p2})
        props = {f"octoprint@{n}.service": unit(f"octoprint@{n}.service") for n in ("slow", "quick")}
        started = time.monotonic()
        view = farm_view(config, gather(config, Layout(tmp_path), lambda _n: KEY, query=props_of(props), timeout=0.3))
        took = time.monotonic() - started
    cards = by_name(view)
    assert cards["slow"]["state"] == "unreachable"
    assert "not answering" in cards["slow"]["detail"] and "timed out" in cards["slow"]["detail"]
    assert cards["quick"]["state"] == "operational"
    assert took < 1.0, "a printer that does not answer held up the whole page"


def test_a_refused_key_says_so(tmp_path: Path) -> None:
    with octoprints([Behaviour()]) as (port,):
        config = farm_config({"vmk3": port})
        props = {"octoprint@vmk3.service": unit("octoprint@vmk3.service")}
        (card,) = farm_view(config, gather(config, Layout(tmp_path), lambda _n: "WRONG", query=props_of(props)))[
            "printers"
        ]
    assert card["state"] == "unreachable"
    assert card["detail"] == "its OctoPrint is HTTP 403 from /api/job"


@pytest.mark.parametrize(
    ("job", "printer", "device", "state", "text", "detail"),
    [
        (job_body("Paused", "a.gcode", 50.0, 100), printer_body(paused=True), "plugged", "paused", "Paused", None),
        (job_body("Offline"), None, "unplugged", "unplugged", "Unplugged", "plug its USB cable in"),
        (job_body("Offline"), None, "plugged", "offline", "Offline", "not connected"),
        (job_body("Opening serial connection"), None, "plugged", "connecting", "Opening serial connection", None),
        (
            job_body("Offline after error", error="Thermal Runaway"), None, "plugged",
            "error", "Offline after error", "Thermal Runaway",
        ),
        (
            job_body("Error: Printer halted. kill() called!"), printer_body(error=True), "plugged",
            "error", "Error", "Printer halted. kill() called!",
        ),
    ],
)  # fmt: skip
def test_state_words(  # noqa: PLR0917 - one parameter per column of the table
    tmp_path: Path,
    job: dict[str, Any],
    printer: dict[str, Any] | None,
    device: str,
    state: str,
    text: str,
    detail: str | None,
) -> None:
    with octoprints([Behaviour(job=job, printer=printer)]) as (port,):
        config = farm_config({"ender": port})
        if device == "plugged":
            (tmp_path / "dev/octobrix").mkdir(parents=True)
            (tmp_path / "dev/octobrix/ender").touch()
        props = {"octoprint@ender.service": unit("octoprint@ender.service")}
        (card,) = farm_view(config, gather(config, Layout(tmp_path), lambda _n: KEY, query=props_of(props)))["printers"]
    assert (card["state"], card["state_text"]) == (state, text)
    assert (card["detail"] or "").startswith(detail or "")
    assert (card["detail"] is None) == (detail is None)
    if state == "paused":
        assert card["job"]["progress"] == 50.0 and card["job"]["time_left"] == 100


def test_a_held_back_restart_is_on_the_card(tmp_path: Path) -> None:
    with octoprints([Behaviour(job=job_body("Printing", "x.gcode", 10.0, 50))]) as (port,):
        config = farm_config({"vmk3": port})
        manifest = tmp_path / "var/lib/octobrix/.manifest.json"
        manifest.parent.mkdir(parents=True)
        manifest.write_text(
            json.dumps({"version": 1, "files": {}, "units": {}, "deferred": ["octoprint@vmk3.service"]})
        )
        props = {"octoprint@vmk3.service": unit("octoprint@vmk3.service")}
        (card,) = farm_view(config, gather(config, Layout(tmp_path), lambda _n: KEY, query=props_of(props)))["printers"]
    assert card["restart_pending"] is True and card["state"] == "printing"


def test_a_printer_taken_out_of_the_config_while_it_prints_keeps_its_card(tmp_path: Path) -> None:
    with octoprints([Behaviour(job=job_body("Printing", "x.gcode", 10.0, 50))]) as (port,):
        config = farm_config({"vmk3": port + 1})
        manifest = tmp_path / "var/lib/octobrix/.manifest.json"
        manifest.parent.mkdir(parents=True)
        manifest.write_text(json.dumps({"version": 1, "deferred": ["octoprint@old.service"]}))
        # Its OctoPrint still runs on the port it started with (its command line says so).
        (tmp_path / "proc/4242").mkdir(parents=True)
        (tmp_path / "proc/4242/cmdline").write_bytes(f"octoprint\0serve\0--port\0{port}\0".encode())
        props = {"octoprint@old.service": unit("octoprint@old.service")}
        cards = by_name(farm_view(config, gather(config, Layout(tmp_path), lambda _n: KEY, query=props_of(props))))
    old = cards["old"]
    assert (old["device"], old["restart_pending"], old["state"], old["url"]) == (
        "removed",
        True,
        "printing",
        "/open/old",
    )
    assert old["camera"] is None


def test_only_running_octoprints_are_asked_and_all_at_once(tmp_path: Path) -> None:
    shared = Behaviour(delay=0.5)  # one tally across four OctoPrints
    stopped = Behaviour()
    with octoprints([shared] * 4 + [stopped]) as ports:
        names = [f"v{i}" for i in range(5)]
        config = farm_config(dict(zip(names, ports, strict=True)))
        props = {f"octoprint@{n}.service": unit(f"octoprint@{n}.service") for n in names[:4]}
        props["octoprint@v4.service"] = unit("octoprint@v4.service", "inactive")
        gather(config, Layout(tmp_path), lambda _n: KEY, query=props_of(props))
    # Each running one got its /api/job and /api/printer, all four side by side; the stopped one was left alone.
    assert (shared.hits, stopped.hits) == (8, 0)
    assert shared.most_at_once == 4


def test_nothing_is_asked_until_someone_looks_and_open_tabs_share_one_round(tmp_path: Path) -> None:
    behaviour = Behaviour()
    now = [100.0]
    with octoprints([behaviour]) as (port,):
        config = farm_config({"vmk3": port})
        props = {"octoprint@vmk3.service": unit("octoprint@vmk3.service")}

        overview = FarmOverview(
            lambda: config, lambda _n: KEY, layout=Layout(tmp_path), clock=lambda: now[0], query=props_of(props)
        )
        time.sleep(0.3)
        assert behaviour.hits == 0, "the overview asked an OctoPrint while nobody looked"
        first = overview.answer()
        second = overview.answer()
        assert behaviour.hits == 2 and first == second
        now[0] += 2.5
        third = json.loads(overview.answer())
        assert behaviour.hits == 4
    assert third["printers"][0]["state"] == "operational"


def test_the_view_of_an_empty_farm(tmp_path: Path) -> None:
    config = parse_config("", "/etc/octobrix.toml")
    view = farm_view(config, Asked(printers=[], cameras=[], answers={}))
    assert view["printers"] == [] and view["summary"]["text"] == "0 printing, 0 idle, 0 need attention"


def test_without_systemd_the_cards_still_say_what_each_octoprint_says(tmp_path: Path) -> None:
    def no_systemd(_units: object) -> Any:
        raise OctobrixError("cannot ask systemd about the instances: systemctl failed (exit 1): no bus")

    with octoprints([Behaviour(job=job_body("Printing", "x.gcode", 10.0, 50))]) as (port,):
        config = farm_config({"vmk3": port, "gone": free_port()})
        view = farm_view(config, gather(config, Layout(tmp_path), lambda _n: KEY, query=no_systemd))
    cards = by_name(view)
    assert cards["vmk3"]["state"] == "printing"
    assert cards["gone"]["state"] == "unreachable" and "not answering" in cards["gone"]["detail"]
    assert view["problems"] == ["cannot ask systemd about the instances: systemctl failed (exit 1): no bus"]


def test_the_web_service_hook_keeps_one_cache_per_context(tmp_path: Path) -> None:
    @dataclass(frozen=True)
    class Context:
        config: Config
        readonly_keys: dict[str, str]
        layout: Layout

    behaviour = Behaviour()
    with octoprints([behaviour]) as (port,):
        context = Context(farm_config({"vmk3": port}), {"vmk3": KEY}, Layout(tmp_path))
        first = json.loads(farm(context))
        assert json.loads(farm(context)) == first
        asked = behaviour.hits
        # A new context (the service restarted on a config change) asks again.
        assert json.loads(farm(Context(context.config, {}, Layout(tmp_path))))["printers"][0]["state"] == "unreachable"
    assert asked <= 2
    assert first["printers"][0]["name"] == "vmk3"
