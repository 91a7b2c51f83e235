"""Root's readers and writers of a printer's folders (apply, seeding, venv metadata, rollback points)
never follow a link or read a FIFO planted there: the secret behind a link never shows up, another
printer's folder stays as it was, and the normal file still works."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from octobrixd.apply.plan import apply_plan, make_plan, render_diff
from octobrixd.config.model import parse_config
from octobrixd.errors import OctobrixError
from octobrixd.farm.manifest import Manifest
from octobrixd.instances import seeding
from octobrixd.instances.instance import Instance
from octobrixd.instances.venv_contents import installed_versions, read_venv_at, report
from octobrixd.instances.venv_drift import venv_results
from octobrixd.instances.versions import installed_octoprint
from octobrixd.render.octoprint import ONLINE_CHECK_PLUGIN_NAME
from octobrixd.system import nofollow
from octobrixd.system.nofollow import UnsafePathError
from octobrixd.system.paths import Layout
from octobrixd.upgrades import rollback_point

SECRET = "root-only secret 7f3a\n"  # noqa: S105 (a stand-in for /etc/shadow)
CONFIG = "[printers.p1]\nvirtual = true\nport = 5001\n\n[printers.p2]\nvirtual = true\nport = 5002\n"


@pytest.fixture
def farm(tmp_path: Path) -> Layout:
    """Two printers' state dirs with a basedir each, and a root-only file outside them."""
    layout = Layout(tmp_path / "root")
    for name in ("p1", "p2"):
        (Instance(name, layout).basedir / "plugins").mkdir(parents=True)
        Instance(name, layout).config_yaml.write_text(f"server:\n  firstRun: false\n  name: {name}\n")
    secret = tmp_path / "shadow"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    return layout


def secret_of(layout: Layout) -> Path:
    return layout.root.parent / "shadow"


def snapshot(folder: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        out[rel] = f"-> {path.readlink()}" if path.is_symlink() else path.read_bytes() if path.is_file() else "dir"
    return out


def finishes(act: Callable[[], Any]) -> Any:
    """act() run in a thread that must finish: a FIFO must never hang root."""
    got: dict[str, Any] = {}

    def target() -> None:
        try:
            got["value"] = act()
        except BaseException as error:
            got["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive(), "root hung on a FIFO"
    if "error" in got:
        raise got["error"]
    return got.get("value")


# --- system/nofollow additions ---


def test_staged_write_commits_owned_and_a_temp_swapped_for_a_link_is_refused(farm: Layout) -> None:
    top = Instance("p1", farm).state_dir
    temp = nofollow.stage(top, "basedir/config.yaml", "a: 1\n", mode=0o600)
    nofollow.commit(top, "basedir/config.yaml", temp, uid=65534, gid=65534)
    written = Instance("p1", farm).config_yaml
    assert written.read_text() == "a: 1\n" and (written.stat().st_uid, written.stat().st_gid) == (65534, 65534)
    temp = nofollow.stage(top, "basedir/config.yaml", "b: 2\n")
    (top / "basedir" / temp).unlink()
    (top / "basedir" / temp).symlink_to(secret_of(farm))
    with pytest.raises(UnsafePathError, match="it is a link"):
        nofollow.commit(top, "basedir/config.yaml", temp, uid=65534, gid=65534)
    assert secret_of(farm).stat().st_uid == 0 and secret_of(farm).read_text() == SECRET
    nofollow.discard(top, "basedir/config.yaml", temp)
    assert written.read_text() == "a: 1\n" and not (top / "basedir" / temp).is_symlink()


def test_remove_and_prune_never_reach_through_a_linked_folder(farm: Layout) -> None:
    p1, p2 = Instance("p1", farm), Instance("p2", farm)
    (p2.plugins / "theirs.py").write_text("x = 1\n")
    p1.plugins.rmdir()
    p1.plugins.symlink_to(p2.plugins)
    with pytest.raises(UnsafePathError):
        nofollow.remove(p1.state_dir, "basedir/plugins/theirs.py")
    nofollow.prune_empty_dir(p1.state_dir, "basedir/plugins")
    assert (p2.plugins / "theirs.py").read_text() == "x = 1\n" and p1.plugins.is_symlink()
    (p2.plugins / "theirs.py").unlink()
    assert nofollow.remove(p2.state_dir, "basedir/config.yaml") and not p2.config_yaml.exists()
    assert not nofollow.remove(p2.state_dir, "basedir/config.yaml")


def test_walk_lists_links_without_entering_them(farm: Layout) -> None:
    p1, p2 = Instance("p1", farm), Instance("p2", farm)
    (p2.plugins / "theirs.py").write_text("x = 1\n")
    (p1.basedir / "elsewhere").symlink_to(p2.basedir)
    found = [str(rel) for rel, _info in nofollow.walk_files(p1.state_dir, "basedir")]
    assert "basedir/elsewhere" in found and "basedir/plugins" in found
    assert not [f for f in found if "theirs" in f]


# --- the venv, through root's venv link ---


def make_venv(layout: Layout, name: str, folder: str = "v1", version: str = "1.11.8") -> Path:
    site = Instance(name, layout).state_dir / "venvs" / folder / "lib" / "python3.11" / "site-packages"
    dist = site / f"OctoPrint-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: OctoPrint\nVersion: {version}\n\nbody\n")
    plugin = site / "OctoPrint_Thing-1.0.dist-info"
    plugin.mkdir()
    (plugin / "METADATA").write_text("Metadata-Version: 2.1\nName: OctoPrint-Thing\nVersion: 1.0\n\n")
    (plugin / "entry_points.txt").write_text("[octoprint.plugin]\nthing = thing\n")
    (plugin / "INSTALLER").write_text("pip\n")
    link = Instance(name, layout).venv
    if not link.is_symlink():
        link.symlink_to(f"venvs/{folder}")
    return site


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("venvs/abc", PurePosixPath("venvs/abc")),
        ("venvs/abc-1", PurePosixPath("venvs/abc-1")),
        ("/etc", None),
        ("venvs/../../p2/venvs/v1", None),
        ("venvs/a/b", None),
        ("venvs/..", None),
        ("../p2/venv", None),
        ("venvs/", None),
    ],
)
def test_only_a_venv_link_octobrix_writes_names_a_venv(farm: Layout, text: str, expected: PurePosixPath | None) -> None:
    instance = Instance("p1", farm)
    assert instance.active_venv_dir() is None  # not built yet
    instance.venv.symlink_to(text)
    assert instance.active_venv_dir() == expected


