"""tests/run spreads the suite over two pytest-xdist workers (`-n 2 --dist loadgroup`): the lab in
order on one, the unit tests on the other. These run small suites that way, as tests/run would."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.conftest import REPO

# On two workers as tests/run runs it; without hypothesis's plugin (not used here) each worker starts
# in a fraction of the time.
PYTEST = (sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-n", "2")


def child_env(**extra: str) -> dict[str, str]:
    """This environment with this checkout importable, and none of our own pytest's variables."""
    ours = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    return {**ours, "PYTHONPATH": str(REPO), **extra}


def pytest_in(folder: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PYTEST, *args], capture_output=True, text=True, check=False, cwd=folder, env=child_env(**(env or {}))
    )


SLEEPY = """
import time

def test_one():
    time.sleep(0.1)

def test_two():
    time.sleep(0.1)
"""


def test_seconds_per_file_counts_every_worker_once(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / f"test_{name}.py").write_text(SLEEPY)
    result = pytest_in(tmp_path, "-p", "tests.file_seconds")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed" in result.stdout
    assert result.stdout.count("seconds per test file") == 1, result.stdout
    line = re.search(r"^ *([0-9.]+)  the other (\d+) files$", result.stdout, re.MULTILINE)
    assert line is not None, result.stdout
    assert line[2] == "3", "each file counted once"
    assert 0.6 <= float(line[1]) < 60, "six tests of 0.1 s each, summed from both workers"


NOTES = """
import os
import pytest

def note(what):
    with open(os.environ["NOTES"], "a") as notes:
        notes.write(os.environ.get("PYTEST_XDIST_WORKER", "-") + " " + what + "\\n")

@pytest.fixture(scope="module")
def machine(request):
    note("up " + request.module.__name__)
    yield
    note("down " + request.module.__name__)
"""
LAB_FILE = """
import pytest
from conftest import note

pytestmark = pytest.mark.lab

def test_1(machine):
    note("run {name} 1")

def test_2(machine):
    note("run {name} 2")

def test_3(machine):
    note("run {name} 3")
"""
UNIT_FILE = """
import pytest
from conftest import note

@pytest.mark.parametrize("n", range(30))
def test_unit(n):
    note("unit")
"""


VM_FILE = """
import pytest
from conftest import note

pytestmark = pytest.mark.lab

@pytest.fixture(scope="module")
def lab_vm():
    yield  # stands for the lab's session VM: what puts a test in the VM's lane

def test_1(machine, lab_vm):
    note("run {name} 1")

def test_2(machine, lab_vm):
    note("run {name} 2")
"""


def test_lab_tests_run_in_two_lanes_each_on_one_worker_in_file_order_with_their_module_fixtures(
    tmp_path: Path,
) -> None:
    """tests/lab/conftest.py puts the lab's tests in two xdist groups, the VM's and the containers';
    if pytest or xdist stop honouring them (pytest-xdist#1386), lab tests would run beside others of
    their lane and fight over ports and the VM."""
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    lab: the lab\n")
    (tmp_path / "conftest.py").write_text(NOTES)
    for name in ("lab_a", "lab_b"):
        (tmp_path / f"test_{name}.py").write_text(LAB_FILE.format(name=name))
    for name in ("vm_a", "vm_b"):
        (tmp_path / f"test_{name}.py").write_text(VM_FILE.format(name=name))
    (tmp_path / "test_unit.py").write_text(UNIT_FILE)
    notes = tmp_path / "notes.txt"
    result = pytest_in(
        tmp_path, "-n", "3", "--dist", "loadgroup", "-p", "tests.lab.conftest", env={"NOTES": str(notes)}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "40 passed" in result.stdout
    lines = [line.split(" ", 1) for line in notes.read_text().splitlines()]
    for lane in ("lab_", "vm_"):
        ran = [(worker, what) for worker, what in lines if lane in what]
        assert len({worker for worker, _what in ran}) == 1, f"{lane} tests ran on more than one worker: {ran}"
        tests = (1, 2, 3) if lane == "lab_" else (1, 2)
        expected = [
            what
            for file in ("a", "b")
            for what in (
                f"up test_{lane}{file}",
                *(f"run {lane}{file} {step}" for step in tests),
                f"down test_{lane}{file}",
            )
        ]
        assert [what for _worker, what in ran] == expected, "in file order, each module's fixture its own"
    lab_worker = next(worker for worker, what in lines if "lab_" in what)
    vm_worker = next(worker for worker, what in lines if "vm_" in what)
    assert lab_worker != vm_worker, "the two lanes run beside each other"


LONG = """
import os
import time
from pathlib import Path

def test_{n}():
    notes = Path(os.environ["NOTES"])
    worker = os.environ["PYTEST_XDIST_WORKER"]
    (notes / ("started-" + worker)).write_text(str(os.getpid()))
    try:
        time.sleep(120)  # as a lab test waits on its VM: only a signal ends it early
    finally:
        (notes / ("finalized-" + worker)).touch()
"""


def test_sigterm_to_the_run_ends_every_workers_test_through_its_finalizers(tmp_path: Path) -> None:
    """A CI timeout signals the process tests/run started; the lab's finalizers must still stop its VM."""
    suite, notes = tmp_path / "suite", tmp_path / "notes"
    (suite / "lab").mkdir(parents=True)
    notes.mkdir()
    # As in tests/: the lab's conftest, and with it its signal handlers, is loaded by the workers only.
    (suite / "lab" / "conftest.py").write_text("from tests.lab.conftest import pytest_configure\n")
    for n in (1, 2):
        (suite / "lab" / f"test_long_{n}.py").write_text(LONG.format(n=n))
    run = subprocess.Popen(
        [*PYTEST, "-p", "tests.xdist_signals"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=suite,
        env=child_env(NOTES=str(notes)),
    )
    try:
        deadline = time.monotonic() + 60
        while len(list(notes.glob("started-*"))) < 2:
            assert run.poll() is None and time.monotonic() < deadline, "the two tests never started"
            time.sleep(0.05)
        run.send_signal(signal.SIGTERM)
        output, _ = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode != 0, output
    for started in notes.glob("started-*"):
        worker = started.name.removeprefix("started-")
        assert (notes / f"finalized-{worker}").exists(), f"{worker}'s test ended without its finalizers:\n{output}"
        assert not psutil.pid_exists(int(started.read_text())), f"{worker} outlived the run"
