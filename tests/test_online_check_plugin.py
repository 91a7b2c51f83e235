"""OctoPrint starts without waiting for its online check, and octobrix's plugin turns the check on after.

The plugin runs inside OctoPrint, which this test venv does not have: `octoprint.plugin` is a
stand-in module with the three base classes, and the settings and checker are recorders. That the
real OctoPrint loads it and checks after start-up is asserted by benchmarks/instance_start.py
(OctoPrint's log says the check found the farm offline); it was also tried by hand against
OctoPrint 1.11.8, which gives self._settings only to a SettingsPlugin.
"""

from __future__ import annotations

import sys
import types
from pathlib import PurePosixPath
from typing import Any

import pytest

from octobrixd.config.model import parse_config
from octobrixd.render.octoprint import merged_octoprint_config, octoprint_seed, render_online_check_plugin
from octobrixd.render.tree import online_check_plugin_path, render_all
from tests.conftest import STARTER_CONFIG


class Settings:
    def __init__(self) -> None:
        self.values: dict[tuple[str, ...], bool] = {}
        self.saved: list[dict[tuple[str, ...], bool]] = []

    def global_set_boolean(self, path: list[str], value: bool) -> None:
        self.values[tuple(path)] = value

    def save(self) -> None:
        self.saved.append(dict(self.values))


class Checker:
    enabled = False


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> Any:
    stand_in = types.ModuleType("octoprint.plugin")
    stand_in.StartupPlugin = type("StartupPlugin", (), {})  # type: ignore[attr-defined]
    stand_in.ShutdownPlugin = type("ShutdownPlugin", (), {})  # type: ignore[attr-defined]
    stand_in.SettingsPlugin = type("SettingsPlugin", (), {})  # type: ignore[attr-defined]
    package = types.ModuleType("octoprint")
    package.plugin = stand_in  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "octoprint", package)
    monkeypatch.setitem(sys.modules, "octoprint.plugin", stand_in)
    config = parse_config(STARTER_CONFIG.read_text(encoding="utf-8"), "/etc/octobrix.toml")
    namespace: dict[str, Any] = {}
    exec(compile(render_online_check_plugin(config), "octobrix_online_check.py", "exec"), namespace)  # noqa: S102
    implementation = namespace["__plugin_implementation__"]
    implementation._settings = Settings()
    implementation._connectivity_checker = Checker()
    return implementation


def test_octoprint_starts_with_the_check_off_and_every_instance_gets_the_plugin() -> None:
    config = parse_config(STARTER_CONFIG.read_text(encoding="utf-8"), "/etc/octobrix.toml")
    files = render_all(config)
    for name in config.printers:
        assert octoprint_seed(config, name)["server"]["onlineCheck"] == {"enabled": False}
        plugin = files[online_check_plugin_path(name)]
        assert plugin.owner == name, "in the instance's own basedir, its user's like the rest"
        assert online_check_plugin_path(name) == PurePosixPath(
            f"var/lib/octobrix/{name}/basedir/plugins/octobrix_online_check.py"
        ), "where OctoPrint loads single-file plugins from"


def test_the_check_is_turned_on_after_start_up_and_shown_on(plugin: Any) -> None:
    plugin.on_after_startup()
    assert plugin._connectivity_checker.enabled is True, "OctoPrint checks from now on, in the background"
    # OctoPrint sets its checker from the settings on every settings save: they must say on too.
    assert plugin._settings.values == {("server", "onlineCheck", "enabled"): True}
    assert plugin._settings.saved == [], "in memory only: config.yaml keeps the start-up value"


def test_the_next_start_does_not_wait_either(plugin: Any) -> None:
    plugin.on_after_startup()
    plugin.on_shutdown()
    assert plugin._settings.saved == [{("server", "onlineCheck", "enabled"): False}]


def test_it_runs_before_other_plugins_after_start_up(plugin: Any) -> None:
    # OctoPrint sorts ascending, and a plugin without a key at its default order (1000).
    assert plugin.get_sorting_key("StartupPlugin.on_after_startup") < 0


def test_a_settings_save_while_it_runs_is_no_change_for_apply() -> None:
    # The plugin shows the check on, so OctoPrint's settings save writes `enabled: true` while it
    # runs; apply must not take that for drift (it would rewrite config.yaml after every save).
    config = parse_config(STARTER_CONFIG.read_text(encoding="utf-8"), "/etc/octobrix.toml")
    name = next(iter(config.printers))
    fresh = merged_octoprint_config({}, config, name, None)
    assert fresh["server"]["onlineCheck"] == {"enabled": False}, "a new basedir starts with the check off"
    running = fresh | {"server": {**fresh["server"], "onlineCheck": {"enabled": True}}}
    saved = merged_octoprint_config(running, config, name, None)
    assert saved["server"]["onlineCheck"] == {"enabled": True}
    assert merged_octoprint_config(saved, config, name, None) == saved
    assert octoprint_seed(config, name)["server"]["onlineCheck"] == {"enabled": False}, "the seed is not changed"
