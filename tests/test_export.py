"""`octobrixctl export`: the renderers (records in, text out) checked against what FDM Monster's and
OctoFarm's importers require, and the command against a stand-in for OctoPrint's Application Keys
API (the real FDM Monster and OctoPrint run in tests/lab/test_farm_manager.py)."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from octobrixd.cli import export as export_cli
from octobrixd.cli import main as cli
from octobrixd.config.model import parse_config
from octobrixd.export.formats import ExportedPrinter, Tool, render, render_fdm_monster, render_octofarm
from octobrixd.instances.credentials import Credentials, CredentialsNeedRootError
from octobrixd.system.paths import Layout
from octobrixd.urls import camera_url, printer_url
from tests.httpstub import QuietHandler, serving

ADMIN_KEY = "A" * 32
PRINTERS = [
    ExportedPrinter("prusa", "http://farm.local:5000/", "k" * 43, "http://farm.local:8081/stream"),
    ExportedPrinter("ender-3", "http://farm.local:5001/", "K-_9" * 8),
]
# What FDM Monster 1.9's yaml-import validates (services/validators/yaml-service.validation).
FDM_PRINTER_STRATEGIES = {"name", "url", "id"}
FDM_FLOOR_STRATEGIES = {"name", "floor", "id"}
FDM_API_KEY = re.compile(r"^[A-Za-z0-9_-]{32,43}$")


def test_fdm_monster_yaml_is_what_its_importer_validates() -> None:
    spec = yaml.safe_load(render_fdm_monster(PRINTERS))
    assert spec["databaseType"] in ("mongo", "sqlite")
    config = spec["config"]
    for flag in ("exportPrinters", "exportFloorGrid", "exportFloors"):
        assert isinstance(config[flag], bool), flag
    strategies = config["printerComparisonStrategiesByPriority"]
    assert strategies and set(strategies) <= FDM_PRINTER_STRATEGIES
    assert config["floorComparisonStrategiesByPriority"] in FDM_FLOOR_STRATEGIES
    # Its SQLite importer walks the floors before validating: the list must be there, even empty.
    assert spec["floors"] == []
    ids = [p["id"] for p in spec["printers"]]
    assert len(set(ids)) == len(ids) and all(isinstance(i, int) and i for i in ids), "its importer maps by id"
    assert [(p["name"], p["printerURL"], p["apiKey"]) for p in spec["printers"]] == [
        ("prusa", "http://farm.local:5000", "k" * 43),
        ("ender-3", "http://farm.local:5001", "K-_9" * 8),
    ], "the URL as FDM Monster stores it (no trailing slash), so a second import matches it"
    for printer in spec["printers"]:
        assert printer["printerType"] == 0, "0 is OctoPrint"
        assert printer["enabled"] is True
        assert FDM_API_KEY.match(printer["apiKey"])


def test_fdm_monster_updates_a_reimported_printer_by_its_url_never_by_name() -> None:
    # Two farm computers may both have a "printer1": matching by name would merge them.
    spec = yaml.safe_load(render_fdm_monster(PRINTERS))
    assert spec["config"]["printerComparisonStrategiesByPriority"] == ["url"]


def test_octofarm_json_has_its_printer_fields() -> None:
    records = json.loads(render_octofarm(PRINTERS, group="farm.local"))
    assert records == [
        {"name": "prusa", "group": "farm.local", "printerURL": "http://farm.local:5000/",
         "cameraURL": "http://farm.local:8081/stream", "apikey": "k" * 43},
        {"name": "ender-3", "group": "farm.local", "printerURL": "http://farm.local:5001/", "cameraURL": "",
         "apikey": "K-_9" * 8},
    ]  # fmt: skip
    assert render(Tool.OCTOFARM, PRINTERS, "farm.local") == render_octofarm(PRINTERS, "farm.local")


def test_an_empty_farm_renders_an_empty_import() -> None:
    assert yaml.safe_load(render_fdm_monster([]))["printers"] == []
    assert json.loads(render_octofarm([], "farm")) == []


CONFIG = (
    '[octobrix]\npublic_host = "farm.local"\n[frontdoor]\nport = 8080\n'
    '[printers.prusa]\nserial = "PRN1"\nport = {port}\ncamera = "cam1"\n'
    "[printers.demo]\nvirtual = true\nport = {port}\n"
    '[cameras.cam1]\nserial = "CAM1"\nport = 8081\n'
)


@pytest.mark.parametrize(
    ("host", "door", "printer", "camera"),
    [
        ("farm.local", True, "http://farm.local:15000/", "http://farm.local:8080/cam/cam1/stream"),
        ("farm.local", False, "http://farm.local:5000/", "http://farm.local:8081/stream"),
        ("fd00::20", True, "http://[fd00::20]:15000/", "http://[fd00::20]:8080/cam/cam1/stream"),
    ],
)
def test_urls_are_the_front_door_or_the_direct_ports(host: str, door: bool, printer: str, camera: str) -> None:
    config = parse_config(CONFIG.replace("{port}", "5000", 1).replace("{port}", "5001"), "/etc/octobrix.toml")
    assert printer_url(config, "prusa", host, 5000, through_door=door) == printer
    assert camera_url(config, "cam1", host, through_door=door) == camera


class AppKeys(QuietHandler):
    """OctoPrint's Application Keys API as far as export uses it: the admin's keys by app."""

    keys: ClassVar[dict[str, str]] = {}
    commands: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/api/plugin/appkeys" or self.headers["X-Api-Key"] != ADMIN_KEY:
            self.reply(403, b"{}")
            return
        self.commands.append(body)
        if body["command"] == "generate":
            key = self.keys.setdefault(body["app"], secrets.token_urlsafe(32))
            self.reply(200, json.dumps({"user_id": "admin", "app_id": body["app"], "api_key": key}).encode())
        elif body["app"] in self.keys:
            del self.keys[body["app"]]
            self.send_response(204)
            self.end_headers()
        else:
            self.reply(400, b'{"error": "Need either app or key"}')


@pytest.fixture
def octoprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A config whose two printers are the stand-in, and their admin logins as apply made them."""
    AppKeys.keys = {"octobrix": ADMIN_KEY}
    AppKeys.commands = []
    monkeypatch.setattr(export_cli, "read_credentials", lambda _layout, _name: Credentials("admin", "pw", ADMIN_KEY))
    with serving(AppKeys) as port:
        path = tmp_path / "octobrix.toml"
        path.write_text(CONFIG.replace("{port}", str(port), 1).replace("{port}", str(port + 1)), encoding="utf-8")
        yield path


