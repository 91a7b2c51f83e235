"""octobrix's keys in each instance's config.yaml, in the dialect of the OctoPrint it runs: 1.x's
serial.* and server.pluginBlacklist, 2.0's printerConnection.*, plugins.serial_connector.* and
server.pluginBlocklist (key names from OctoPrint 2.0.0rc3's settings schema and its serial
connector's settings migration); and OctoPrint's Software Update check for itself, which never
offers to change the version octobrix manages. The real OctoPrints read these in
tests/lab/test_octoprint_versions.py."""

from __future__ import annotations

from typing import Any

import pytest

from octobrixd.config.model import Config, parse_config
from octobrixd.instances.versions import Generation, pinned_generation, pinned_version, seeded_generation
from octobrixd.render.octoprint import first_start_seed, merged_octoprint_config, octoprint_seed
from octobrixd.render.tree import render_all
from tests.conftest import REPO

LINK = "/dev/octobrix/p1"


def config(pin: str = "", baudrate: int = 250000, virtual: bool = False) -> Config:
    device = "virtual = true\n" if virtual else f'serial = "PRN0001"\nbaudrate = {baudrate}\n'
    text = f"[printers.p1]\n{device}port = 5000\n" + (f'octoprint = "{pin}"\n' if pin else "")
    return parse_config(text, "/etc/octobrix.toml")


