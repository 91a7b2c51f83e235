"""Every generated unit, with the static templates, passes systemd's own `systemd-analyze verify`.

Needs root (for the private mount namespace); CI runs as root. The programs the units start are
stand-ins created inside the namespace only, except ustreamer, which is the real Debian binary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from octobrixd.config.model import parse_config
from octobrixd.render.tree import render_all
from octobrixd.system.paths import SYSUSERS_FILE
from tests.conftest import REPO, require_programs

FARM = REPO / "tests" / "data" / "farm.toml"


def make_stub(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)


def verify(
    unit_dir: Path, units: list[str], stubs: dict[str, list[str]], scratch: Path
) -> subprocess.CompletedProcess[str]:
    overlays: list[str] = []
    for target, programs in stubs.items():
        upper = scratch / "upper" / target.strip("/").replace("/", "_")
        for program in programs:
            make_stub(upper / program)
        overlays += ["--overlay", f"{target}={upper}"]
    return subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            sys.executable,
            "-m",
            "tests.nsexec",
            *overlays,
            "--",
            "systemd-analyze",
            "verify",
            "--man=no",
            *[str(unit_dir / u) for u in units],
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.fail("this test needs root for a private mount namespace: run the suite as root (CI does)")
    require_programs("ustreamer", deps="base.sh")
    config = parse_config(FARM.read_text(), "/etc/octobrix.toml")
    out = tmp_path / "units"
    for rel, rendered in render_all(config).items():
        if rel.is_relative_to("etc/systemd/system"):
            target = out / rel.relative_to("etc/systemd/system")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(rendered.text)
    for template in [
        *(REPO / "systemd").glob("*.service"),
        *(REPO / "systemd").glob("*.path"),
        *(REPO / "systemd").glob("*.timer"),
        *(REPO / "systemd").glob("*.socket"),
    ]:
        shutil.copy(template, out / template.name)
    return out


def test_every_generated_unit_verifies_cleanly(unit_dir: Path, tmp_path: Path) -> None:
    config = parse_config(FARM.read_text(), "/etc/octobrix.toml")
    units = [f"octoprint@{name}.service" for name in config.printers]
    units += [f"{config.streamer_of(name)}@{name}.service" for name in config.cameras]
    units += ["octobrixd.service", "octobrix-config.path", "octobrix-config.service", "octobrix-failed@demo.service"]
    # With its drop-in: the configured schedule replaces the shipped one.
    units += ["octobrix-backup.timer", "octobrix-backup.service"]
    units += ["octobrix-web.socket", "octobrix-web.service"]
    stubs = {
        "/var/lib": [f"octobrix/{name}/venv/bin/octoprint" for name in config.printers],
        "/usr/local/bin": ["mjpg_streamer"],
        "/opt": ["octobrix/bin/octobrixd", "octobrix/bin/octobrixctl", "octobrix/bin/octobrix-web"],
    }
    result = verify(unit_dir, units, stubs, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", "systemd-analyze warned:\n" + result.stderr


def test_the_check_catches_a_broken_unit(unit_dir: Path, tmp_path: Path) -> None:
    # Guards the test above: without the venv in place, systemd-analyze must complain.
    dropin = unit_dir / "octoprint@demo.service.d" / "50-octobrix.conf"
    dropin.write_text(dropin.read_text() + "Bogus=1\n")
    result = verify(unit_dir, ["octoprint@demo.service"], {"/opt": ["octobrix/bin/octobrixd"]}, tmp_path)
    assert "is not executable" in result.stderr
    assert "Unknown key 'Bogus'" in result.stderr


def test_sysusers_and_tmpfiles_entries_work_with_systemds_own_tools(tmp_path: Path) -> None:
    config = parse_config(FARM.read_text(), "/etc/octobrix.toml")
    sysusers = tmp_path / "octobrix-sysusers.conf"
    sysusers.write_text(render_all(config)[SYSUSERS_FILE].text)
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    result = subprocess.run(
        ["systemd-sysusers", f"--root={root}", str(sysusers)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    users = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    for name in [*config.printers, *config.cameras]:
        entry = users[f"octobrix-{name}"]
        assert int(entry[2]) < 1000, "a system user"
        assert entry[6] == "/usr/sbin/nologin"
    assert users["octobrix-prusa"][5] == "/var/lib/octobrix/prusa/home", "its HOME: the state directory is root's"

    tmpfiles = subprocess.run(
        ["systemd-tmpfiles", f"--root={root}", "--create", str(REPO / "systemd" / "octobrix.tmpfiles")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert tmpfiles.returncode == 0, tmpfiles.stderr
    assert (root / "var/lib/octobrix").is_dir()
    assert oct((root / "var/lib/octobrix").stat().st_mode & 0o777) == "0o755"
    # Backups hold users and API keys: root only.
    assert oct((root / "var/backups/octobrix").stat().st_mode & 0o777) == "0o700"
