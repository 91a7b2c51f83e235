"""status's URLs lead where the user goes: the front door's `http://HOST/NAME/` while it is on."""

from __future__ import annotations

from pathlib import Path

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
        "demo": "http://farm/demo/",
        "prusa": "http://farm/prusa/",
        "cam1": "http://farm/cam/cam1/stream",
    }


def test_on_another_port_the_urls_name_it(tmp_path: Path) -> None:
    moved = FARM + "[frontdoor]\nport = 8670\n"
    assert urls(moved, applied_front_door(tmp_path))["demo"] == "http://farm:8670/demo/"
    assert urls(moved, applied_front_door(tmp_path / "again"))["cam1"] == "http://farm:8670/cam/cam1/stream"


def test_with_the_front_door_off_or_not_applied_yet_the_direct_ports(tmp_path: Path) -> None:
    direct = {"demo": "http://farm:5000/", "prusa": "http://farm:5001/", "cam1": "http://farm:8081/stream"}
    assert urls(FARM + "[frontdoor]\nenabled = false\n", applied_front_door(tmp_path)) == direct
    # No site yet: nginx does not serve /NAME/ before the first apply.
    assert urls(FARM, Layout(tmp_path / "fresh")) == direct


def test_a_printer_whose_move_waits_for_its_print_is_shown_where_it_prints(tmp_path: Path) -> None:
    shown = urls(FARM, applied_front_door(tmp_path), deferred=("octoprint@demo.service",))
    assert (shown["demo"], shown["prusa"]) == ("http://farm:5000/", "http://farm/prusa/")
