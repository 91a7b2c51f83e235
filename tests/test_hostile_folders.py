"""Backups, restores, bundles and imports in front of a hostile printer: links named uploads/, data/
and logs/ (and inside them) to a root-only file and to another printer's folder, FIFOs where a file
is expected. Root follows none of them, reads no FIFO, carries no root-only content into anything
the printer's user can read, and either does its job for the normal files or refuses in one line.

OctoPrint's CLI is stood in for where it runs as the printer's user: the stand-in plays the hostile
printer and plants what it likes in its work folder (the real CLI runs in tests/lab/test_backups.py).
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from octobrixd.backups import archive, bundle, engine
from octobrixd.config.model import parse_config
from octobrixd.errors import OctobrixError
from octobrixd.importers import copy as import_copy
from octobrixd.importers import move as import_move
from octobrixd.instances.instance import Instance
from octobrixd.system import systemd
from octobrixd.system.nofollow import UnsafePathError
from octobrixd.system.paths import Layout
from tests import import_trees as trees

NOBODY = (65534, 65534)
SECRET = b"ROOT-ONLY-SECRET do not leak\n"
FARM = "[printers.shop]\nvirtual = true\nport = 5600\n\n[printers.other]\nvirtual = true\nport = 5601\n"
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plants files of another user: needs root")


def bounded(action: Callable[[], Any], seconds: float = 20.0) -> Any:
    """action() in a thread that must finish: a FIFO opened for reading would hang it."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = action()
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=seconds)
    assert not thread.is_alive(), "it hung (a FIFO was opened for reading?)"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def snapshot(top: Path) -> dict[str, tuple[int, int, int, bytes]]:
    out = {}
    for path in sorted([top, *top.rglob("*")]):
        info = path.lstat()
        body = path.read_bytes() if stat.S_ISREG(info.st_mode) else b""
        out[str(path)] = (info.st_mode, info.st_uid, info.st_gid, body)
    return out


def no_secret_in(top: Path) -> None:
    for path in [top] if top.is_file() else top.rglob("*"):
        if stat.S_ISREG(path.lstat().st_mode):
            assert SECRET not in path.read_bytes(), path
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as zipped:
                    assert all(SECRET not in zipped.read(n) for n in zipped.namelist()), path


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[tuple[Layout, Path, Path]]:
    """(layout, the secret file, the other printer's basedir); printer shop's basedir is nobody's,
    with a normal upload and every trap in place."""
    layout = Layout(tmp_path)
    secret = tmp_path / "root-only.yaml"
    secret.write_bytes(SECRET)
    secret.chmod(0o640)  # root:root: no printer user may read it (a chmod by root would show)
    for name in ("shop", "other"):
        state = layout.state_dir(name)
        (state / "basedir").mkdir(parents=True)
        state.chmod(0o750)
        (state / "basedir" / "config.yaml").write_text(f"appearance:\n  name: {name}\n")
        trees.fake_venv(state / "venvs" / "v1", "1.11.8")
        (state / "venv").symlink_to("venvs/v1")
    other = layout.state_dir("other") / "basedir"
    (other / "uploads").mkdir()
    (other / "uploads" / "other.gcode").write_bytes(b"OTHER PRINTER\n")
    base = layout.state_dir("shop") / "basedir"
    (base / "users.yaml").write_text("admin: {}\n")
    (base / "files").mkdir()
    (base / "files" / "normal.gcode").write_bytes(b"G28 ; a normal upload\n")
    (base / "uploads").symlink_to(other / "uploads")
    (base / "data").symlink_to(tmp_path)
    (base / "logs").symlink_to(secret)
    (base / "files" / "secret.gcode").symlink_to(secret)
    (base / "files" / "other").symlink_to(other)
    os.mkfifo(base / "files" / "fifo.gcode")
    for path in [base, *base.rglob("*")]:
        os.lchown(path, *NOBODY)
    yield layout, secret, other


@pytest.fixture
def as_nobody(monkeypatch: pytest.MonkeyPatch) -> list[Sequence[str]]:
    monkeypatch.setattr(Instance, "ids", lambda _self: NOBODY)
    monkeypatch.setattr(engine, "printing_now", lambda _layout: lambda _name: False)
    monkeypatch.setattr(systemd, "stop", lambda *_a, **_k: None)
    monkeypatch.setattr(systemd, "start", lambda *_a, **_k: None)
    return []


