"""Backups without a system: the schedule keys and the timer's drop-in, retention, the version check
of a restore, OctoPrint zips read as its restore reads them, and the commands' answers to bad input.
The real backups and restores (OctoPrint's CLI, systemd) are in tests/lab/test_backups.py."""

from __future__ import annotations

import datetime
import io
import json
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from octobrixd.backups import archive, bundle
from octobrixd.backups.engine import check_restorable
from octobrixd.config.model import parse_config
from octobrixd.errors import ConfigError, OctobrixError
from octobrixd.farm import backup_state as state
from octobrixd.render import backup_timer
from octobrixd.render.tree import render_all
from octobrixd.system.paths import Layout
from tests.conftest import Ctl

SRC = "/etc/octobrix.toml"
FARM = '[printers.shop]\nvirtual = true\nport = 5600\nplugins = ["OctoPrint-PSUControl==1.0.6"]\n'
DROPIN = "etc/systemd/system/octobrix-backup.timer.d/50-octobrix.conf"


def test_the_timer_runs_daily_by_default_with_seven_kept() -> None:
    config = parse_config(FARM, SRC)
    assert (config.octobrix.backup_schedule, config.octobrix.backup_keep) == ("daily", 7)
    dropin = render_all(config)[backup_timer.DROPIN].text
    assert dropin.endswith("[Timer]\nOnCalendar=\nOnCalendar=daily\n")


