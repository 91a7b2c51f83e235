"""`upgrade` and `rollback` without a system: which release a printer moves to, the health check's
judgement and its messages, the rollback point, and the commands' answers to bad input. The real
upgrades (systemd, OctoPrints, a print running) are in tests/lab/test_upgrades.py."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from octobrixd.errors import OctobrixError
from octobrixd.instances import venvs
from octobrixd.instances.venv_spec import COMPLETE_MARKER
from octobrixd.system.paths import Layout
from octobrixd.system.systemd import UnitProperties
from octobrixd.upgrades import health, rollback_point, versions
from octobrixd.upgrades.health import Expected, Seen, Verdict, judge
from tests.conftest import Ctl

WHEELS = [
    "octoprint-1.11.8-py3-none-any.whl",
    "OctoPrint-1.11.7-py3-none-any.whl",
    "OctoPrint-1.10.3.tar.gz",
    "octoprint-2.0.0rc3-py3-none-any.whl",
    "octoprint_filecheck-2025.7.23-py3-none-any.whl",
    "OctoPrint-1.12.0.dev4-py3-none-any.whl",
]


def test_the_wheels_folder_names_the_octoprint_releases_it_holds() -> None:
    assert versions.versions_in_folder(WHEELS) == ["1.10.3", "1.11.7", "1.11.8", "1.12.0.dev4", "2.0.0rc3"]


def test_no_to_moves_to_the_newest_release_of_the_same_major_never_a_prerelease() -> None:
    found = versions.versions_in_folder(WHEELS)
    assert versions.target_for(None, "1.11.7", found) == "octoprint==1.11.8"
    assert versions.target_for(None, "1.11.8", found) is None, "nothing newer: 2.0.0rc3 is another major and a pre"
    assert versions.target_for(None, "1.9.0", [*found, "1.12.1", "2.0.0"]) == "octoprint==1.12.1"
    assert versions.target_for(None, None, found) is None
    assert versions.target_for("octoprint==2.0.0rc3", "1.11.8", found) == "octoprint==2.0.0rc3", "--to wins"


def test_pips_listing_of_the_index_is_read() -> None:
    text = "octoprint (1.11.8)\nAvailable versions: 1.11.8, 1.11.7, 1.10.3\n  INSTALLED: 1.11.7\n"
    assert versions.versions_in_pip_listing(text) == ["1.11.8", "1.11.7", "1.10.3"]
    assert versions.versions_in_pip_listing("WARNING: nothing\n") == []


def test_the_version_a_requirement_installs_is_its_pin_or_the_newest_that_fits() -> None:
    assert versions.expected_version("octoprint==1.11.99", ["1.11.8"]) == "1.11.99"
    assert versions.expected_version("octoprint>=1.11,<1.12", ["1.11.7", "1.11.8", "1.12.0"]) == "1.11.8"
    assert versions.expected_version("octoprint~=1.20", ["1.11.8"]) is None


@pytest.mark.parametrize("bad", ["pip", "octoprint @ https://x/y.zip", "octoprint==1.11.8; rm -rf /", "--index-url=x"])
def test_a_bad_to_names_the_key_it_becomes_and_what_to_write(bad: str) -> None:
    with pytest.raises(OctobrixError) as caught:
        versions.check_to(bad, "ender")
    assert "printers.ender.octoprint" in caught.value.message and "octoprint==1.11.8" in caught.value.message
    assert caught.value.hint is not None and "upgrade --check" in caught.value.hint


ACTIVE = UnitProperties.parse({"ActiveState": "active", "SubState": "running", "NRestarts": "0"})
NEW = Expected("1.11.8", operational=True)


def test_healthy_means_it_answers_as_the_new_version_not_in_safe_mode_and_operational_again() -> None:
    ok = judge(Seen(ACTIVE, {"version": "1.11.8", "safemode": None}, "Operational", 30), NEW)
    assert ok.verdict is Verdict.HEALTHY
    connecting = judge(Seen(ACTIVE, {"version": "1.11.8", "safemode": None}, "Connecting", 30), NEW)
    assert connecting.verdict is Verdict.WAITING
    idle_before = judge(Seen(ACTIVE, {"version": "1.11.8"}, "Offline", 30), Expected("1.11.8", operational=False))
    assert idle_before.verdict is Verdict.HEALTHY, "a printer that was not connected need not be"


@pytest.mark.parametrize(
    ("seen", "what"),
    [
        (Seen(UnitProperties.parse({"ActiveState": "activating", "SubState": "auto-restart", "Result": "exit-code",
               "ExecMainStatus": "1"}), None, None, 5), "did not start: it exited with status 1"),
        (Seen(replace(ACTIVE, restarts=1), None, None, 5), "did not start: it ended and systemd started it again"),
        (Seen(UnitProperties.parse({"ActiveState": "failed", "Result": "exit-code", "ExecMainStatus": "3"}),
              None, None, 5),
         "did not start"),
        (Seen(ACTIVE, None, None, 500), "no HTTP answer within 240 s"),
        (Seen(ACTIVE, {"version": "1.11.8", "safemode": "incomplete_startup"}, "Operational", 20),
         "safe mode (incomplete_startup)"),
        (Seen(ACTIVE, {"version": "1.11.7"}, "Operational", 20), "runs OctoPrint 1.11.7, not 1.11.8"),
        (Seen(ACTIVE, {"version": "1.11.8"}, "Offline", 500), "was Operational before and is Offline"),
    ],
)  # fmt: skip
def test_each_failure_of_the_check_is_named(seen: Seen, what: str) -> None:
    judgement = judge(seen, NEW)
    assert judgement.verdict is Verdict.FAILED and what in judgement.what, judgement


def test_the_failure_message_says_what_failed_the_log_and_that_it_is_back() -> None:
    text = health.failed_message(
        "ender", "octoprint==1.11.99", what="its OctoPrint did not start: it exited with status 1",
        log_lines=["Dec 01 octoprint[5]: RuntimeError: broken"], back_on="1.11.8", pin="octoprint==1.11.8",
        rolled_back=True,
    )  # fmt: skip
    assert text.startswith("upgrade of ender to octoprint==1.11.99 failed: its OctoPrint did not start")
    assert "back on OctoPrint 1.11.8" in text and "pin octoprint==1.11.8 restored" in text
    assert "RuntimeError: broken" in text
    assert (
        health.stopped_message("ender", ["prusa", "voron"]) == "stopped after ender failed: not upgraded: prusa, voron"
    )
    assert health.stopped_message("ender", []) is None


def _point(name: str = "ender") -> rollback_point.Point:
    return rollback_point.Point(name, "abc123", "1.11.7", "octoprint==1.11.7", None, "octoprint==1.11.8", "now")


def test_the_rollback_point_keeps_config_and_users_root_only_and_points_at_a_complete_venv(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    basedir = layout.state_dir("ender") / "basedir"
    basedir.mkdir(parents=True)
    (basedir / "config.yaml").write_text("appearance: {name: Mine}\n")
    (basedir / "users.yaml").write_text("admin: {}\nsecond: {}\n")
    where = rollback_point.pending(layout, "ender")
    rollback_point.save(layout, _point(), where)
    assert rollback_point.load(layout, "ender") is None, "a pending point is not what rollback goes to"
    rollback_point.promote(layout, "ender")
    where = rollback_point.folder(layout, "ender")
    assert (where.stat().st_mode & 0o777, (where / "users.yaml").stat().st_mode & 0o777) == (0o700, 0o600)
    assert rollback_point.load(layout, "ender") == _point()
    (basedir / "config.yaml").write_text("appearance: {name: Changed by 1.11.8}\n")
    rollback_point.restore_files(layout, _point(), where, -1, -1)
    assert (basedir / "config.yaml").read_text() == "appearance: {name: Mine}\n"
    with pytest.raises(OctobrixError) as caught:
        rollback_point.previous_venv(layout, _point())
    assert "no longer there" in caught.value.message and "--to octoprint==1.11.7" in str(caught.value.hint)
    venv = layout.state_dir("ender") / "venvs" / "abc123"
    venv.mkdir(parents=True)
    (venv / COMPLETE_MARKER).touch()
    assert rollback_point.previous_venv(layout, _point()) == venv
    rollback_point.swap_venv(layout, "ender", venv)
    assert rollback_point.running_venv(layout, "ender") == venv.resolve()


def test_a_point_that_is_not_ours_is_refused_with_what_to_do(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    where = rollback_point.folder(layout, "ender")
    where.mkdir(parents=True)
    (where / rollback_point.POINT_FILE).write_text(json.dumps({"format": 1, "venv": "../../etc"}))
    with pytest.raises(OctobrixError) as caught:
        rollback_point.load(layout, "ender")
    assert "not one this octobrix wrote" in caught.value.message
    assert rollback_point.load(Layout(tmp_path / "none"), "ender") is None


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "octobrix.toml"
    path.write_text('[octobrix]\nwheels = "/nonexistent/wheels"\n\n[printers.ender]\nvirtual = true\nport = 5600\n')
    path.chmod(0o644)
    return path


def test_upgrade_of_an_unknown_printer_or_a_bad_to_changes_nothing(ctl: Ctl, tmp_path: Path) -> None:
    path = _config(tmp_path)
    before = path.read_text()
    unknown = ctl("upgrade", "--config", path, "prusa")
    assert unknown.returncode == 1
    assert "no printer named prusa" in unknown.stderr and "printers: ender" in unknown.stderr
    assert "hint: `octobrixctl status` lists them" in unknown.stderr
    bad = ctl("upgrade", "--config", path, "ender", "--to", "octoprint @ https://evil/x.zip")
    assert bad.returncode == 1
    assert "printers.ender.octoprint must be a pip requirement" in bad.stderr and "hint:" in bad.stderr
    assert path.read_text() == before


def test_check_says_when_the_wheels_folder_cannot_be_read(ctl: Ctl, tmp_path: Path) -> None:
    done = ctl("upgrade", "--check", "--config", _config(tmp_path))
    assert done.returncode == 1
    assert "cannot read the wheels folder /nonexistent/wheels" in done.stderr
    assert "hint: check [octobrix] wheels" in done.stderr


def test_check_lists_what_each_printer_runs_and_could_move_to(ctl: Ctl, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in WHEELS:
        (wheels / name).touch()
    path = tmp_path / "octobrix.toml"
    path.write_text(f'[octobrix]\nwheels = "{wheels}"\n\n[printers.ender]\nvirtual = true\nport = 5600\n')
    path.chmod(0o644)
    done = ctl("upgrade", "--check", "--config", path)
    assert done.returncode == 0, done.stderr
    # Nothing is installed here: it says so and proposes nothing.
    assert done.stdout.startswith("ender: runs no OctoPrint yet (octoprint==1.11.8); nothing newer"), done.stdout


def test_rollback_of_an_unknown_printer_says_which_there_are(ctl: Ctl, tmp_path: Path) -> None:
    done = ctl("rollback", "--config", _config(tmp_path), "prusa")
    assert done.returncode == 1 and "no printer named prusa" in done.stderr and "hint:" in done.stderr


def test_a_new_build_keeps_the_venv_that_ran_before_it_even_beside_a_newer_one(tmp_path: Path) -> None:
    """After a rollback the running venv is older than the one rolled back from; the next upgrade must
    keep the running one (what the next rollback goes to), not the newer leftover."""
    layout = Layout(tmp_path)
    folder = layout.state_dir("ender") / "venvs"
    made = {}
    for age, name in enumerate(("ran-before", "rolled-back-from", "new")):
        made[name] = folder / name
        made[name].mkdir(parents=True)
        (made[name] / COMPLETE_MARKER).touch()
        os.utime(made[name], (1000 + age, 1000 + age))
    venvs._prune(layout, made["new"], made["ran-before"])
    assert sorted(p.name for p in folder.iterdir()) == ["new", "ran-before"]
