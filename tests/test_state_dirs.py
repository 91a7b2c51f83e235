"""The state directory layout of #29, with a real user (`nobody`) and real files: what apply makes,
and how it takes an older farm's state directory back without following anything the printer's user
could have planted."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from octobrixd.apply.state_dirs import LinkAction, ensure_state_dir, state_dir_ready, venv_link_verdict
from octobrixd.errors import OctobrixError
from octobrixd.instances.instance import Instance
from octobrixd.system.paths import Layout

NOBODY = pwd.getpwnam("nobody")
IDS = (NOBODY.pw_uid, NOBODY.pw_gid)


def owner_and_mode(path: Path) -> tuple[int, int, int]:
    info = os.lstat(path)
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def as_user(path: Path) -> None:
    os.lchown(path, *IDS)


@pytest.fixture
def instance(tmp_path: Path) -> Instance:
    if os.geteuid() != 0:
        pytest.skip("changes owners: runs as root")
    return Instance("bench", Layout(tmp_path))


def old_farm(instance: Instance) -> None:
    """A state directory as octobrix made it before #29: everything the user's, 0700."""
    for directory in (instance.state_dir, instance.venvs, instance.venvs / "abc", instance.basedir, instance.plugins):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        as_user(directory)
    (instance.state_dir / ".cache").mkdir()
    as_user(instance.state_dir / ".cache")


def test_a_new_instance_gets_roots_state_directory_with_the_users_basedir_and_home(instance: Instance) -> None:
    assert not state_dir_ready(instance, IDS)
    ensure_state_dir(instance, IDS)
    uid, gid = IDS
    assert owner_and_mode(instance.state_dir) == (0, gid, 0o750)
    assert owner_and_mode(instance.venvs) == (0, gid, 0o750)
    for own in (instance.basedir, instance.plugins, instance.home):
        assert owner_and_mode(own) == (uid, gid, 0o700), own
    assert instance.home == instance.state_dir / "home"
    assert state_dir_ready(instance, IDS)


def test_an_older_farm_is_taken_back_and_the_users_venv_link_is_made_again_by_root(instance: Instance) -> None:
    old_farm(instance)
    (instance.state_dir / "venv").symlink_to("venvs/abc")
    as_user(instance.state_dir / "venv")
    assert venv_link_verdict(instance, IDS).action is LinkAction.REPOINT
    assert not state_dir_ready(instance, IDS)

    ensure_state_dir(instance, IDS)
    _uid, gid = IDS
    assert owner_and_mode(instance.state_dir) == (0, gid, 0o750)
    assert owner_and_mode(instance.venvs) == (0, gid, 0o750)
    link = os.lstat(instance.venv)
    assert stat.S_ISLNK(link.st_mode) and link.st_uid == 0, "root's link now"
    assert str(instance.venv.readlink()) == "venvs/abc", "the same venv: nothing to build"
    assert owner_and_mode(instance.venvs / "abc")[0] == IDS[0], "a venv's folders stay the user's"
    assert (instance.state_dir / ".cache").is_dir(), "what the old HOME left stays"
    assert state_dir_ready(instance, IDS)


@pytest.mark.parametrize("target", ["/etc", "../other/venv", "venvs/abc/../../..", "venvs/missing"])
def test_a_venv_link_pointing_elsewhere_is_removed(instance: Instance, tmp_path: Path, target: str) -> None:
    old_farm(instance)
    (instance.state_dir / "venv").symlink_to(target)
    assert venv_link_verdict(instance, IDS).action is LinkAction.REMOVE
    ensure_state_dir(instance, IDS)
    assert not os.path.lexists(instance.venv), "removed: apply builds the venv again"
    assert state_dir_ready(instance, IDS)


def test_a_venv_through_a_link_the_user_left_in_venvs_is_removed_with_that_link(
    instance: Instance, tmp_path: Path
) -> None:
    old_farm(instance)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (instance.venvs / "planted").symlink_to(elsewhere)
    (instance.state_dir / "venv").symlink_to("venvs/planted")  # root's link, into the user's old venvs/
    assert venv_link_verdict(instance, IDS).action is LinkAction.REMOVE
    ensure_state_dir(instance, IDS)
    assert not os.path.lexists(instance.venvs / "planted")
    assert not os.path.lexists(instance.venv)
    assert elsewhere.is_dir() and owner_and_mode(elsewhere)[0] == 0, "its target untouched"


def test_roots_own_venv_link_is_kept(instance: Instance) -> None:
    ensure_state_dir(instance, IDS)
    (instance.venvs / "abc").mkdir()
    instance.venv.symlink_to("venvs/abc")
    assert venv_link_verdict(instance, IDS).action is LinkAction.KEEP
    assert state_dir_ready(instance, IDS)


@pytest.mark.parametrize("planted", ["basedir", "home", "venvs", "basedir/plugins"])
def test_a_link_where_a_directory_belongs_is_refused_and_not_followed(
    instance: Instance, tmp_path: Path, planted: str
) -> None:
    old_farm(instance)
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o755)
    where = instance.state_dir / planted
    if where.is_dir():
        where.rename(tmp_path / "moved")
    where.symlink_to(victim)
    with pytest.raises(OctobrixError) as raised:
        ensure_state_dir(instance, IDS)
    assert f"{where} should be a directory but is a link" in raised.value.message
    assert owner_and_mode(victim) == (0, 0, 0o755), "what the link points at keeps its owner and mode"
    assert not state_dir_ready(instance, IDS)


def test_a_fifo_where_a_directory_belongs_is_refused(instance: Instance) -> None:
    old_farm(instance)
    instance.plugins.rmdir()
    os.mkfifo(instance.plugins)
    with pytest.raises(OctobrixError, match=r"plugins should be a directory but is not a directory"):
        ensure_state_dir(instance, IDS)


def test_under_root_modes_are_set_and_no_owner_changes(tmp_path: Path) -> None:
    instance = Instance("bench", Layout(tmp_path))
    ensure_state_dir(instance, None)
    assert stat.S_IMODE(instance.state_dir.stat().st_mode) == 0o750
    assert stat.S_IMODE(instance.home.stat().st_mode) == 0o700
    assert instance.state_dir.stat().st_uid == os.geteuid()
    assert state_dir_ready(instance, None)
