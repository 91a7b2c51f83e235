"""status reads the applied farm's view while /etc/octobrix.toml is unchanged since it applied, and
validates the file (pydantic, most of its start-up: benchmarks/status.py) only when it changed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from octobrixd.cli import status
from octobrixd.config import view as farm_view
from octobrixd.system.paths import Layout
from tests.conftest import REPO
from tests.test_status_farm import GOOD, args, farm

__all__ = ["farm"]  # the fixture, shared with test_status_farm.py

# Runs status's config step in a fresh interpreter: which config it got, and whether pydantic came in.
CHILD = """
import argparse, sys
from pathlib import Path
from octobrixd.cli import status
from octobrixd.system.paths import Layout
options = argparse.Namespace(config=Path(sys.argv[2]), json=True)
config, errors, _hint = status.farm_config(options, Layout(Path(sys.argv[1])))
print(type(config).__name__, sorted(config.printers), len(errors), "pydantic" in sys.modules)
"""


def farm_config_in_child(layout: Layout, config_path: Path) -> str:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(layout.root), str(config_path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout.strip()


def test_an_unchanged_config_is_not_validated_again(farm: tuple[Layout, Path]) -> None:
    layout, config_path = farm
    assert farm_config_in_child(layout, config_path) == "FarmView ['demo', 'prusa'] 0 False"


def test_a_changed_config_is_validated(farm: tuple[Layout, Path]) -> None:
    layout, config_path = farm
    config_path.write_text(GOOD + "[printers.ender]\nvirtual = true\nport = 5002\n", encoding="utf-8")
    assert farm_config_in_child(layout, config_path) == "Config ['demo', 'ender', 'prusa'] 0 True"
    # A mistake is found, and the farm listed from the last config that applied.
    config_path.write_text(GOOD + "[printers.ender]\nvirtul = true\nport = 5002\n", encoding="utf-8")
    assert farm_config_in_child(layout, config_path) == "Config ['demo', 'prusa'] 1 True"


def test_the_view_lists_the_farm_as_validation_does(
    farm: tuple[Layout, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    layout, config_path = farm
    assert status.main(args(config_path, as_json=True), layout) == 0
    from_view = json.loads(capsys.readouterr().out)
    layout.path(farm_view.VIEW_FILE).unlink()
    assert status.main(args(config_path, as_json=True), layout) == 0
    validated = json.loads(capsys.readouterr().out)
    assert from_view == validated
    assert [p["octoprint_requirement"] for p in from_view["printers"]] == ["octoprint==1.11.8", "octoprint==1.11.8"]
    assert from_view["cameras"][0]["url"].endswith(":8081/stream")


def test_the_view_is_not_taken_for_another_host_or_file(farm: tuple[Layout, Path], tmp_path: Path) -> None:
    layout, config_path = farm
    assert farm_view.load_view(layout, config_path, "elsewhere") is None, "public_host defaults to the host name"
    other = tmp_path / "other.toml"
    other.write_text(GOOD, encoding="utf-8")
    assert farm_view.load_view(layout, other, socket.gethostname()) is None


def test_as_root_a_config_others_may_change_is_always_validated(
    farm: tuple[Layout, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, config_path = farm
    host = socket.gethostname()
    assert farm_view.load_view(layout, config_path, host) is not None
    config_path.chmod(0o666)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    # Validation refuses it as root (config.check_ownership): the view must not skip that.
    assert farm_view.load_view(layout, config_path, host) is None
