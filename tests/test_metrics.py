"""GET /metrics (octobrixd/web/metrics.py): the farm for Prometheus, from the overview's records.

The records come from a real round of asks (octobrixd.web.overview.gather) of loopback stand-ins
answering like OctoPrint and ustreamer, with systemd's properties as `systemctl show` gives them (no
systemd here); the text is read back with prometheus-client's own parser. The real Prometheus,
OctoPrints, systemd and nginx are in tests/lab/test_metrics.py.
"""

from __future__ import annotations

import datetime
import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from octobrixd.config.model import Config, parse_config
from octobrixd.daemon import Daemon, Notifier
from octobrixd.devices import plug_counts
from octobrixd.devices.hotplug import Action, DeviceEvent
from octobrixd.devices.plug_counts import PlugCount
from octobrixd.farm import backup_state
from octobrixd.farm.backup_state import LastBackup
from octobrixd.frontdoor import auth, secrets
from octobrixd.names import DeviceKind
from octobrixd.system.paths import Layout
from octobrixd.web.context import WebContext
from octobrixd.web.metrics import FarmFacts, last_backups, render
from octobrixd.web.overview import gather, overview_of
from octobrixd.web.server import FarmServer, session_cookie, tcp_listener
from tests.httpstub import QuietHandler, serving
from tests.octoprint_standin import KEY, Behaviour, job_body, octoprints, printer_body
from tests.test_overview import free_port, props_of, unit

NOW = 1_780_000_000.0
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: bytes) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


class UStreamer(QuietHandler):
    def do_GET(self) -> None:
        body = {"ok": True, "result": {"source": {"online": True, "captured_fps": 15, "resolution": {"width": 640}},
                                       "stream": {"queued_fps": 12, "clients": 2}}}  # fmt: skip
        self.reply(200, json.dumps(body).encode())


def config_for(ports: dict[str, int], camera_port: int) -> Config:
    text = "".join(f'[printers.{n}]\nserial = "SN-{n}"\nport = {p}\n\n' for n, p in ports.items())
    text += f"[printers.vdemo]\nvirtual = true\nport = {free_port()}\n\n"
    text += f'[cameras.cam]\nserial = "CAM1"\nport = {camera_port}\n'
    return parse_config(text, "/etc/octobrix.toml")


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[tuple[Config, Layout, list[Behaviour]]]:
    printing = Behaviour(
        job=job_body("Printing", "benchy.gcode", completion=42.5, time_left=3720),
        printer=printer_body(tool=(214.96, 215.0), bed=(59.9, 60.0), printing=True),
    )
    idle = Behaviour()
    with octoprints([printing, idle]) as (p1, p2), serving(UStreamer) as cam:
        config = config_for({"voron": p1, "prusa": p2, "ender": free_port()}, cam)
        (tmp_path / "dev/octobrix").mkdir(parents=True)
        for name in ("voron", "cam"):
            (tmp_path / "dev/octobrix" / name).touch()
        yield config, Layout(tmp_path), [printing, idle]


def units(config: Config) -> dict[str, dict[str, str]]:
    props = {f"octoprint@{n}.service": {**unit(f"octoprint@{n}.service"), "NRestarts": "0"} for n in config.printers}
    props["octoprint@voron.service"]["NRestarts"] = "3"
    props["octoprint@ender.service"] = {**unit("octoprint@ender.service", "failed"), "NRestarts": "5"}
    props["ustreamer@cam.service"] = unit("ustreamer@cam.service")
    return props


