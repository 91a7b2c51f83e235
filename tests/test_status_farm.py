"""status always shows the farm: from the last config that applied while the config has mistakes, and
without root what it can, saying what sudo adds. (systemd's answer is a recorded one here; the lab
test tests/lab/test_status_lab.py runs the same with real systemd and OctoPrint.)"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from octobrixd.cli import main as cli
from octobrixd.cli import status
from octobrixd.config import applied
from octobrixd.config.applied import applied_path, last_applied, remember_applied
from octobrixd.config.model import load_config
from octobrixd.errors import ConfigError, OctobrixError
from octobrixd.farm.manifest import read_manifest
from octobrixd.farm.status import PrinterStateFetcher
from octobrixd.instances import credentials as instances
from octobrixd.instances.credentials import CredentialsNeedRootError, read_credentials
from octobrixd.instances.seeding import load_or_create_credentials
from octobrixd.system import paths
from octobrixd.system.paths import Layout
from octobrixd.system.systemd import UnitProperties
from tests.conftest import Ctl
from tests.factories import systemd_says

GOOD = (
    "[printers.demo]\nvirtual = true\nport = 5000\n"
    '[printers.prusa]\nserial = "PRN0001"\nport = 5001\ncamera = "cam1"\n'
    '[cameras.cam1]\nserial = "CAM1"\nport = 8081\n'
)
# A typo in a new printer: the whole file is refused, the farm keeps running on GOOD.
BROKEN = GOOD + '[printers.ender]\nserial = "E3"\nport = 5002\nbaudrat = 115200\n'


def said_running(units: Sequence[str]) -> dict[str, dict[str, str]]:
    """What `systemctl show` prints for units that run."""
    return {
        unit: {"Id": unit, "LoadState": "loaded", "ActiveState": "active", "SubState": "running", "MainPID": "0"}
        for unit in units
    }


def running(units: Sequence[str]) -> dict[str, UnitProperties]:
    return systemd_says(said_running(units))


def args(config: Path, *, as_json: bool = False, wait: float = 0.0) -> argparse.Namespace:
    return argparse.Namespace(config=config, json=as_json, wait=wait, names=[])


@pytest.fixture
def farm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Layout, Path]:
    """A farm that applied GOOD; the OctoPrints answer "Operational" when asked with a login."""
    layout = Layout(tmp_path / "root")
    config_path = tmp_path / "octobrix.toml"
    config_path.write_text(GOOD, encoding="utf-8")
    assert remember_applied(layout, load_config(config_path))
    monkeypatch.setattr(status, "query_units", running)

    def fetcher(api_key: str | None) -> PrinterStateFetcher:
        return lambda _name, _port: ("Operational", None) if api_key else (None, None)

    monkeypatch.setattr(status, "fetch_printer_state", fetcher)
    for name in ("demo", "prusa"):
        load_or_create_credentials(layout, name)
    return layout, config_path


def test_the_applied_copy_keeps_the_config_text_and_its_permission_bits(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root")
    config_path = tmp_path / "octobrix.toml"
    config_path.write_text(GOOD, encoding="utf-8")
    config_path.chmod(0o640)
    assert remember_applied(layout, load_config(config_path))
    assert applied_path(layout).stat().st_mode & 0o777 == 0o640
    applied = last_applied(layout, config_path)
    assert applied is not None and applied.config == load_config(config_path)
    # Another config file's status never takes the farm's copy for its own.
    assert last_applied(layout, tmp_path / "other.toml") is None


def test_an_edit_made_while_applying_is_not_kept_as_the_applied_config(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root")
    config_path = tmp_path / "octobrix.toml"
    config_path.write_text(GOOD, encoding="utf-8")
    applied = load_config(config_path)
    assert remember_applied(layout, applied)
    config_path.write_text(BROKEN, encoding="utf-8")
    assert not remember_applied(layout, applied)
    config_path.write_text(GOOD.replace("5000", "5010"), encoding="utf-8")
    assert not remember_applied(layout, applied)
    kept = last_applied(layout, config_path)
    assert kept is not None and kept.config.printers["demo"].port == 5000


def test_apply_keeps_a_copy_of_the_config_that_applied(ctl: Ctl, tmp_path: Path) -> None:
    root, config_path = tmp_path / "root", tmp_path / "octobrix.toml"
    config_path.write_text(GOOD, encoding="utf-8")
    assert ctl("apply", "--config", config_path, "--root", root).returncode == 0
    config_path.write_text(BROKEN, encoding="utf-8")
    assert ctl("apply", "--config", config_path, "--root", root).returncode == 1
    kept = last_applied(Layout(root), config_path)
    assert kept is not None and sorted(kept.config.printers) == ["demo", "prusa"]


def test_a_broken_config_still_lists_the_running_farm_with_the_error(
    farm: tuple[Layout, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    layout, config_path = farm
    config_path.write_text(BROKEN, encoding="utf-8")
    assert status.main(args(config_path, as_json=True), layout) == status.EXIT_CONFIG_ERRORS
    body = json.loads(capsys.readouterr().out)
    assert body["version"] == 1
    assert [p["name"] for p in body["printers"]] == ["demo", "prusa"]
    assert [p["printer_state"] for p in body["printers"]] == ["Operational", "Operational"]
    assert [c["name"] for c in body["cameras"]] == ["cam1"]
    assert len(body["errors"]) == 1 and "printers.ender.baudrat: unknown key" in body["errors"][0]
    assert body["notes"] == []

    assert status.main(args(config_path), layout) == status.EXIT_CONFIG_ERRORS
    lines = capsys.readouterr().out.splitlines()
    assert "printers.ender.baudrat: unknown key" in lines[0]
    assert lines[1].startswith("hint: ") and "the last config that applied" in lines[1]
    assert lines[2].split()[0] == "PRINTER"
    assert [line.split()[0] for line in lines[3:5]] == ["demo", "prusa"]


def test_a_valid_config_has_no_errors_and_exit_0(farm: tuple[Layout, Path], capsys: pytest.CaptureFixture[str]) -> None:
    layout, config_path = farm
    assert status.main(args(config_path, as_json=True), layout) == 0
    body = json.loads(capsys.readouterr().out)
    assert (body["errors"], body["notes"]) == ([], [])
    assert sorted(body) == ["backup_failures", "cameras", "errors", "notes", "printers", "version"]


def test_a_broken_config_with_nothing_applied_yet_still_answers_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(status, "query_units", running)
    config_path = tmp_path / "octobrix.toml"
    config_path.write_text(BROKEN, encoding="utf-8")
    with pytest.raises(ConfigError):
        status.main(args(config_path, as_json=True), Layout(tmp_path / "root"))
    body = json.loads(capsys.readouterr().out)
    assert (body["printers"], body["notes"]) == ([], ["no config has applied yet"])
    assert "baudrat" in body["errors"][0]


def deny_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a user who is not root meets: the secrets are root-only. (The tests run as root, who
    reads anything; the lab test runs the real thing as an unprivileged user.)"""
    real_read_text: Callable[..., str] = Path.read_text

    def read_text(self: Path, *a: object, **kw: object) -> str:
        if ".secrets" in self.parts:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *a, **kw)

    monkeypatch.setattr(Path, "read_text", read_text)


