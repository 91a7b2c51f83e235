"""`octobrixctl status` starts without the writers and the other commands' modules: they were most
of its run time (benchmarks/status.py measures it), and a reader must not import a writer (#20)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

NOT_FOR_STATUS = {
    "octobrixd.apply.plan",
    "octobrixd.cli.discover",
    "octobrixd.cli.doctor",
    "octobrixd.cli.kmod",
    "octobrixd.render.tree",
}


def loaded_after(code: str) -> set[str]:
    shown = "import sys; print(' '.join(m for m in sys.modules if m.startswith('octobrixd')))"
    result = subprocess.run(
        [sys.executable, "-c", f"{code}\n{shown}"], capture_output=True, text=True, check=True, cwd=REPO
    )
    return set(result.stdout.split())


def test_status_imports_no_writer() -> None:
    assert not loaded_after("import octobrixd.cli.status") & NOT_FOR_STATUS


def test_the_cli_loads_only_the_module_of_the_command_it_runs() -> None:
    loaded = loaded_after("from octobrixd.cli import main as cli; cli.build_parser(['status', '--json'])")
    assert "octobrixd.cli.status" in loaded
    assert not loaded & NOT_FOR_STATUS
    # Without a command (--help), every command's options are there.
    assert {"octobrixd.cli.discover", "octobrixd.cli.doctor", "octobrixd.cli.kmod"} <= loaded_after(
        "from octobrixd.cli import main as cli; cli.build_parser()"
    )


def test_status_starts_without_urllib() -> None:
    # http.client pulls in email and ssl: about a third of status's start-up before loopback_http.
    heavy = "('urllib.request', 'http.client', 'email', 'ssl')"
    shown = f"import sys; print(' '.join(m for m in {heavy} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", f"from octobrixd.cli import main, status\n{shown}"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert result.stdout.split() == []