def test_export_gives_each_tool_a_key_of_its_own_and_revoke_removes_only_that(
    octoprint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["export", "fdm-monster", "prusa", "--config", str(octoprint)]) == 0
    spec = yaml.safe_load(capsys.readouterr().out)
    (printer,) = spec["printers"]
    assert printer["apiKey"] == AppKeys.keys["FDM Monster"] != ADMIN_KEY
    # Not the front door's /prusa/: the tool's live socket could not pass the farm login there.
    assert re.fullmatch(r"http://farm\.local:\d+", printer["printerURL"]), printer

    out = tmp_path / "farm.json"
    assert cli.main(["export", "octofarm", "prusa", "--config", str(octoprint), "--output", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == 0o600, "it holds keys"
    (record,) = json.loads(out.read_text(encoding="utf-8"))
    assert (
        record["apikey"] == AppKeys.keys["OctoFarm"] and record["cameraURL"] == "http://farm.local:8080/cam/cam1/stream"
    )

    # Asked again, the same key: an export run twice does not strand the first file's keys.
    assert cli.main(["export", "fdm-monster", "prusa", "--config", str(octoprint)]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["printers"][0]["apiKey"] == printer["apiKey"]

    assert cli.main(["export", "fdm-monster", "prusa", "--revoke", "--config", str(octoprint)]) == 0
    assert "prusa: FDM Monster's key revoked" in capsys.readouterr().out
    assert set(AppKeys.keys) == {"octobrix", "OctoFarm"}, "octobrix's own key and the other tool's stay"
    assert all(c.get("app") != "octobrix" for c in AppKeys.commands)
    assert cli.main(["export", "fdm-monster", "prusa", "--revoke", "--config", str(octoprint)]) == 0
    assert "prusa: FDM Monster's key was not there" in capsys.readouterr().out


def test_export_without_root_says_so_and_asks_nothing(
    octoprint: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def need_root(_layout: Layout, name: str) -> Credentials:
        raise CredentialsNeedRootError(name, Path(f"/var/lib/octobrix/.secrets/{name}.json"))

    monkeypatch.setattr(export_cli, "read_credentials", need_root)
    assert cli.main(["export", "fdm-monster", "--config", str(octoprint)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("octobrixctl: export needs root")
    assert err[1] == "hint: sudo octobrixctl export fdm-monster"
    assert AppKeys.commands == [] and "remove" not in " ".join(err)


@pytest.mark.parametrize(
    "case",
    [
        (["nosuch"], None, "no printer named nosuch", "octobrixctl status"),
        ([], ('public_host = "farm.local"', 'public_host = "farm.local"\nlisten = "127.0.0.1"'),
         "octobrix.listen: 127.0.0.1 keeps every OctoPrint's own port on this computer", 'listen = "::"'),
    ],
)  # fmt: skip
def test_refusals_say_what_and_what_to_do_and_make_no_key(
    octoprint: Path, capsys: pytest.CaptureFixture[str], case: tuple[list[str], tuple[str, str] | None, str, str]
) -> None:
    args, edit, message, hint = case
    if edit is not None:
        octoprint.write_text(octoprint.read_text(encoding="utf-8").replace(*edit), encoding="utf-8")
    assert cli.main(["export", "fdm-monster", *args, "--config", str(octoprint)]) == 1
    first, second = capsys.readouterr().err.splitlines()
    assert message in first and second.startswith("hint:") and hint in second
    assert AppKeys.commands == []


def test_an_octoprint_that_does_not_answer_is_named(octoprint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # demo's port is the stand-in's + 1, where nothing listens.
    assert cli.main(["export", "fdm-monster", "demo", "--config", str(octoprint)]) == 1
    first, second = capsys.readouterr().err.splitlines()
    assert first.startswith("octobrixctl: cannot ask demo's OctoPrint for a key: not answering")
    assert second == "hint: see `octobrixctl status demo`; `sudo systemctl start octoprint@demo` starts it"
