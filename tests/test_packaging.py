"""The installer and the Debian package, checked without installing anything (the lab installs
them for real: tests/lab/test_install.py): scripts that parse and pass shellcheck, and the two ways
of installing agreeing on what they install and where."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, require_programs

PACKAGING = REPO / "packaging"
SCRIPTS = [
    PACKAGING / "install.sh",
    PACKAGING / "build-deb.sh",
    *(PACKAGING / "debian" / name for name in ("preinst", "postinst", "prerm", "postrm")),
]
UNIT_SUFFIXES = (".service", ".path", ".timer", ".socket")
SHIPPED_UNITS = sorted(p.name for p in (REPO / "systemd").iterdir() if p.suffix in UNIT_SUFFIXES)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_posix_sh_and_passes_shellcheck(script: Path) -> None:
    assert script.read_text().startswith("#!/bin/sh\n")
    assert script.stat().st_mode & 0o111, f"{script} is not executable"
    parsed = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, check=False)
    assert parsed.returncode == 0, parsed.stderr
    require_programs("shellcheck", deps="packaging.sh")
    checked = subprocess.run(["shellcheck", "--shell=sh", str(script)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout


def _units_variable(script: Path) -> list[str]:
    match = re.search(r'^UNITS="([^"]*)"', script.read_text(), re.MULTILINE)
    assert match, f"no UNITS= in {script}"
    return sorted(match.group(1).split())


def test_both_installers_install_and_remove_every_shipped_unit() -> None:
    # install.sh installs and removes exactly this list; the package's preinst takes these over
    # from install.sh. A unit added to systemd/ but not here would be left behind or missing.
    assert _units_variable(PACKAGING / "install.sh") == SHIPPED_UNITS
    assert _units_variable(PACKAGING / "debian" / "preinst") == SHIPPED_UNITS
    # build-deb.sh ships every .service, .path, .timer and .socket of systemd/ as they are.
    shipped = (
        'install -m 0644 "$SRC"/systemd/*.service "$SRC"/systemd/*.path "$SRC"/systemd/*.timer "$SRC"/systemd/*.socket'
    )
    assert shipped in (PACKAGING / "build-deb.sh").read_text()


@pytest.mark.parametrize("name", ["octobrix.tmpfiles", "octobrix.modules-load"])
def test_both_installers_install_and_remove_the_other_system_files(name: str) -> None:
    # Not units: tmpfiles.d and modules-load.d entries, installed as FOLDER/octobrix.conf.
    assert (REPO / "systemd" / name).is_file()
    folder = {"octobrix.tmpfiles": "tmpfiles.d", "octobrix.modules-load": "modules-load.d"}[name]
    build = (PACKAGING / "build-deb.sh").read_text()
    assert f'"$SRC/systemd/{name}" "$root/usr/lib/{folder}/octobrix.conf"' in build
    install = (PACKAGING / "install.sh").read_text()
    assert f'"$SRC/systemd/{name}" ' in install
    # install.sh's copy under /usr/local goes when the package takes over.
    assert f"/usr/local/lib/{folder}/octobrix.conf" in (PACKAGING / "debian" / "preinst").read_text()


def test_every_file_in_systemd_is_shipped() -> None:
    others = sorted(p.name for p in (REPO / "systemd").iterdir() if p.suffix not in UNIT_SUFFIXES)
    assert others == ["octobrix.modules-load", "octobrix.tmpfiles"], "a new kind of file: teach both installers"


def test_daemon_unit_runs_the_program_both_installers_create() -> None:
    unit = (REPO / "systemd" / "octobrixd.service").read_text()
    assert "ExecStart=/opt/octobrix/bin/octobrixd\n" in unit
    assert "PREFIX=/opt/octobrix\n" in (PACKAGING / "install.sh").read_text()
    assert "PREFIX=/opt/octobrix\n" in (PACKAGING / "debian" / "postinst").read_text()


def test_package_depends_on_a_python_its_wheels_fit() -> None:
    control = (PACKAGING / "debian" / "control.in").read_text()
    depends = next(line for line in control.splitlines() if line.startswith("Depends:"))
    assert "python3 (>= 3.11)" in depends and "python3 (<< 3.14~)" in depends
    build = (PACKAGING / "build-deb.sh").read_text()
    assert 'PYTHONS="3.11 3.12 3.13"' in build
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11"' in pyproject


def test_every_subpackage_of_octobrixd_is_in_the_wheel(tmp_path: Path) -> None:
    # A sub-package left out of the wheel imports on the developer's editable install and fails on
    # every real one (found twice by lab tests: export and import died with ModuleNotFoundError).
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
         str(REPO)],
        check=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("octobrix-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    shipped = {str(Path(name).parent).replace("/", ".") for name in names if Path(name).name == "__init__.py"}
    found = {".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "octobrixd").rglob("__init__.py")}
    assert found <= shipped, f"not in the wheel: {sorted(found - shipped)} (see pyproject.toml's packages.find)"
    assert any(name.startswith("octobrixd/web/static/") for name in names), "the overview page's files are missing"
