"""status's URLs lead where the user goes: each printer's own origin on the front door while it is on."""

from __future__ import annotations

import json
from pathlib import Path

from octobrixd.cli.status import to_json
from octobrixd.config.model import parse_config
from octobrixd.farm.status import collect
from octobrixd.system import paths
from octobrixd.system.paths import Layout
from tests.test_status import PROPS, fetch

FARM = (
    "[printers.demo]\nvirtual = true\nport = 5000\n"
    '[printers.prusa]\nserial = "PRN0001"\nport = 5001\n'
    '[cameras.cam1]\nserial = "CAM1"\nport = 8081\n'
)
FETCHERS = {"demo": fetch, "prusa": fetch}


def urls(config_text: str, layout: Layout, deferred: tuple[str, ...] = ()) -> dict[str, str]:
    config = parse_config(config_text, "/etc/octobrix.toml")
    printers, cameras = collect(config, layout, PROPS, FETCHERS, "farm", deferred=deferred)
    return {row.name: row.url for row in printers} | {row.name: row.url for row in cameras}


def applied_front_door(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path)
    site = layout.path(paths.NGINX_SITE)
    site.parent.mkdir(parents=True)
    site.write_text("# the front door's site\n", encoding="utf-8")
    return layout


def test_with_the_front_door_on_every_url_is_on_it(tmp_path: Path) -> None:
    assert urls(FARM, applied_front_door(tmp_path)) == {
        "demo": "http://farm:15000/",
        "prusa": "http://farm:15001/",
        "cam1": "http://farm/cam/cam1/stream",
    }


def test_on_another_port_the_urls_name_it(tmp_path: Path) -> None:
    moved = FARM + "[frontdoor]\nport = 8670\n"
    assert urls(moved, applied_front_door(tmp_path))["demo"] == "http://farm:15000/", (
        "a printer's door port, whatever the farm's"
    )
    assert urls(moved, applied_front_door(tmp_path / "again"))["cam1"] == "http://farm:8670/cam/cam1/stream"


def test_with_the_front_door_off_or_not_applied_yet_the_direct_ports(tmp_path: Path) -> None:
    direct = {"demo": "http://farm:5000/", "prusa": "http://farm:5001/", "cam1": "http://farm:8081/stream"}
    assert urls(FARM + "[frontdoor]\nenabled = false\n", applied_front_door(tmp_path)) == direct
    # No site yet: nginx does not serve /NAME/ before the first apply.
    assert urls(FARM, Layout(tmp_path / "fresh")) == direct


def test_a_printer_whose_move_waits_for_its_print_is_shown_where_it_prints(tmp_path: Path) -> None:
    shown = urls(FARM, applied_front_door(tmp_path), deferred=("octoprint@demo.service",))
    assert (shown["demo"], shown["prusa"]) == ("http://farm:5000/", "http://farm:15001/")


def json_addresses(config_text: str, layout: Layout, deferred: tuple[str, ...] = ()) -> dict[str, tuple[str, str]]:
    """Each printer's (url, api_base) as `status --json` prints them."""
    config = parse_config(config_text, "/etc/octobrix.toml")
    printers, cameras = collect(config, layout, PROPS, FETCHERS, "farm", deferred=deferred)
    return {row["name"]: (row["url"], row["api_base"]) for row in json.loads(to_json(printers, cameras))["printers"]}


def test_json_gives_each_printer_its_api_base_through_the_front_door(tmp_path: Path) -> None:
    assert json_addresses(FARM, applied_front_door(tmp_path)) == {
        "demo": ("http://farm:15000/", "http://farm:15000/api/"),
        "prusa": ("http://farm:15001/", "http://farm:15001/api/"),
    }
    moved = FARM + "[frontdoor]\nport = 8080\n"
    assert json_addresses(moved, applied_front_door(tmp_path / "moved"))["prusa"] == (
        "http://farm:15001/",
        "http://farm:15001/api/",
    )


def test_json_api_base_is_the_own_port_with_the_front_door_off_or_while_a_move_waits(tmp_path: Path) -> None:
    off = json_addresses(FARM + "[frontdoor]\nenabled = false\n", applied_front_door(tmp_path))
    assert off == {
        "demo": ("http://farm:5000/", "http://farm:5000/api/"),
        "prusa": ("http://farm:5001/", "http://farm:5001/api/"),
    }
    held = json_addresses(FARM, applied_front_door(tmp_path / "held"), deferred=("octoprint@demo.service",))
    assert held["demo"] == ("http://farm:5000/", "http://farm:5000/api/")