def test_a_scrape_says_each_printers_state_job_temperatures_and_counters(
    farm: tuple[Config, Layout, list[Behaviour]],
) -> None:
    config, layout, _ = farm
    asked = gather(config, layout, lambda _n: KEY, query=props_of(units(config)))
    week_ago = datetime.datetime.fromtimestamp(NOW - 7 * 86400, datetime.UTC).isoformat()
    facts = FarmFacts(
        config_valid=True, applied_at=NOW - 60, now=NOW,
        backups={"voron": LastBackup("voron", week_ago, ok=True), "gone": LastBackup("gone", week_ago, ok=True),
                 "prusa": LastBackup("prusa", "not a date", ok=False, error="disk full")},
        plugs={"voron": PlugCount(4, 3), "cam": PlugCount(1, 0)},
    )  # fmt: skip
    found = samples(render(config, asked, facts))

    assert value(found, "octobrix_printer_printing", printer="voron") == 1.0
    assert value(found, "octobrix_printer_state", printer="voron", state="printing") == 1.0
    assert value(found, "octobrix_printer_state", printer="voron", state="operational") == 0.0
    assert value(found, "octobrix_printer_progress_ratio", printer="voron") == pytest.approx(0.425)
    assert value(found, "octobrix_printer_print_time_left_seconds", printer="voron") == 3720.0
    assert value(found, "octobrix_printer_temperature_celsius", printer="voron", heater="tool0") == 214.96
    assert value(found, "octobrix_printer_temperature_target_celsius", printer="voron", heater="bed") == 60.0
    assert value(found, "octobrix_printer_restarts_total", printer="voron") == 3.0
    assert value(found, "octobrix_printer_device_plugged", printer="voron") == 1.0
    assert value(found, "octobrix_printer_plugs_total", printer="voron") == 4.0
    assert value(found, "octobrix_printer_unplugs_total", printer="voron") == 3.0
    # One series per state, exactly one of them 1.
    for name in ("voron", "prusa", "ender", "vdemo"):
        states = [v for (metric, labels), v in found.items()
                  if metric == "octobrix_printer_state" and ("printer", name) in labels]  # fmt: skip
        assert len(states) == 10 and sum(states) == 1.0, name

    # Idle: not printing, no progress or time left; its device is missing, never plugged in.
    assert value(found, "octobrix_printer_printing", printer="prusa") == 0.0
    assert value(found, "octobrix_printer_state", printer="prusa", state="operational") == 1.0
    assert value(found, "octobrix_printer_progress_ratio", printer="prusa") is None
    assert value(found, "octobrix_printer_device_plugged", printer="prusa") == 0.0
    assert value(found, "octobrix_printer_plugs_total", printer="prusa") == 0.0
    # Its service failed: not up, not running, and systemd's restarts counted.
    assert value(found, "octobrix_printer_up", printer="ender") == 0.0
    assert value(found, "octobrix_printer_state", printer="ender", state="not-running") == 1.0
    assert value(found, "octobrix_printer_restarts_total", printer="ender") == 5.0
    # A virtual printer has no device to plug.
    assert value(found, "octobrix_printer_device_plugged", printer="vdemo") is None

    assert value(found, "octobrix_camera_streaming", camera="cam") == 1.0
    assert value(found, "octobrix_camera_fps", camera="cam") == 12.0
    assert value(found, "octobrix_camera_clients", camera="cam") == 2.0
    assert value(found, "octobrix_camera_plugs_total", camera="cam") == 1.0

    assert value(found, "octobrix_config_valid") == 1.0
    assert value(found, "octobrix_last_apply_timestamp_seconds") == NOW - 60
    assert value(found, "octobrix_backup_age_seconds", printer="voron") == pytest.approx(7 * 86400)
    assert value(found, "octobrix_backup_ok", printer="prusa") == 0.0
    assert value(found, "octobrix_backup_age_seconds", printer="prusa") is None, "a time it cannot read is left out"
    assert value(found, "octobrix_backup_ok", printer="gone") is None, "only the configured printers"


def test_an_invalid_config_and_a_farm_never_applied_are_said(farm: tuple[Config, Layout, list[Behaviour]]) -> None:
    config, layout, _ = farm
    asked = gather(config, layout, lambda _n: KEY, query=props_of(units(config)))
    found = samples(render(config, asked, FarmFacts(config_valid=False, applied_at=None, now=NOW)))
    assert value(found, "octobrix_config_valid") == 0.0
    assert value(found, "octobrix_last_apply_timestamp_seconds") is None