def test_a_venv_link_pointing_elsewhere_reads_nothing(farm: Layout) -> None:
    make_venv(farm, "p2", version="1.9.0")
    Instance("p1", farm).venv.symlink_to("../p2/venvs/v1")
    config = parse_config(CONFIG)
    assert installed_octoprint(farm, "p1") is None
    assert report(farm, config, "p1").octoprint_version is None
    assert report(farm, config, "p2").octoprint_version == "1.9.0"  # positive control


def test_planted_links_and_fifos_in_a_venv_are_never_read(farm: Layout) -> None:
    site = make_venv(farm, "p1")
    other = make_venv(farm, "p2", version="1.9.0")
    # A dist-info folder that is a link to another printer's, a METADATA that is a link to a root-only
    # file, an entry_points.txt that is a FIFO, a lib/python3.12 that is a link to p2's site.
    (site / "Stolen-1.0.dist-info").symlink_to(other / "OctoPrint-1.9.0.dist-info")
    leak = site / "Leak-1.0.dist-info"
    leak.mkdir()
    (leak / "METADATA").symlink_to(secret_of(farm))
    os.mkfifo(site / "OctoPrint_Thing-1.0.dist-info" / "direct_url.json")
    fifo_plugin = site / "Fifo-1.0.dist-info"
    fifo_plugin.mkdir()
    (fifo_plugin / "METADATA").write_text("Name: Fifo\nVersion: 1.0\n\n")
    os.mkfifo(fifo_plugin / "entry_points.txt")
    os.mkfifo(fifo_plugin / "INSTALLER")
    (site.parent.parent / "python3.12").symlink_to(other.parent)
    config = parse_config(CONFIG)

    got = finishes(lambda: report(farm, config, "p1"))
    dists = finishes(lambda: read_venv_at(Instance("p1", farm).state_dir, PurePosixPath("venvs/v1")))
    assert got.octoprint_version == "1.11.8"  # its own, not p2's 1.9.0
    assert [p.name for p in got.plugins] == ["OctoPrint-Thing"]  # the normal file still works
    assert set(dists) == {"octoprint", "octoprint-thing", "fifo"}
    assert not dists["fifo"].is_plugin and dists["fifo"].installer == ""
    assert SECRET.strip() not in repr(got) + repr(dists)
    assert "stolen" not in installed_versions(Instance("p1", farm).state_dir / "venvs/v1")
    findings = finishes(lambda: venv_results(farm, config))
    assert SECRET.strip() not in repr(findings)