def test_without_root_status_shows_the_units_and_says_what_sudo_adds(
    farm: tuple[Layout, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    layout, config_path = farm
    deny_secrets(monkeypatch)
    # --wait does not wait for states it cannot ask for.
    assert status.main(args(config_path, wait=30), layout) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:3] == ["demo", "active", "(running)"]
    notes = [line for line in lines if line.startswith("note: ")]
    assert len(notes) == 1 and "`sudo octobrixctl status` adds them" in notes[0]
    assert status.main(args(config_path, as_json=True), layout) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["notes"] == [status.NEEDS_ROOT_NOTE]
    assert [p["state"] for p in body["printers"]] == ["active", "active"]


def test_a_permission_error_on_the_credentials_never_suggests_removing_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = Layout(tmp_path)
    load_or_create_credentials(layout, "demo")
    deny_secrets(monkeypatch)
    with pytest.raises(CredentialsNeedRootError) as caught:
        read_credentials(layout, "demo")
    assert "root" in str(caught.value) and "remove" not in f"{caught.value} {caught.value.hint}"


@pytest.mark.parametrize("damage", ["{not json", '{"username": "admin"}', "[1, 2]"])
def test_damaged_credentials_get_a_hint_that_keeps_them(tmp_path: Path, damage: str) -> None:
    layout = Layout(tmp_path)
    load_or_create_credentials(layout, "demo")
    secret = layout.path(instances.credentials_path("demo"))
    secret.write_text(damage, encoding="utf-8")
    with pytest.raises(OctobrixError) as caught:
        read_credentials(layout, "demo")
    assert "damaged" in str(caught.value)
    hint = caught.value.hint or ""
    assert "backup" in hint and "mv " in hint and "remove" not in hint and "rm " not in hint


def test_credentials_without_root_says_it_needs_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = tmp_path / "octobrix.toml"
    config_path.write_text(GOOD, encoding="utf-8")
    deny_secrets(monkeypatch)
    assert cli.main(["credentials", "--config", str(config_path)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith("octobrixctl: credentials needs root")
    assert "hint: sudo octobrixctl credentials" in err and "remove" not in err


def test_a_copy_half_written_by_a_killed_apply_is_cleaned_up_by_the_next(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root")
    config_path = tmp_path / "octobrix.toml"
    config_path.write_text(GOOD, encoding="utf-8")
    copy = applied_path(layout)
    copy.parent.mkdir(parents=True)
    stray = copy.parent / f".{copy.name}.abcd1234.tmp"
    stray.write_text("half", encoding="utf-8")
    assert remember_applied(layout, load_config(config_path))
    assert not stray.exists() and last_applied(layout, config_path) is not None


def test_a_copy_that_cannot_be_updated_is_removed_rather_than_left_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = Layout(tmp_path / "root")
    config_path = tmp_path / "octobrix.toml"
    config_path.write_text(GOOD, encoding="utf-8")
    assert remember_applied(layout, load_config(config_path))
    config_path.write_text(GOOD.replace("5000", "5010"), encoding="utf-8")

    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(applied, "write_atomic", full)
    assert not remember_applied(layout, load_config(config_path))
    assert last_applied(layout, config_path) is None, "never the farm of a config that no longer runs"


def test_an_unreadable_manifest_asks_for_root_not_for_removing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = Layout(tmp_path)
    manifest = layout.path(paths.MANIFEST)
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}", encoding="utf-8")
    real_read_text: Callable[..., str] = Path.read_text

    def read_text(self: Path, *a: object, **kw: object) -> str:
        if self == manifest:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *a, **kw)

    monkeypatch.setattr(Path, "read_text", read_text)
    with pytest.raises(OctobrixError) as caught:
        read_manifest(layout)
    assert caught.value.hint == "run it as root (sudo)"