def test_plug_counts_go_on_from_the_file_and_a_broken_file_breaks_nothing(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    (tmp_path / "var/lib/octobrix").mkdir(parents=True)
    plug_counts.count(layout, "voron", plugged=True)
    plug_counts.count(layout, "voron", plugged=False)
    plug_counts.count(layout, "voron", plugged=True)
    assert plug_counts.read_counts(layout) == {"voron": PlugCount(2, 1)}
    assert (layout.path(plug_counts.STATE_FILE).stat().st_mode & 0o777) == 0o644, "the web service reads it"
    layout.path(plug_counts.STATE_FILE).write_text('{"devices": {"voron": {"plugged": "x"}, "cam": {"plugged": 1}}}')
    assert plug_counts.read_counts(layout) == {"cam": PlugCount(1, 0)}
    layout.path(plug_counts.STATE_FILE).write_text("not json")
    assert plug_counts.read_counts(layout) == {}


def test_an_unreadable_backup_record_leaves_the_backups_out_and_breaks_nothing(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    backup_state.record(layout, [LastBackup("voron", "2026-12-01T03:30:00+00:00", ok=True)])
    assert set(last_backups(layout)) == {"voron"}, "the positive control: a good record is read"
    layout.path(backup_state.STATE_FILE).write_text("{not json")
    assert last_backups(layout) == {}


def test_octobrixd_counts_the_plugs_of_configured_devices_only(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    (tmp_path / "var/lib/octobrix").mkdir(parents=True)
    daemon = Daemon(tmp_path / "octobrix.toml", layout, Notifier())
    daemon.config = config_for({"voron": 5001}, 8081)

    def event(action: Action, name: str | None) -> DeviceEvent:
        return DeviceEvent(action, "tty", "/dev/ttyUSB0", name, DeviceKind.PRINTER, usb=True)

    for seen in (event(Action.ADD, "voron"), event(Action.REMOVE, "voron"), event(Action.ADD, "voron"),
                 event(Action.CHANGE, "voron"), event(Action.ADD, "stranger"), event(Action.ADD, None),
                 DeviceEvent(Action.REMOVE, "video4linux", "/dev/video0", "cam", DeviceKind.CAMERA,
                             usb=True)):  # fmt: skip
        daemon.count_plug(seen)
    daemon.api_calls.shutdown(wait=True)
    assert plug_counts.read_counts(layout) == {"voron": PlugCount(2, 1), "cam": PlugCount(0, 1)}


def test_apply_makes_the_metrics_token_once_and_the_service_gets_only_its_digest(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    first = secrets.sync(layout, [])
    token = secrets.read_metrics_token(layout)
    assert first.web_changed and token is not None and len(token) >= 32
    assert layout.path(secrets.METRICS_TOKEN).stat().st_mode & 0o077 == 0
    copy = layout.path(secrets.WEB_METRICS)
    assert copy.stat().st_mode & 0o077 == 0 and token not in copy.read_text()
    digest = auth.read_token_digest(copy)
    assert auth.bearer_ok(digest, f"Bearer {token}")
    assert not auth.bearer_ok(digest, f"Bearer {token}x") and not auth.bearer_ok(digest, token)
    assert not auth.bearer_ok(None, f"Bearer {token}")
    again = secrets.sync(layout, [])
    assert not again.web_changed and secrets.read_metrics_token(layout) == token, "made once"


def get(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture
def web(farm: tuple[Config, Layout, list[Behaviour]], request: pytest.FixtureRequest) -> Iterator[tuple[int, str]]:
    """The web service on loopback for the farm ([frontdoor] metrics as the test's parameter says, else on)."""
    config, layout, _ = farm
    enabled = getattr(request, "param", True)
    config = config.model_copy(update={"frontdoor": config.frontdoor.model_copy(update={"metrics": enabled})})
    login = auth.make_login("farm", "pw")
    token = "a-metrics-token"  # noqa: S105 - the test's own
    context = WebContext(config=config, login=login, readonly_keys=dict.fromkeys(config.printers, KEY), layout=layout,
                         metrics_token_sha256=auth.token_digest(token))  # fmt: skip
    # systemd's word through the overview's own cache, as the service would ask it.
    overview = overview_of(context)
    overview._query = props_of(units(config))  # no systemd here
    port = free_port()
    server = FarmServer(context, tcp_listener("127.0.0.1", port))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield port, f"{auth.COOKIE}={session_cookie(context)}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_endpoint_needs_the_token_or_the_farm_login_and_shares_the_overviews_asks(
    web: tuple[int, str], farm: tuple[Config, Layout, list[Behaviour]]
) -> None:
    port, cookie = web
    behaviours = farm[2]
    assert sum(b.hits for b in behaviours) == 0, "nothing is asked while nobody scrapes"
    status, body = get(port, "/metrics", {})
    assert status == 401 and b"metrics token" in body
    assert get(port, "/metrics", {"Authorization": "Bearer wrong"})[0] == 401
    assert sum(b.hits for b in behaviours) == 0, "a refused scrape asks nothing"
    status, body = get(port, "/metrics", {"Authorization": "Bearer a-metrics-token"})
    assert status == 200 and b'octobrix_printer_printing{printer="voron"} 1.0' in body
    asked = sum(b.hits for b in behaviours)
    assert asked > 0
    # The overview page and a second scrape within the cache's 2 s share that round of asks.
    assert get(port, "/api/farm", {"Cookie": cookie})[0] == 200
    assert get(port, "/metrics", {"Cookie": cookie})[0] == 200
    assert sum(b.hits for b in behaviours) == asked


@pytest.mark.parametrize("web", [False], indirect=True)
def test_off_unless_enabled(web: tuple[int, str]) -> None:
    port, cookie = web
    assert get(port, "/metrics", {"Authorization": "Bearer a-metrics-token"})[0] == 404
    assert get(port, "/metrics", {"Cookie": cookie})[0] == 404
