"""The folders of octobrixd/ are layers: import-linter checks the contracts in pyproject.toml (a package
imports only those below it; readers never import the writer)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import tomli_w

from octobrixd.cli.main import MODULE_COMMANDS, command_module
from tests.conftest import REPO

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *args], cwd=REPO, capture_output=True, text=True, check=False
    )


def test_every_contract_is_kept() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_check_sees_a_layer_turned_upside_down(tmp_path: Path) -> None:
    # The positive control: the same checker on the same code fails when the layers are reversed,
    # so a green run above means the imports were read, not that nothing was.
    settings = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    layers = settings["contracts"][0]
    assert layers["type"] == "layers"
    upside_down = {**layers, "layers": list(reversed(layers["layers"]))}
    config = tmp_path / "upside-down.toml"
    config.write_text(tomli_w.dumps({"tool": {"importlinter": {**settings, "contracts": [upside_down]}}}))
    result = lint_imports("--config", str(config))
    assert result.returncode != 0
    assert "octobrixd.system" in result.stdout and "BROKEN" in result.stdout


def test_the_check_sees_a_reader_that_imports_each_writer(tmp_path: Path) -> None:
    # The second contract's positive control: with the commands that do change the farm counted as
    # readers, the same checker finds each forbidden writer (so none is a name that matches nothing).
    settings = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    readers = next(c for c in settings["contracts"] if c["name"] == "readers never import the writer")
    acting = ["octobrixd.daemon", "octobrixd.cli.backup", "octobrixd.cli.upgrade", "octobrixd.cli.import_"]
    as_readers = {**readers, "source_modules": [*readers["source_modules"], *acting]}
    config = tmp_path / "acting-as-readers.toml"
    config.write_text(tomli_w.dumps({"tool": {"importlinter": {**settings, "contracts": [as_readers]}}}))
    result = lint_imports("--config", str(config))
    assert result.returncode != 0 and "BROKEN" in result.stdout
    for writer in readers["forbidden_modules"]:
        assert f"is not allowed to import {writer}:" in result.stdout, writer
    for reader in readers["source_modules"]:
        assert f"{reader} is not allowed" not in result.stdout, reader


def test_at_most_a_dozen_loose_modules_at_the_top() -> None:
    loose = sorted(p.name for p in (REPO / "octobrixd").glob("*.py"))
    assert len(loose) <= 12, loose


def test_each_command_is_the_module_of_its_name() -> None:
    # One naming rule: `octobrixctl VERB` is octobrixd/cli/VERB.py (import_.py for the keyword); the
    # folder holds nothing else but the dispatcher, so a newcomer finds a command by its name.
    modules = {p.stem for p in (REPO / "octobrixd" / "cli").glob("*.py")} - {"__init__", "__main__", "main"}
    assert modules == {command_module(name).rsplit(".", 1)[1] for name in MODULE_COMMANDS}
    for name in MODULE_COMMANDS:
        module = importlib.import_module(command_module(name))
        assert callable(module.configure_parser) and callable(module.main), name