def every_key(tree: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= every_key(value, f"{prefix}{key}.")
    return keys


@pytest.mark.parametrize(
    ("requirement", "generation"),
    [
        ("octoprint==2.0.0rc3", Generation.V2),
        ("octoprint~=2.0", Generation.V2),
        ("octoprint==2.0.*", Generation.V2),
        ("octoprint>=2.0.0rc3,<3", Generation.V2),
        ("octoprint==1.11.8", Generation.V1),
        ("octoprint>=1.10,<2", Generation.V1),
        ("octoprint", Generation.V1),
    ],
)
def test_the_pin_names_the_generation(requirement: str, generation: Generation) -> None:
    assert pinned_generation(requirement) is generation


def test_the_installed_version_decides_while_it_meets_the_pin() -> None:
    assert seeded_generation("2.0.0rc3", "octoprint>=1.11") is Generation.V2
    assert seeded_generation("1.11.8", "octoprint>=1.11") is Generation.V1
    # A venv that no longer meets the pin is rebuilt by the same apply: the pin's generation runs next.
    assert seeded_generation("1.11.8", "octoprint==2.0.0rc3") is Generation.V2
    assert seeded_generation("2.0.0rc3", "octoprint==1.11.8") is Generation.V1
    assert seeded_generation(None, "octoprint==2.0.0rc3") is Generation.V2


def test_octoprint_1_is_seeded_with_1_x_keys() -> None:
    seed = octoprint_seed(config("octoprint==1.11.8"), "p1")
    assert seed["serial"] == {"port": LINK, "additionalPorts": [LINK], "baudrate": 250000, "autoconnect": True}
    assert seed["server"]["pluginBlacklist"] == {"enabled": True}
    assert seed["accessControl"] == {"trustRemoteUser": False, "trustBasicAuthentication": False}
    keys = every_key(seed)
    assert not {"printerConnection", "plugins.serial_connector", "server.pluginBlocklist"} & keys


def test_octoprint_2_is_seeded_with_its_own_keys_only() -> None:
    seed = octoprint_seed(config("octoprint==2.0.0rc3"), "p1")
    assert seed["printerConnection"] == {
        "autoconnect": True,
        "preferred": {"connector": "serial", "parameters": {"port": LINK, "baudrate": 250000}},
    }
    assert seed["plugins"]["serial_connector"] == {"additionalPorts": [LINK]}
    assert seed["server"]["pluginBlocklist"] == {"enabled": True}
    # 2.0 dropped trustRemoteUser: a remote-user header is trusted only from the proxies listed here.
    assert seed["accessControl"] == {"trustedAuthProxies": [], "trustBasicAuthentication": False}
    keys = every_key(seed)
    assert not {"serial", "server.pluginBlacklist", "accessControl.trustRemoteUser"} & keys


def test_a_virtual_printer_on_octoprint_2() -> None:
    seed = octoprint_seed(config("octoprint==2.0.0rc3", virtual=True), "p1")
    assert seed["printerConnection"]["preferred"]["parameters"] == {"port": "VIRTUAL", "baudrate": None}
    assert seed["plugins"]["virtual_printer"] == {"enabled": True}
    assert "serial_connector" not in seed["plugins"] and "serial" not in seed


def test_the_second_apply_on_octoprint_2_changes_nothing() -> None:
    """What OctoPrint 2.0 adds on its first start (each plugin's settings version) is kept as it is."""
    pinned = config("octoprint==2.0.0rc3")
    first = merged_octoprint_config({}, pinned, "p1", None)
    first["plugins"]["serial_connector"]["_config_version"] = 3
    first["plugins"]["softwareupdate"]["_config_version"] = 10
    assert merged_octoprint_config(first, pinned, "p1", "2.0.0rc3") == first


def test_a_changed_baudrate_reaches_octoprint_2s_setting() -> None:
    started = merged_octoprint_config({}, config("octoprint==2.0.0rc3"), "p1", "2.0.0rc3")
    changed = merged_octoprint_config(started, config("octoprint==2.0.0rc3", baudrate=115200), "p1", "2.0.0rc3")
    assert changed["printerConnection"]["preferred"]["parameters"] == {"port": LINK, "baudrate": 115200}
    assert "serial" not in changed


def test_a_printer_moving_from_1_x_keeps_its_settings_for_2_0s_own_migration() -> None:
    """OctoPrint 2.0 moves serial.* itself on its first start (the user's own serial settings with
    it); the port and baudrate in that section are octobrix's current ones, so the migration
    cannot bring back a baudrate changed in the same apply."""
    current = {
        "serial": {"port": LINK, "baudrate": 250000, "autoconnect": True, "timeout": {"connection": 20}},
        "server": {"pluginBlacklist": {"enabled": True}},
        "plugins": {"softwareupdate": {"_config_version": 9}},
    }
    merged = merged_octoprint_config(current, config("octoprint==2.0.0rc3", baudrate=115200), "p1", "1.11.8")
    assert merged["serial"] == {"port": LINK, "baudrate": 115200, "autoconnect": True, "timeout": {"connection": 20}}
    assert merged["printerConnection"]["preferred"]["parameters"]["baudrate"] == 115200
    assert merged["plugins"]["softwareupdate"]["_config_version"] == 9, "2.0 migrates its own settings from 9"


def test_a_migrated_config_gets_no_1_x_section_back() -> None:
    current = {"printerConnection": {"autoconnect": True}, "plugins": {"serial_connector": {"_config_version": 3}}}
    merged = merged_octoprint_config(current, config("octoprint==2.0.0rc3"), "p1", "2.0.0rc3")
    assert "serial" not in merged


@pytest.mark.parametrize(("generation", "version"), [(Generation.V1, 9), (Generation.V2, 10)])
def test_software_update_settings_version_is_set_only_before_its_first_start(
    generation: Generation, version: int
) -> None:
    """Without it the plugin's first start "migrates" the check octobrix seeds and drops its name."""
    assert first_start_seed({}, generation) == {"plugins": {"softwareupdate": {"_config_version": version}}}
    assert first_start_seed({"plugins": {"softwareupdate": {"_config_version": 8}}}, generation) == {}


@pytest.mark.parametrize(("pin", "installed"), [("octoprint==1.11.8", None), ("octoprint==2.0.0rc3", "2.0.0rc3")])
def test_octoprints_update_check_for_itself_never_offers_an_update(pin: str, installed: str | None) -> None:
    check = octoprint_seed(config(pin), "p1", installed)["plugins"]["softwareupdate"]["checks"]["octoprint"]
    # always_current: reports the version below as the newest; enabled false: the updater skips it
    # even when an admin forces it through the API.
    assert check["type"] == "always_current" and check["enabled"] is False
    assert check["current_version"] == pinned_version(pin)
    assert "sudo octobrixctl upgrade p1" in check["displayName"]


def test_a_range_pin_names_no_version() -> None:
    """Which version a range installs is known only after the build: naming it would make the
    apply after the first change config.yaml again."""
    seed = octoprint_seed(config("octoprint>=1.11"), "p1", "1.11.8")
    assert "current_version" not in seed["plugins"]["softwareupdate"]["checks"]["octoprint"]


def test_every_pip_in_an_instance_is_held_to_the_pin() -> None:
    pinned = config("octoprint==2.0.0rc3")
    files = {str(path): rendered.text for path, rendered in render_all(pinned).items()}
    constraint = files["var/lib/octobrix/p1/pip-constraints.txt"]
    assert [line for line in constraint.splitlines() if not line.startswith("#")] == ["octoprint==2.0.0rc3"]
    unit = (REPO / "systemd" / "octoprint@.service").read_text(encoding="utf-8")
    assert "Environment=PIP_CONSTRAINT=/var/lib/octobrix/%i/pip-constraints.txt\n" in unit