# --- apply: config.yaml and octobrix's files in the basedir ---


def test_a_linked_config_yaml_is_refused_and_nothing_changes(farm: Layout) -> None:
    config = parse_config(CONFIG)
    p1, p2 = Instance("p1", farm), Instance("p2", farm)
    before = snapshot(p2.state_dir)
    p1.config_yaml.unlink()
    p1.config_yaml.symlink_to(secret_of(farm))
    with pytest.raises(UnsafePathError, match=f"refusing {p1.config_yaml}"):
        make_plan(config, farm, Manifest(files={}, units={}))
    p1.config_yaml.unlink()
    p1.config_yaml.symlink_to(p2.config_yaml)
    with pytest.raises(UnsafePathError, match="it is a link"):
        make_plan(config, farm, Manifest(files={}, units={}))
    assert snapshot(p2.state_dir) == before and secret_of(farm).read_text() == SECRET


def test_a_fifo_config_yaml_is_refused_without_hanging(farm: Layout) -> None:
    config = parse_config(CONFIG)
    config_yaml = Instance("p1", farm).config_yaml
    config_yaml.unlink()
    os.mkfifo(config_yaml)
    with pytest.raises(UnsafePathError, match="not a regular file"):
        finishes(lambda: make_plan(config, farm, Manifest(files={}, units={})))


def test_apply_replaces_a_link_at_its_own_file_and_writes_config_yaml_normally(farm: Layout) -> None:
    config = parse_config(CONFIG)
    p1, p2 = Instance("p1", farm), Instance("p2", farm)
    planted = p1.plugins / ONLINE_CHECK_PLUGIN_NAME
    planted.symlink_to(secret_of(farm))
    p2_config = p2.config_yaml.read_text()
    p2.config_yaml.chmod(0o640)
    plan = make_plan(config, farm, Manifest(files={}, units={}))
    assert SECRET not in render_diff(plan)
    apply_plan(plan, farm, Manifest(files={}, units={}))
    assert not planted.is_symlink() and SECRET not in planted.read_text()
    assert planted.read_text() == (p2.plugins / ONLINE_CHECK_PLUGIN_NAME).read_text()
    assert secret_of(farm).read_text() == SECRET and secret_of(farm).stat().st_mode & 0o777 == 0o600
    assert "name: p1" in p1.config_yaml.read_text() and SECRET not in p1.config_yaml.read_text()  # normal file
    assert "name: p2" in p2.config_yaml.read_text() and p2.config_yaml.read_text() != p2_config


def test_apply_refuses_a_linked_plugins_folder_and_writes_nothing_there(farm: Layout) -> None:
    config = parse_config(CONFIG)
    p1, p2 = Instance("p1", farm), Instance("p2", farm)
    first = make_plan(config, farm, Manifest(files={}, units={}))
    apply_plan(first, farm, Manifest(files={}, units={}))
    (p2.plugins / "mine.py").write_text("p2's plugin\n")
    for child in p1.plugins.iterdir():
        child.unlink()
    p1.plugins.rmdir()
    p1.plugins.symlink_to(p2.plugins)
    # p2's copy differs, so p1's must be written again: through the link it would land in p2's folder.
    for child in p2.plugins.glob("octobrix*"):
        child.write_text("changed by p2\n")
    before = snapshot(p2.state_dir)
    manifest = first.manifest
    plan = make_plan(config, farm, manifest)
    with pytest.raises(UnsafePathError, match="link or not a folder"):
        apply_plan(plan, farm, manifest)
    assert snapshot(p2.state_dir) == before


# --- seeding: users.yaml and the app keys ---


def test_seeding_refuses_a_linked_users_yaml(farm: Layout) -> None:
    instance = Instance("p1", farm)
    instance.users_yaml.symlink_to(secret_of(farm))
    with pytest.raises(UnsafePathError, match=f"refusing {instance.users_yaml}"):
        seeding._users(instance)
    instance.users_yaml.unlink()
    os.mkfifo(instance.users_yaml)
    with pytest.raises(UnsafePathError, match="not a regular file"):
        finishes(lambda: seeding._users(instance))
    instance.users_yaml.unlink()
    instance.users_yaml.write_text("admin: {}\n")
    assert seeding._users(instance) == {"admin": {}}  # positive control


