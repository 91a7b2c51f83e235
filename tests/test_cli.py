"""octobrixctl as a user meets it: installed commands, exit codes, one-line errors, nothing changed on bad input."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import STARTER_CONFIG, Ctl


def test_console_scripts_are_installed() -> None:
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "octobrixctl").exists()
    assert (bin_dir / "octobrixd").exists()


def test_help_lists_the_subcommands(ctl: Ctl) -> None:
    result = ctl("--help")
    assert result.returncode == 0
    for command in ("check", "render", "apply"):
        assert f"    {command} " in result.stdout


def test_check_accepts_the_starter_config(ctl: Ctl) -> None:
    result = ctl("check", "--config", STARTER_CONFIG)
    assert result.returncode == 0, result.stderr
    assert "is valid: 1 printer (demo)" in result.stdout


BAD_CONFIGS = {
    "broken-toml": ("[printers.p1\nport = 5001\n", ":1: not valid TOML"),
    "clashing-port": (
        '[printers.a]\nvirtual = true\nport = 5000\n[cameras.c]\nserial = "S1"\nport = 5000\n',
        ":6: cameras.c.port: 5000 is also used by printers.a",
    ),
    "serial-with-quotes": (
        '[printers.a]\nserial = "AB\\"C"\nport = 5000\n',
        ":2: printers.a.serial: contains '\"'",
    ),
    "name-with-slash": (
        '[printers."a/b"]\nvirtual = true\nport = 5000\n',
        ":1: printers.a/b: 'a/b' is not a valid name",
    ),
    "missing-camera": (
        '[printers.a]\nvirtual = true\nport = 5000\ncamera = "cam1"\n',
        ":4: printers.a.camera: no camera named 'cam1'",
    ),
    "unknown-key": (
        "[printers.a]\nvirtual = true\nport = 5000\nspeed = 3\n",
        ":4: printers.a.speed: unknown key",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_input_is_one_clear_line_and_exit_1(case: str, ctl: Ctl, write_config: Callable[[str], Path]) -> None:
    text, expected = BAD_CONFIGS[case]
    path = write_config(text)
    result = ctl("check", "--config", path)
    assert result.returncode == 1
    assert f"{path}{expected}" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("hint: ")


def test_missing_config_file(ctl: Ctl, tmp_path: Path) -> None:
    result = ctl("check", "--config", tmp_path / "nope.toml")
    assert result.returncode == 1
    assert f"{tmp_path / 'nope.toml'}: no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(ctl: Ctl, write_config: Callable[[str], Path]) -> None:
    result = ctl("--debug", "check", "--config", write_config("[printers.a]\n"))
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_render_writes_the_tree_and_nothing_else(ctl: Ctl, tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = ctl("render", "--config", STARTER_CONFIG, "--root", root)
    assert result.returncode == 0, result.stderr
    written = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert written == [
        "etc/nginx/conf.d/octobrix.conf",
        "etc/systemd/system/octobrix-backup.timer.d/50-octobrix.conf",
        "etc/systemd/system/octoprint@demo.service.d/50-octobrix.conf",
        "etc/sysusers.d/octobrix.conf",
        "etc/udev/rules.d/99-octobrix.rules",
        "var/lib/octobrix/demo/basedir/plugins/octobrix_online_check.py",
        "var/lib/octobrix/demo/octobrix-seed.yaml",
        "var/lib/octobrix/demo/pip-constraints.txt",
    ]


def test_render_refuses_the_live_system(ctl: Ctl) -> None:
    result = ctl("render", "--config", STARTER_CONFIG)
    assert result.returncode == 1
    assert "needs --root DIR" in result.stderr


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    return {
        str(p.relative_to(root)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
            p.stat().st_mode,
        )
        for p in root.rglob("*")
        if p.is_file() and p.name != "apply.lock"
    }


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_changes_nothing_on_apply(
    case: str, ctl: Ctl, tmp_path: Path, write_config: Callable[[str], Path]
) -> None:
    root = tmp_path / "root"
    assert ctl("apply", "--config", STARTER_CONFIG, "--root", root).returncode == 0
    before = snapshot(root)
    result = ctl("apply", "--config", write_config(BAD_CONFIGS[case][0]), "--root", root)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert snapshot(root) == before


@pytest.mark.parametrize(("owner", "mode"), [(0, 0o666), (0, 0o620), (65534, 0o644)])
def test_root_refuses_a_config_other_users_can_change(
    owner: int, mode: int, ctl: Ctl, write_config: Callable[[str], Path]
) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (it checks what octobrixctl does as root); CI runs as root")
    path = write_config("[printers.demo]\nvirtual = true\nport = 5000\n")
    assert ctl("check", "--config", path).returncode == 0
    os.chown(path, owner, 0)
    path.chmod(mode)
    result = ctl("check", "--config", path)
    assert result.returncode == 1
    assert "other users can change this file" in result.stderr
    assert "chmod 644" in result.stderr
