"""A printer's own venv, built for real with uv from PyPI into a scratch root.

Swapping is atomic (the `venv` link changes only after a complete install) and a failed install
leaves the instance on its old venv.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from octobrixd.errors import OctobrixError
from octobrixd.instances.venv_spec import COMPLETE_MARKER, VenvSpec, is_current, venv_link
from octobrixd.instances.venvs import provision
from octobrixd.system.paths import Layout

OCTOPRINT = "octoprint==1.11.8"


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """One scratch root whose uv cache the tests in this module share, as instances on one machine do."""
    return Layout(tmp_path_factory.mktemp("root"))


def ids() -> tuple[int, int]:
    return os.getuid(), os.getgid()


def test_provisioned_venv_runs_octoprint_with_pip(farm: Layout) -> None:
    spec = VenvSpec("printer1", (OCTOPRINT,))
    target = provision(farm, spec, *ids())
    assert is_current(farm, spec)
    assert venv_link(farm, "printer1").resolve() == target.resolve()
    version = subprocess.run(
        [str(venv_link(farm, "printer1") / "bin" / "octoprint"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "1.11.8" in version.stdout
    # OctoPrint's plugin manager and software update run `python -m pip` from the instance's venv.
    pip = subprocess.run(
        [str(target / "bin" / "python"), "-m", "pip", "--version"], capture_output=True, text=True, check=False
    )
    assert pip.returncode == 0, pip.stderr


def test_second_instance_shares_files_with_the_first(farm: Layout) -> None:
    first = (
        provision(farm, VenvSpec("printer1", (OCTOPRINT,)), *ids())
        if not is_current(farm, VenvSpec("printer1", (OCTOPRINT,)))
        else venv_link(farm, "printer1").resolve()
    )
    second = provision(farm, VenvSpec("printer2", (OCTOPRINT,)), *ids())
    module = Path("lib/python3.11/site-packages/octoprint/server/__init__.py")
    assert (first / module).stat().st_ino == (second / module).stat().st_ino, "hard-linked from uv's cache"


def test_failed_install_keeps_the_working_venv(farm: Layout) -> None:
    good = VenvSpec("printer3", (OCTOPRINT,))
    before = provision(farm, good, *ids())
    bad = VenvSpec("printer3", ("octoprint==0.0.1",))
    with pytest.raises(OctobrixError) as caught:
        provision(farm, bad, *ids())
    assert "keeps its current OctoPrint" in caught.value.message
    assert caught.value.hint is not None and "printers.printer3.octoprint" in caught.value.hint
    assert venv_link(farm, "printer3").resolve() == before.resolve()
    assert is_current(farm, good)
    assert not (before.parent / bad.digest).exists(), "the half-built venv is cleaned up"


def test_changed_pin_swaps_and_keeps_one_previous(farm: Layout) -> None:
    first = provision(farm, VenvSpec("printer4", (OCTOPRINT,)), *ids())
    second = provision(farm, VenvSpec("printer4", (OCTOPRINT, "OctoPrint-MFATOTP==1.1.1")), *ids())
    assert venv_link(farm, "printer4").resolve() == second.resolve()
    assert (second / COMPLETE_MARKER).exists()
    assert first.exists(), "the previous venv stays until the next swap: a running OctoPrint may still import from it"
    third = provision(farm, VenvSpec("printer4", ("octoprint==1.10.3",)), *ids())
    assert sorted(p.name for p in third.parent.iterdir()) == sorted([second.name, third.name])


def test_a_rebuild_of_the_same_requirements_goes_beside_the_running_venv(farm: Layout) -> None:
    """A drift repair (another OctoPrint got into the venv) rebuilds what the config asks for without
    touching the folder the running OctoPrint imports from, and swaps the link to the new one."""
    spec = VenvSpec("printer5", (OCTOPRINT,))
    running = provision(farm, spec, *ids())
    rebuilt = provision(farm, spec, *ids())
    assert rebuilt != running and rebuilt.name == f"{spec.digest}-1"
    assert venv_link(farm, "printer5").resolve() == rebuilt.resolve() and is_current(farm, spec)
    assert (running / "bin" / "octoprint").exists(), "the running OctoPrint's folder stays until the next swap"
    again = provision(farm, spec, *ids())
    assert again.name == spec.digest and venv_link(farm, "printer5").resolve() == again.resolve()
    assert (rebuilt / COMPLETE_MARKER).exists(), "and the one before is now the kept previous one"