def test_app_keys_are_never_written_through_a_linked_folder(farm: Layout) -> None:
    p1, p2 = Instance("p1", farm), Instance("p2", farm)
    (p2.basedir / "data" / "appkeys").mkdir(parents=True)
    (p2.app_keys).write_text("admin: []\n")
    before = snapshot(p2.state_dir)
    (p1.basedir / "data").symlink_to(p2.basedir / "data")
    with pytest.raises(UnsafePathError):
        seeding._ensure_app_key(p1, "admin", "KEY1", ids=(65534, 65534))
    assert snapshot(p2.state_dir) == before
    (p1.basedir / "data").unlink()
    seeding._ensure_app_key(p1, "admin", "KEY1", ids=(65534, 65534))
    assert "KEY1" in p1.app_keys.read_text() and p1.app_keys.stat().st_uid == 65534
    assert (p1.basedir / "data").stat().st_uid == 65534


# --- rollback points ---


def point(name: str = "p1", venv: str = "v1") -> rollback_point.Point:
    return rollback_point.Point(name, venv, "1.11.8", "octoprint==1.11.8", None, "octoprint==1.11.9", "now")


def test_a_rollback_point_never_copies_through_a_link(farm: Layout) -> None:
    p1 = Instance("p1", farm)
    p1.users_yaml.symlink_to(secret_of(farm))
    where = rollback_point.pending(farm, "p1")
    with pytest.raises(UnsafePathError, match=r"users\.yaml"):
        rollback_point.save(farm, point(), where)
    assert not where.exists()
    p1.users_yaml.unlink()
    p1.users_yaml.write_text("admin: {}\n")
    rollback_point.save(farm, point(), where)  # positive control
    assert (where / "users.yaml").read_text() == "admin: {}\n"
    assert SECRET not in "".join(p.read_text() for p in where.iterdir())


def test_restoring_a_rollback_point_replaces_a_planted_link(farm: Layout) -> None:
    p1, p2 = Instance("p1", farm), Instance("p2", farm)
    where = rollback_point.pending(farm, "p1")
    rollback_point.save(farm, point(), where)
    before = snapshot(p2.state_dir)
    p1.config_yaml.unlink()
    p1.config_yaml.symlink_to(p2.config_yaml)
    (p1.basedir / ".config.yaml.rollback").symlink_to(secret_of(farm))
    rollback_point.restore_files(farm, point(), where, 65534, 65534)
    assert not p1.config_yaml.is_symlink() and "name: p1" in p1.config_yaml.read_text()
    assert p1.config_yaml.stat().st_uid == 65534
    assert snapshot(p2.state_dir) == before and secret_of(farm).read_text() == SECRET


@pytest.mark.parametrize("venv", ["../../p2/venvs/v1", "/etc", "..", ""])
def test_a_rollback_point_naming_a_venv_elsewhere_is_refused(farm: Layout, venv: str) -> None:
    where = rollback_point.folder(farm, "p1")
    where.mkdir(parents=True)
    body = {"format": 1, **asdict(point()), "venv": venv}
    (where / rollback_point.POINT_FILE).write_text(json.dumps(body))
    with pytest.raises(OctobrixError, match="not one this octobrix wrote"):
        rollback_point.load(farm, "p1")


def test_a_rollback_point_goes_back_only_to_a_complete_venv_of_its_own(farm: Layout) -> None:
    make_venv(farm, "p1", folder="old")
    with pytest.raises(OctobrixError, match="no longer there"):
        rollback_point.previous_venv(farm, point(venv="old"))
    marker = Instance("p1", farm).state_dir / "venvs/old/.octobrix-complete"
    marker.symlink_to(secret_of(farm))
    with pytest.raises(OctobrixError, match="no longer there"):
        rollback_point.previous_venv(farm, point(venv="old"))
    marker.unlink()
    marker.touch()
    assert rollback_point.previous_venv(farm, point(venv="old")) == Instance("p1", farm).state_dir / "venvs/old"
    assert rollback_point.running_venv(farm, "p1") == Instance("p1", farm).state_dir / "venvs/old"