def test_the_schedule_is_the_configured_calendar_time_or_no_timer_at_all() -> None:
    timed = parse_config('[octobrix]\nbackup_schedule = "Sun *-*-* 03:30"\n' + FARM, SRC)
    assert render_all(timed)[backup_timer.DROPIN].text.endswith("OnCalendar=Sun *-*-* 03:30\n")
    off = parse_config('[octobrix]\nbackup_schedule = "off"\n' + FARM, SRC)
    assert DROPIN not in {str(p) for p in render_all(off)}
    # Nothing to back up: no timer either.
    assert DROPIN not in {str(p) for p in render_all(parse_config("", SRC))}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('backup_schedule = "daily\\nExecStart=/bin/sh"', "backup_schedule: 'daily\\nExecStart=/bin/sh' is not"),
        ('backup_schedule = ""', "octobrix.backup_schedule: '' is not a systemd calendar time"),
        ("backup_keep = 0", "octobrix.backup_keep: 0 is out of range"),
        ('backup_keep = "7"', "octobrix.backup_keep: '7' should be a whole number"),
    ],
)
def test_bad_backup_keys_name_their_key_path(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"[octobrix]\n{text}\n", SRC)
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def _touch_backups(folder: Path, name: str, stamps: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for stamp in stamps:
        path = folder / f"{name}-{stamp}.zip"
        path.write_bytes(b"")
        made.append(path)
    return made


def test_retention_keeps_the_newest_n_of_that_printer_only(tmp_path: Path) -> None:
    made = _touch_backups(tmp_path, "shop", ["20261201-030000", "20261129-030000", "20261130-030000"])
    _touch_backups(tmp_path, "shop-2", ["20261101-030000"])  # another printer's name starts the same
    (tmp_path / "shop-notes.txt").write_text("mine")
    found = archive.backups_of(tmp_path, "shop")
    assert [p.name for p in found] == sorted(p.name for p in made)
    assert archive.to_prune(found, 2) == [tmp_path / "shop-20261129-030000.zip"]
    assert archive.to_prune(found, 7) == []


@pytest.mark.parametrize(
    ("older", "newer"),
    [("1.11.7", "1.11.8"), ("1.11.8", "1.12.0"), ("1.11.8rc1", "1.11.8"), ("1.9.3", "1.10.0"), ("1.11", "1.11.1")],
)
def test_versions_compare_as_octoprint_releases(older: str, newer: str) -> None:
    assert archive.version_key(older) < archive.version_key(newer)


def make_zip(path: Path, version: str, *, users: bool = True, plugins: list[str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as out:
        out.writestr("metadata.json", json.dumps({"version": version, "excludes": ["timelapse"]}))
        out.writestr("basedir/config.yaml", "appearance:\n  color: red\n")
        if users:
            out.writestr("basedir/users.yaml", "admin: {}\n")
        if plugins is not None:
            out.writestr("plugin_list.json", json.dumps([{"key": key, "name": key} for key in plugins]))
    return path


def fake_venv(layout: Layout, name: str, version: str) -> None:
    # The venv is reached through root's venv link (venvs/DIR), as octobrix makes it.
    site = layout.state_dir(name) / "venvs" / "v1" / "lib" / "python3.11" / "site-packages"
    (site / f"octoprint-{version}.dist-info").mkdir(parents=True)
    (layout.state_dir(name) / "venv").symlink_to("venvs/v1")


def test_a_backup_from_a_newer_octoprint_is_refused_with_the_pin_to_set(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    fake_venv(layout, "shop", "1.10.3")
    facts = archive.read_zip(make_zip(tmp_path / "b.zip", "1.11.8"))
    with pytest.raises(OctobrixError) as caught:
        check_restorable(layout, "shop", facts)
    assert "from OctoPrint 1.11.8, newer than the 1.10.3 printer shop runs" in caught.value.message
    assert caught.value.hint is not None
    assert caught.value.hint.startswith('set octoprint = "octoprint==1.11.8" in [printers.shop]')
    # The same or an older OctoPrint's backup is fine.
    assert check_restorable(layout, "shop", archive.read_zip(make_zip(tmp_path / "c.zip", "1.10.3"))) == "1.10.3"


def test_zips_are_read_as_octoprints_restore_reads_them(tmp_path: Path) -> None:
    facts = archive.read_zip(make_zip(tmp_path / "b.zip", "1.11.8", plugins=["psucontrol", "bedlevelvisualizer"]))
    assert facts == archive.ZipFacts("1.11.8", ("timelapse",), ("bedlevelvisualizer", "psucontrol"), True)
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(OctobrixError, match="is not a readable zip"):
        archive.read_zip(tmp_path / "junk.zip")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as out:
        out.writestr("hello.txt", "hi")
    with pytest.raises(OctobrixError, match="is not an OctoPrint backup"):
        archive.read_zip(tmp_path / "other.zip")
    with pytest.raises(OctobrixError, match="no such file"):
        archive.read_zip(tmp_path / "missing.zip")


def test_the_side_file_carries_the_entry_plugins_and_version_but_no_key(tmp_path: Path) -> None:
    config = parse_config(FARM, SRC)
    facts = archive.read_zip(make_zip(tmp_path / "b.zip", "1.11.8", plugins=["psucontrol"]))
    when = datetime.datetime(2026, 12, 1, 3, 30, tzinfo=datetime.UTC)
    body = json.loads(archive.side_file(config, "shop", facts, when, archive.key_fingerprint("SECRETKEY")))
    entry = {"virtual": True, "port": 5600, "plugins": ["OctoPrint-PSUControl==1.0.6"]}
    assert body["config"] == {"printers.shop": entry}
    assert body["octoprint"] == "1.11.8" and body["plugins"]["installed"] == ["psucontrol"]
    assert "SECRETKEY" not in json.dumps(body)
    assert archive.zip_name("shop", when) == "shop-20261201-033000.zip"


def test_failed_backups_show_until_the_next_one_succeeds(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    config = parse_config(FARM, SRC)
    state.record(layout, [state.LastBackup("shop", "2026-12-01T03:30:00+00:00", False, error="disk full")])
    assert state.status_lines(layout, config, []) == [
        "backup of shop failed at 2026-12-01T03:30:00+00:00: disk full (`sudo octobrixctl backup shop` retries)"
    ]
    [found] = state.health(layout, config)
    ok, detail, fix = found.ok, found.detail, found.fix
    assert not ok and "shop: the backup of 2026-12-01T03:30:00+00:00 failed: disk full" in detail and fix
    state.record(layout, [state.LastBackup("shop", "2026-12-02T03:30:00+00:00", True, file="/x.zip")])
    assert state.status_lines(layout, config, []) == []
    assert state.health(layout, config)[0].ok is True


@pytest.mark.parametrize("text", ["{not json", '{"printers": []}', '{"printers": {"shop": {"when": 3}}}'])
def test_an_unreadable_backup_record_is_said_and_kept_not_read_as_no_backups(tmp_path: Path, text: str) -> None:
    layout = Layout(tmp_path)
    config = parse_config(FARM, SRC)
    record = layout.path(state.STATE_FILE)
    record.parent.mkdir(parents=True)
    record.write_text(text)
    [line] = state.status_lines(layout, config, [])
    assert f"the record of the last backups, {record}, cannot be read" in line
    [found] = state.health(layout, config)
    ok, detail, fix = found.ok, found.detail, found.fix
    assert not ok and detail.startswith(f"the record of the last backups, {record}, cannot be read")
    assert fix is not None and f"{record}.unreadable" in fix
    # The next backup starts a new record and keeps the old file as it was, beside it.
    state.record(layout, [state.LastBackup("shop", "2026-12-02T03:30:00+00:00", True, file="/x.zip")])
    assert Path(f"{record}.unreadable").read_text() == text
    assert set(state.read_state(layout)) == {"shop"}
    assert state.health(layout, config)[0].ok is True


def test_no_record_yet_is_no_backups_yet(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert state.read_state(layout) == {}
    assert state.status_lines(layout, parse_config(FARM, SRC), []) == []


def test_backup_and_restore_of_an_unknown_printer_say_which_exist(
    ctl: Ctl, write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    config = write_config(FARM)
    for args in (("backup", "nosuch"), ("restore", "nosuch", str(tmp_path / "b.zip"))):
        result = ctl(*args, "--config", config)
        assert result.returncode == 1
        first, hint = result.stderr.splitlines()
        assert first == f"octobrixctl: no printer named nosuch in {config} (printers: shop)", result.stderr
        assert hint.startswith("hint: ")


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_bundle_is_checked_before_anything_changes(tmp_path: Path) -> None:
    config_path = tmp_path / "octobrix.toml"
    (tmp_path / "junk").write_bytes(b"this is not a tar file at all\n" * 100)
    with pytest.raises(OctobrixError, match="is not an octobrix bundle"):
        bundle.read_bundle(tmp_path / "junk", config_path)
    with pytest.raises(OctobrixError, match=r"has no octobrix-bundle\.json"):
        bundle.read_bundle(_tar(tmp_path / "a.tar", {"octobrix.toml": FARM.encode()}), config_path)
    manifest = json.dumps({"version": 1, "printers": ["shop"], "created": "then"}).encode()
    bad = _tar(tmp_path / "b.tar", {"octobrix-bundle.json": manifest, "octobrix.toml": b"[printers.shop]\nport = 1\n"})
    with pytest.raises(ConfigError):
        bundle.read_bundle(bad, config_path)
    good = _tar(tmp_path / "c.tar", {"octobrix-bundle.json": manifest, "octobrix.toml": FARM.encode()})
    assert bundle.read_bundle(good, config_path) == bundle.Bundle(FARM, ("shop",), "then")


def test_two_backups_in_one_second_get_two_names_in_the_order_made(tmp_path: Path) -> None:
    when = datetime.datetime(2026, 12, 1, 3, 30, 0, tzinfo=datetime.UTC)
    first = archive.free_zip_name(tmp_path, "shop", when)
    (tmp_path / first).write_bytes(b"")
    second = archive.free_zip_name(tmp_path, "shop", when)
    (tmp_path / second).write_bytes(b"")
    (tmp_path / "shop-20261201-033001.zip").write_bytes(b"")
    assert (first, second) == ("shop-20261201-033000.zip", "shop-20261201-033000-2.zip")
    # A side file alone (its zip pruned by hand) also keeps its name taken.
    archive.side_path(tmp_path / "shop-20261201-033000-3.zip").write_text("{}")
    assert archive.free_zip_name(tmp_path, "shop", when) == "shop-20261201-033000-4.zip"
    found = [p.name for p in archive.backups_of(tmp_path, "shop")]
    assert found == ["shop-20261201-033000.zip", "shop-20261201-033000-2.zip", "shop-20261201-033001.zip"]
    assert archive.to_prune(archive.backups_of(tmp_path, "shop"), 1) == [tmp_path / first, tmp_path / second]
