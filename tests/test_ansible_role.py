"""packaging/ansible's role writes each farm computer's /etc/octobrix.toml from the inventory through
its `octobrix_toml` filter: values are quoted there, so hostile ones still make valid TOML that says
exactly what the inventory said, and what TOML cannot hold fails the run with its key path."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from octobrixd.config.model import parse_config

ROLE = Path(__file__).resolve().parent.parent / "packaging/ansible/roles/octobrix"


def filter_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("octobrix_toml", ROLE / "filter_plugins/octobrix_toml.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOML = filter_module()


def test_the_inventorys_values_come_back_as_they_were() -> None:
    tables: dict[str, Any] = {
        "octobrix": {"public_host": "farm-pc-1.local", "listen": "::"},
        "frontdoor": {"port": 8080, "metrics": True},
        "printers": {
            "prusa": {"serial": "CZPX1919X004XC24974", "port": 5001, "plugins": ["OctoPrint-PSUControl==1.0.6"]},
            "demo": {"virtual": True, "port": 5000},
        },
        "cameras": {},
    }
    text = TOML.octobrix_toml(tables)
    assert tomllib.loads(text) == {key: value for key, value in tables.items() if value}
    # octobrix itself takes it.
    config = parse_config(text)
    assert sorted(config.printers) == ["demo", "prusa"] and config.frontdoor.port == 8080


@pytest.mark.parametrize(
    "serial", ['AB"CD', "AB\\CD", 'x" \nport = 1\n[evil]\nkey = "', "tab\there", "del\x7f", "nul\x00", "ünï😀", "'"]
)
def test_a_hostile_value_stays_one_string(serial: str) -> None:
    text = TOML.octobrix_toml({"printers": {"p1": {"serial": serial, "port": 5001}}})
    assert tomllib.loads(text) == {"printers": {"p1": {"serial": serial, "port": 5001}}}


def test_a_quote_in_a_serial_is_refused_by_octobrix_with_its_key_path(tmp_path: Path) -> None:
    """Valid TOML, and then octobrix's own check says what is wrong with it (the role's template
    task validates with `octobrixctl check`, so the file is not replaced)."""
    text = TOML.octobrix_toml({"printers": {"p1": {"serial": 'AB"CD', "port": 5001}}})
    tomllib.loads(text)
    (tmp_path / "octobrix.toml").write_text(text)
    checked = subprocess.run(
        [sys.executable, "-m", "octobrixd.cli", "check", "--config", str(tmp_path / "octobrix.toml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode != 0
    assert "printers.p1.serial" in checked.stderr, checked.stderr


@pytest.mark.parametrize(
    ("tables", "path"),
    [
        ({"printers": {"p1": {"port": 50.5}}}, "printers.p1.port"),
        ({"printers": {"p1": {"serial": None}}}, "printers.p1.serial"),
        ({"frontdoor": {"port": 80, "extra": {"a": 1}}}, "frontdoor.extra"),
        ({"printers": {"p1": {"plugins": ["a", 1.5]}}}, "printers.p1.plugins[1]"),
        ({"frontdoor": "on"}, "frontdoor"),
    ],
)
def test_what_toml_cannot_hold_fails_with_its_key_path(tables: dict[str, Any], path: str) -> None:
    with pytest.raises(TOML.AnsibleFilterError, match=re.escape(f"octobrix_config: {path}:")):
        TOML.octobrix_toml(tables)


def test_the_example_inventory_makes_configs_octobrix_takes() -> None:
    inventory = yaml.safe_load((ROLE.parent.parent / "inventory.example.yml").read_text())
    hosts = inventory["farm"]["hosts"]
    assert len(hosts) == 2
    for name, host in hosts.items():
        config = parse_config(TOML.octobrix_toml(host["octobrix_config"]), source=f"{name}'s /etc/octobrix.toml")
        assert config.printers and config.frontdoor.metrics is True, name