def octoprint_zip(path: Path, basedir: Path) -> None:
    """What OctoPrint's backup writes, as its user would: what that user may read, links as it finds them."""
    with zipfile.ZipFile(path, "w") as out:
        out.writestr("metadata.json", json.dumps({"version": "1.11.8", "excludes": []}))
        for file in sorted(basedir.rglob("*")):
            info = file.lstat()
            if stat.S_ISREG(info.st_mode) and info.st_uid == NOBODY[0]:
                out.write(file, f"basedir/{file.relative_to(basedir)}")
        if "basedir/config.yaml" not in out.namelist():
            out.writestr("basedir/config.yaml", "a: 1\n")


def fake_cli(monkeypatch: pytest.MonkeyPatch, plant: Callable[[Path, Path], None]) -> list[Sequence[str]]:
    """OctoPrint's CLI as the hostile printer runs it: plant(path it was given, its basedir)."""
    calls: list[Sequence[str]] = []

    def run_octoprint(self: Instance, args: Sequence[str], **_kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        if args[:2] == ["plugins", "backup:backup"]:
            plant(Path(args[3]), self.basedir)
            return subprocess.CompletedProcess(args, 0, "", "")
        if args[:2] == ["plugins", "backup:restore"]:
            with zipfile.ZipFile(args[2]) as zipped:
                for member in zipped.namelist():
                    if member.startswith("basedir/"):
                        target = self.basedir / member.removeprefix("basedir/")
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(zipped.read(member))
            return subprocess.CompletedProcess(args, 0, f"Restored from {args[2]}\n", "")
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(Instance, "run_octoprint", run_octoprint)
    monkeypatch.setattr(engine, "reapply_octobrix_keys", lambda *_a, **_k: None)
    return calls


def made_by_nobody(path: Path, basedir: Path) -> None:
    octoprint_zip(path, basedir)
    os.chown(path, *NOBODY)


def test_a_backup_has_the_normal_upload_and_nothing_behind_a_link(
    farm: tuple[Layout, Path, Path], as_nobody: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, secret, other = farm
    fake_cli(monkeypatch, made_by_nobody)
    before = snapshot(other), snapshot(secret)
    made = bounded(lambda: engine.make_backup(parse_config(FARM, "/etc/octobrix.toml"), layout, "shop"))
    with zipfile.ZipFile(made.zip_path) as zipped:
        assert zipped.read("basedir/files/normal.gcode") == b"G28 ; a normal upload\n"
    info = made.zip_path.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o600), "root's file in root's folder"
    no_secret_in(layout.path(archive.BACKUP_ROOT))
    assert (snapshot(other), snapshot(secret)) == before
    assert list((layout.state_dir("shop") / engine.WORK_DIR).iterdir()) == []


@pytest.mark.parametrize(
    ("kind", "said"),
    [("link", "it is a link"), ("fifo", "not a regular file of the printer's own"),
     ("not-its-own", "not a regular file of the printer's own")],
)  # fmt: skip
def test_a_backup_refuses_what_the_printer_planted_as_its_zip(
    farm: tuple[Layout, Path, Path], as_nobody: object, monkeypatch: pytest.MonkeyPatch, kind: str, said: str
) -> None:
    layout, secret, other = farm

    def plant(path: Path, _basedir: Path) -> None:
        if kind == "link":
            path.symlink_to(secret)
        elif kind == "fifo":
            os.mkfifo(path)
            os.chown(path, *NOBODY)
        else:
            path.write_bytes(SECRET)  # root's own file (a hard link of one, say), not the printer's

    fake_cli(monkeypatch, plant)
    before = snapshot(other), snapshot(secret)
    with pytest.raises(UnsafePathError) as caught:
        bounded(lambda: engine.make_backup(parse_config(FARM, "/etc/octobrix.toml"), layout, "shop"))
    assert said in caught.value.message and "\n" not in caught.value.message
    assert (snapshot(other), snapshot(secret)) == before, "not chowned, not chmodded, not moved"
    assert list(archive.printer_folder(layout, "shop").iterdir()) == []


def test_a_work_folder_swapped_for_a_link_is_refused(
    farm: tuple[Layout, Path, Path], as_nobody: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, _secret, other = farm
    calls = fake_cli(monkeypatch, made_by_nobody)
    (layout.state_dir("shop") / engine.WORK_DIR).symlink_to(other)
    before = snapshot(other)
    with pytest.raises(UnsafePathError, match="link or not a folder"):
        engine.make_backup(parse_config(FARM, "/etc/octobrix.toml"), layout, "shop")
    zip_path = layout.path("b.zip")
    with zipfile.ZipFile(zip_path, "w") as out:
        out.writestr("metadata.json", json.dumps({"version": "1.11.8"}))
        out.writestr("basedir/config.yaml", "a: 1\n")
        out.writestr("basedir/users.yaml", "admin: {}\n")
    with pytest.raises(UnsafePathError, match="link or not a folder"):
        engine.restore(parse_config(FARM, "/etc/octobrix.toml"), layout, "shop", zip_path)
    assert snapshot(other) == before and calls == []


def test_a_restore_puts_the_backup_back_and_writes_through_no_link(
    farm: tuple[Layout, Path, Path], as_nobody: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, secret, other = farm
    fake_cli(monkeypatch, made_by_nobody)
    config = parse_config(FARM, "/etc/octobrix.toml")
    made = engine.make_backup(config, layout, "shop")
    before = snapshot(other), snapshot(secret)
    # A planted name in the work folder where a restore might have put its copy: never written through.
    work = layout.state_dir("shop") / engine.WORK_DIR
    (work / "restore.zip").symlink_to(secret)
    engine.restore(config, layout, "shop", made.zip_path)
    base = layout.state_dir("shop") / "basedir"
    assert (base / "files" / "normal.gcode").read_bytes() == b"G28 ; a normal upload\n"
    assert stat.S_IMODE(base.stat().st_mode) == 0o700 and base.stat().st_uid == NOBODY[0]
    assert (snapshot(other), snapshot(secret)) == before
    assert [p.name for p in work.iterdir()] == ["restore.zip"], "its staged copy is gone, the planted link left"


@pytest.mark.parametrize("member", ["../../etc/cron.d/evil", "/etc/cron.d/evil", "basedir/../../x", "basedir/link"])
def test_a_zip_with_an_entry_outside_the_basedir_is_refused_before_anything(tmp_path: Path, member: str) -> None:
    path = tmp_path / "b.zip"
    with zipfile.ZipFile(path, "w") as out:
        out.writestr("metadata.json", json.dumps({"version": "1.11.8"}))
        out.writestr("basedir/config.yaml", "a: 1\n")
        out.writestr("basedir/users.yaml", "admin: {}\n")
        entry = zipfile.ZipInfo(member)
        if member.endswith("link"):
            entry.external_attr = (stat.S_IFLNK | 0o777) << 16
        out.writestr(entry, "/etc/shadow")
    with pytest.raises(OctobrixError, match="outside the printer's folder or is a link") as caught:
        archive.read_zip(path)
    assert "\n" not in caught.value.message


def test_a_bundle_naming_a_printer_its_config_does_not_have_is_refused(tmp_path: Path) -> None:
    manifest = json.dumps({"version": 1, "printers": ["shop", "../../../etc/cron.d/x"]}).encode()
    path = tmp_path / "b.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in (("octobrix-bundle.json", manifest), ("octobrix.toml", FARM.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(OctobrixError, match="its list of printers is not the printers of its config"):
        bundle.read_bundle(path, tmp_path / "octobrix.toml")


def test_a_bundle_carries_the_normal_upload_and_no_secret(
    farm: tuple[Layout, Path, Path], as_nobody: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, _secret, _other = farm
    fake_cli(monkeypatch, made_by_nobody)
    config_path = trees.write(layout.path("etc/octobrix.toml"), FARM)
    target = layout.path("farm.tar")
    bundle.write_bundle(parse_config(FARM, str(config_path)), config_path, layout, target, lambda _line: None)
    with tarfile.open(target) as tar:
        member = tar.extractfile("printers/shop.zip")
        assert member is not None
        body = member.read()
    assert SECRET not in body
    with zipfile.ZipFile(io.BytesIO(body)) as zipped:
        assert zipped.read("basedir/files/normal.gcode") == b"G28 ; a normal upload\n"
        assert all(SECRET not in zipped.read(n) for n in zipped.namelist())


# Imports: a foreign ~/.octoprint, read by root.


@pytest.fixture
def old_basedir(farm: tuple[Layout, Path, Path]) -> Path:
    layout, secret, other = farm
    base = layout.path("home/pi/.octoprint")
    trees.basedir(base, "ender")
    (base / "uploads" / "secret.gcode").symlink_to(secret)
    (base / "uploads" / "other").symlink_to(other)
    os.mkfifo(base / "uploads" / "fifo.gcode")
    (base / "uploads" / "sudo-made.gcode").write_bytes(SECRET)  # root's own, 0600: the old user could not read it
    (base / "data" / "linked").symlink_to(other / "uploads")
    for path in [base, *base.rglob("*")]:
        if path.name != "sudo-made.gcode":
            os.lchown(path, *NOBODY)
    (base / "uploads" / "sudo-made.gcode").chmod(0o600)
    return base


def test_an_import_copies_the_files_keeps_links_as_links_and_reads_no_fifo(
    farm: tuple[Layout, Path, Path], old_basedir: Path
) -> None:
    layout, secret, other = farm
    before = snapshot(other), snapshot(secret), snapshot(old_basedir)
    target = layout.state_dir("shop") / "copy"
    copied = bounded(lambda: import_copy.copy_basedir(old_basedir, target, *NOBODY, owner=NOBODY[0]))
    assert (target / "uploads" / "ender.gcode").read_bytes() == b"G28\n"
    assert (target / "uploads" / "secret.gcode").readlink() == secret
    assert (target / "data" / "linked").readlink() == other / "uploads"
    assert not (target / "uploads" / "fifo.gcode").exists() and not (target / "uploads" / "sudo-made.gcode").exists()
    assert {p.lstat().st_uid for p in [target, *target.rglob("*")]} == {NOBODY[0]}
    no_secret_in(target)
    assert (snapshot(other), snapshot(secret), snapshot(old_basedir)) == before
    assert any(s.startswith(f"{old_basedir}/uploads/fifo.gcode is not a file or folder") for s in copied.skipped)
    assert any(s.startswith(f"{old_basedir}/uploads/sudo-made.gcode is readable by its owner") for s in copied.skipped)
    assert f"{old_basedir}/uploads/secret.gcode -> {secret}" in copied.links
    # The dry run's survey says the same without copying.
    survey = bounded(lambda: import_copy.survey(old_basedir))
    assert (survey.files, survey.skipped, survey.links) == (copied.files, copied.skipped, copied.links)


def test_an_old_basedir_that_is_a_link_or_not_its_users_is_not_copied(
    farm: tuple[Layout, Path, Path], old_basedir: Path
) -> None:
    layout, _secret, other = farm
    linked = layout.path("home/pi/.linked")
    linked.symlink_to(other)
    with pytest.raises(OctobrixError, match="is a link or not a folder"):
        import_copy.copy_basedir(linked, layout.state_dir("shop") / "a", *NOBODY)
    with pytest.raises(OctobrixError, match="not to the user its old OctoPrint ran as"):
        import_copy.copy_basedir(old_basedir, layout.state_dir("shop") / "b", *NOBODY, owner=1234)
    assert not (layout.state_dir("shop") / "a").exists() and not (layout.state_dir("shop") / "b").exists()


def test_the_old_api_key_is_never_read_through_a_link(farm: tuple[Layout, Path, Path], old_basedir: Path) -> None:
    _layout, _secret, other = farm
    (other / "config.yaml").write_text("api:\n  key: OTHERS-KEY\n")
    keys = old_basedir / "data" / "appkeys" / "keys.yaml"
    keys.unlink()
    keys.symlink_to(other / "config.yaml")
    (old_basedir / "config.yaml").unlink()
    (old_basedir / "config.yaml").symlink_to(other / "config.yaml")
    assert import_move.old_api_key(old_basedir) is None
    (old_basedir / "config.yaml").unlink()
    os.mkfifo(old_basedir / "config.yaml")
    assert bounded(lambda: import_move.old_api_key(old_basedir)) is None
