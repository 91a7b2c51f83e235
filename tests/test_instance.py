"""The Instance record: a printer's paths in one place, and its OctoPrint CLI run as its own user with
one timeout policy and one error. The real CLI, as the real user: tests/lab (backups, restores and the
first apply's admin)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from octobrixd.errors import CommandError, CommandTimeoutError, OctobrixError
from octobrixd.instances import instance as instance_module
from octobrixd.instances.instance import CLI_TIMEOUT, GENTLY, Instance, tree_config_yaml
from octobrixd.system.paths import Layout


def installed(tmp_path: Path, name: str = "ender") -> Instance:
    instance = Instance(name, Layout(tmp_path))
    instance.octoprint.parent.mkdir(parents=True)
    instance.octoprint.write_text("#!/bin/sh\n")
    return instance


def test_the_paths_of_a_printer_under_a_root(tmp_path: Path) -> None:
    instance = Instance("ender", Layout(tmp_path))
    state = tmp_path / "var/lib/octobrix/ender"
    assert instance.state_dir == state
    assert (instance.basedir, instance.config_yaml, instance.users_yaml) == (
        state / "basedir", state / "basedir/config.yaml", state / "basedir/users.yaml"
    )  # fmt: skip
    assert instance.app_keys == state / "basedir/data/appkeys/keys.yaml"
    assert instance.plugins == state / "basedir/plugins"
    assert (instance.venv, instance.venvs) == (state / "venv", state / "venvs")
    assert instance.home == state / "home"
    assert (instance.python, instance.octoprint) == (state / "venv/bin/python", state / "venv/bin/octoprint")
    assert (instance.user, instance.unit) == ("octobrix-ender", "octoprint@ender.service")
    assert tree_config_yaml("ender") == PurePosixPath("var/lib/octobrix/ender/basedir/config.yaml")
    assert Instance("ender", Layout()).config_yaml == Path("/var/lib/octobrix/ender/basedir/config.yaml")


class Recorded:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, Any]]] = []
        self.fail: CommandError | None = None

    def __call__(self, argv: Sequence[str], **options: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append((list(argv), options))
        if self.fail is not None:
            raise self.fail
        return subprocess.CompletedProcess(list(argv), 0, "ok\n", "")


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Recorded:
    fake = Recorded()
    monkeypatch.setattr(instance_module, "run", fake)
    return fake


def test_the_cli_runs_as_the_printers_user_on_its_basedir_in_a_scrubbed_environment(
    tmp_path: Path, recorded: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", "/root/evil")
    instance = installed(tmp_path)
    done = instance.run_octoprint(["user", "add", "admin"], ids=(1234, 1235), doing="x", input_text="pw\npw\n")
    assert done.stdout == "ok\n"
    [(argv, options)] = recorded.calls
    assert argv == [str(instance.octoprint), "--basedir", str(instance.basedir), "user", "add", "admin"]
    assert options["as_user"] == (1234, 1235)
    home = str(instance.state_dir / "home")  # its own: the state directory is root's
    assert options["env"] == {"HOME": home, "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
    assert options["input_text"] == "pw\npw\n" and options["timeout"] == CLI_TIMEOUT


def test_long_work_runs_gently_with_its_own_timeout(tmp_path: Path, recorded: Recorded) -> None:
    instance = installed(tmp_path)
    instance.run_octoprint(["plugins", "backup:backup"], ids=(1, 1), doing="x", timeout=60.0, gently=True)
    [(argv, options)] = recorded.calls
    assert argv[: len(GENTLY) + 1] == [*GENTLY, str(instance.octoprint)] and options["timeout"] == 60.0


def test_a_failure_is_one_line_naming_the_printer_with_a_hint(tmp_path: Path, recorded: Recorded) -> None:
    instance = installed(tmp_path)
    recorded.fail = CommandError(["octoprint"], 1, "Traceback...\n  File x\nValueError: no such user\n\n")
    with pytest.raises(OctobrixError) as caught:
        instance.run_octoprint(["user", "password", "admin"], ids=(1, 1), doing="set the password of its user admin")
    said = "OctoPrint of ender could not set the password of its user admin: ValueError: no such user"
    assert str(caught.value) == said
    assert caught.value.hint is not None and "sudo -u octobrix-ender" in caught.value.hint
    assert "journalctl -u octoprint@ender.service" in caught.value.hint

    recorded.fail = CommandTimeoutError(["octoprint"], 300.0, "")
    with pytest.raises(OctobrixError, match=r"could not make its backup: it did not finish within 300 s") as late:
        instance.run_octoprint(["plugins"], ids=(1, 1), doing="make its backup", hint="see the backup's log")
    assert late.value.hint == "see the backup's log", "the caller's hint replaces the general one"


def test_no_octoprint_yet_says_to_apply_and_runs_nothing(tmp_path: Path, recorded: Recorded) -> None:
    with pytest.raises(OctobrixError, match=r"printer ender has no OctoPrint installed yet") as caught:
        Instance("ender", Layout(tmp_path)).run_octoprint(["user", "list"], ids=(1, 1), doing="list its users")
    assert caught.value.hint == "run `sudo octobrixctl apply` first" and recorded.calls == []
