"""apply under --root: atomic, idempotent, removes exactly what it generated, restarts only what changed."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest
import yaml

from octobrixd.apply.plan import apply_plan, make_plan
from octobrixd.config.model import parse_config
from octobrixd.errors import OctobrixError
from octobrixd.farm.manifest import read_manifest
from octobrixd.render.octoprint import FILE_CHECK_WIZARD_VERSION
from octobrixd.system.paths import Layout
from tests.conftest import Ctl

TWO_PRINTERS = """
[printers.printer1]
serial = "PRN0001"
port = 5001

[printers.printer2]
usb_port = "1-1.2"
port = 5002

[cameras.cam1]
serial = "CAM1"
port = 8081
"""


def apply_text(text: str, root: Path) -> None:
    layout = Layout(root)
    previous = read_manifest(layout)
    apply_plan(make_plan(parse_config(text, "/etc/octobrix.toml"), layout, previous), layout, previous)


def files_under(root: Path) -> dict[str, float]:
    return {
        str(p.relative_to(root)): p.stat().st_mtime_ns
        for p in root.rglob("*")
        if p.is_file() and p.name != "apply.lock"
    }


def test_second_apply_does_nothing_and_says_so(ctl: Ctl, tmp_path: Path, write_config: Callable[[str], Path]) -> None:
    config = write_config(TWO_PRINTERS)
    root = tmp_path / "root"
    first = ctl("apply", "--config", config, "--root", root)
    assert first.returncode == 0, first.stderr
    assert "wrote" in first.stdout
    before = files_under(root)
    second = ctl("apply", "--config", config, "--root", root)
    assert second.returncode == 0
    assert second.stdout.startswith("Nothing to do: the system already matches")
    assert files_under(root) == before, "an idempotent apply rewrites nothing"


def test_removed_printer_takes_only_its_generated_files(tmp_path: Path) -> None:
    root = tmp_path
    apply_text(TWO_PRINTERS, root)
    # Things octobrix did not write: a user's own drop-in and OctoPrint's data.
    own_dropin = root / "etc/systemd/system/octoprint@printer2.service.d/90-mine.conf"
    own_dropin.write_text("[Service]\nNice=1\n")
    upload = root / "var/lib/octobrix/printer2/basedir/uploads/benchy.gcode"
    upload.parent.mkdir(parents=True)
    upload.write_text("G28\n")
    printer1_files = {k: v for k, v in files_under(root).items() if "printer1" in k}

    apply_text(
        TWO_PRINTERS.split("[printers.printer2]", maxsplit=1)[0] + '[cameras.cam1]\nserial = "CAM1"\nport = 8081\n',
        root,
    )

    assert not (root / "etc/systemd/system/octoprint@printer2.service.d/50-octobrix.conf").exists()
    assert not (root / "var/lib/octobrix/printer2/octobrix-seed.yaml").exists()
    assert own_dropin.exists() and upload.exists(), "only files octobrix generated are removed"
    assert "printer2" not in (root / "etc/udev/rules.d/99-octobrix.rules").read_text()
    assert "octobrix-printer2" not in (root / "etc/sysusers.d/octobrix.conf").read_text()
    assert {k: v for k, v in files_under(root).items() if "printer1" in k} == printer1_files


def test_plan_restarts_only_what_changed(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    apply_text(TWO_PRINTERS, tmp_path)
    changed = (
        TWO_PRINTERS.replace("port = 5002", "port = 5012") + "\n[printers.printer3]\nvirtual = true\nport = 5003\n"
    )
    changed = changed.replace('[cameras.cam1]\nserial = "CAM1"\nport = 8081\n', "")
    plan = make_plan(parse_config(changed, "/etc/octobrix.toml"), layout, read_manifest(layout))
    assert plan.restart == ("octoprint@printer2.service",)
    assert plan.start == ("octoprint@printer3.service",)
    assert plan.stop == ("ustreamer@cam1.service",)
    assert plan.reload_units and plan.reload_udev and plan.create_users
    assert "systemctl try-restart octoprint@printer2.service" in plan.commands()


def test_a_port_change_does_not_reload_udev(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    apply_text(TWO_PRINTERS, tmp_path)
    plan = make_plan(
        parse_config(TWO_PRINTERS.replace("5001", "5011"), "/etc/octobrix.toml"),
        layout,
        read_manifest(layout),
    )
    assert plan.restart == ("octoprint@printer1.service",)
    assert not plan.reload_udev and not plan.create_users and plan.reload_units


def test_interrupted_apply_still_restarts_next_time(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    apply_text(TWO_PRINTERS, tmp_path)
    changed = parse_config(TWO_PRINTERS.replace("5001", "5011"), "/etc/octobrix.toml")
    plan = make_plan(changed, layout, read_manifest(layout))
    # Files written, then killed before the final manifest: the digest of the unit is still the old one.
    for change in plan.files:
        (tmp_path / change.path).write_text(change.new)
    replan = make_plan(changed, layout, read_manifest(layout))
    assert replan.files == ()
    assert replan.restart == ("octoprint@printer1.service",)


def test_users_octoprint_settings_survive_apply(tmp_path: Path) -> None:
    apply_text(TWO_PRINTERS, tmp_path)
    config_yaml = tmp_path / "var/lib/octobrix/printer1/basedir/config.yaml"
    settings = yaml.safe_load(config_yaml.read_text())
    settings["webcam"] = {"flipH": True}
    settings["serial"]["timeout"] = {"connection": 30}
    config_yaml.write_text(yaml.safe_dump(settings))

    apply_text(TWO_PRINTERS.replace("port = 5001", "port = 5011"), tmp_path)
    after = yaml.safe_load(config_yaml.read_text())
    assert after["webcam"]["flipH"] is True
    assert after["serial"]["timeout"] == {"connection": 30}
    assert after["server"]["port"] == 5011
    assert after["serial"]["port"] == "/dev/octobrix/printer1"


def test_the_name_is_seeded_once_then_the_one_set_in_octoprint_survives_applies(tmp_path: Path) -> None:
    # octobrix seeds appearance.name with the printer's name; after that it is the user's, set in
    # OctoPrint's settings (OctoPrint writes it to config.yaml): every apply used to write it back.
    apply_text(TWO_PRINTERS, tmp_path)
    config_yaml = tmp_path / "var/lib/octobrix/printer1/basedir/config.yaml"
    settings = yaml.safe_load(config_yaml.read_text())
    assert settings["appearance"] == {"name": "printer1"}, "a new instance is seeded with its name"
    settings["appearance"]["name"] = "Prusa MK4 by the window"
    config_yaml.write_text(yaml.safe_dump(settings))
    renamed = config_yaml.read_text()

    layout = Layout(tmp_path)
    again = make_plan(parse_config(TWO_PRINTERS, "/etc/octobrix.toml"), layout, read_manifest(layout))
    assert again.empty, "a name set in OctoPrint is not a change for apply to undo"
    apply_text(TWO_PRINTERS.replace("port = 5001", "port = 5011"), tmp_path)
    after = yaml.safe_load(config_yaml.read_text())
    assert after["appearance"]["name"] == "Prusa MK4 by the window", "an apply that rewrites config.yaml keeps it"
    assert after["server"]["port"] == 5011
    assert config_yaml.read_text() != renamed

    # A config.yaml without a name (OctoPrint leaves an emptied name out) gets the printer's again.
    del after["appearance"]
    config_yaml.write_text(yaml.safe_dump(after))
    apply_text(TWO_PRINTERS.replace("port = 5001", "port = 5011"), tmp_path)
    assert yaml.safe_load(config_yaml.read_text())["appearance"] == {"name": "printer1"}


def test_file_checks_wizard_is_seen_in_a_new_instance_and_octoprints_record_of_it_survives(tmp_path: Path) -> None:
    # OctoPrint's File Check plugin requires its wizard once the uploads folder holds a file it never
    # checked (a slicer's upload before the page was opened, an imported basedir); OctoPrint skips a
    # wizard whose version server.seenWizards records.
    apply_text(TWO_PRINTERS, tmp_path)
    config_yaml = tmp_path / "var/lib/octobrix/printer1/basedir/config.yaml"
    settings = yaml.safe_load(config_yaml.read_text())
    assert settings["server"]["seenWizards"] == {"file_check": FILE_CHECK_WIZARD_VERSION}
    assert settings["server"]["firstRun"] is False

    # Its user finishes a later File Check wizard (a new critical check) and another plugin's:
    # OctoPrint writes both, and no apply undoes them or takes them for a change.
    settings["server"]["seenWizards"] = {"file_check": FILE_CHECK_WIZARD_VERSION + 1, "backup": None}
    config_yaml.write_text(yaml.safe_dump(settings))
    layout = Layout(tmp_path)
    again = make_plan(parse_config(TWO_PRINTERS, "/etc/octobrix.toml"), layout, read_manifest(layout))
    assert again.empty, "a wizard finished in OctoPrint is not a change for apply to undo"
    apply_text(TWO_PRINTERS.replace("port = 5001", "port = 5011"), tmp_path)
    after = yaml.safe_load(config_yaml.read_text())
    assert after["server"]["port"] == 5011
    assert after["server"]["seenWizards"] == {"file_check": FILE_CHECK_WIZARD_VERSION + 1, "backup": None}

    # A basedir that never saw it (one made before octobrix seeded it, or imported) gets it.
    del after["server"]["seenWizards"]["file_check"]
    config_yaml.write_text(yaml.safe_dump(after))
    apply_text(TWO_PRINTERS.replace("port = 5001", "port = 5011"), tmp_path)
    seen = yaml.safe_load(config_yaml.read_text())["server"]["seenWizards"]
    assert seen == {"file_check": FILE_CHECK_WIZARD_VERSION, "backup": None}


def test_private_state_is_private(tmp_path: Path) -> None:
    apply_text(TWO_PRINTERS, tmp_path)
    state = tmp_path / "var/lib/octobrix/printer1"
    # Under --root no owners change: the modes are the layout's (the state directory root's, 0750).
    assert stat.S_IMODE(state.stat().st_mode) == 0o750
    assert stat.S_IMODE((state / "venvs").stat().st_mode) == 0o750
    assert stat.S_IMODE((state / "basedir").stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "home").stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "basedir/config.yaml").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "etc/udev/rules.d/99-octobrix.rules").stat().st_mode) == 0o644


def test_dry_run_shows_the_diff_and_commands_and_changes_nothing(
    ctl: Ctl, tmp_path: Path, write_config: Callable[[str], Path]
) -> None:
    root = tmp_path / "root"
    config = write_config(TWO_PRINTERS)
    assert ctl("apply", "--config", config, "--root", root).returncode == 0
    before = files_under(root)
    config.write_text(TWO_PRINTERS.replace('serial = "PRN0001"', 'serial = "PRN0009"'))
    result = ctl("apply", "--dry-run", "--config", config, "--root", root)
    assert result.returncode == 0, result.stderr
    assert "--- /etc/udev/rules.d/99-octobrix.rules" in result.stdout
    assert '-SUBSYSTEM=="tty"' in result.stdout and 'ATTRS{serial}=="PRN0009"' in result.stdout
    assert "udevadm control --reload" in result.stdout
    assert files_under(root) == before


def test_no_temp_files_are_left_behind(tmp_path: Path) -> None:
    apply_text(TWO_PRINTERS, tmp_path)
    assert not list(tmp_path.rglob("*.tmp"))


def test_manifest_lists_exactly_the_generated_files(tmp_path: Path) -> None:
    apply_text(TWO_PRINTERS, tmp_path)
    manifest = read_manifest(Layout(tmp_path))
    for rel in manifest.files:
        assert (tmp_path / PurePosixPath(rel)).is_file()
    assert "var/lib/octobrix/printer1/basedir/config.yaml" not in manifest.files, "config.yaml is OctoPrint's"


def test_a_printing_instance_is_not_restarted_until_its_print_ends(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    apply_text(TWO_PRINTERS, tmp_path)
    changed = parse_config(TWO_PRINTERS.replace("5001", "5011").replace("5002", "5012"), "/etc/octobrix.toml")
    previous = read_manifest(layout)
    plan = make_plan(changed, layout, previous)
    assert plan.restart == ("octoprint@printer1.service", "octoprint@printer2.service")

    result = apply_plan(plan, layout, previous, busy=lambda name: name == "printer1")
    assert result.deferred == ("octoprint@printer1.service",)
    assert read_manifest(layout).deferred == ("octoprint@printer1.service",)
    # Still pending: the next apply (octobrixd retries) restarts it once the print is over.
    again = make_plan(changed, layout, read_manifest(layout))
    assert again.files == () and again.restart == ("octoprint@printer1.service",)
    done = apply_plan(again, layout, read_manifest(layout), busy=lambda _name: False)
    assert done.deferred == ()
    assert make_plan(changed, layout, read_manifest(layout)).empty


def test_force_restarts_a_printing_instance(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    apply_text(TWO_PRINTERS, tmp_path)
    changed = parse_config(TWO_PRINTERS.replace("5001", "5011"), "/etc/octobrix.toml")
    previous = read_manifest(layout)
    result = apply_plan(make_plan(changed, layout, previous), layout, previous, force=True, busy=lambda _n: True)
    assert result.deferred == ()
    assert make_plan(changed, layout, read_manifest(layout)).empty


def test_removing_a_printing_printer_holds_its_stop(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    apply_text(TWO_PRINTERS, tmp_path)
    without = parse_config(TWO_PRINTERS.split("[printers.printer2]", maxsplit=1)[0], "/etc/octobrix.toml")
    previous = read_manifest(layout)
    plan = make_plan(without, layout, previous)
    assert "octoprint@printer2.service" in plan.stop
    result = apply_plan(plan, layout, previous, busy=lambda name: name == "printer2")
    assert result.deferred == ("octoprint@printer2.service",)
    assert make_plan(without, layout, read_manifest(layout)).stop == ("octoprint@printer2.service",)


def test_a_failed_instance_is_not_nothing_to_do(tmp_path: Path) -> None:
    """A printer whose unit systemd has as failed is started again by apply (the CLI passes the failed
    units; octobrixd passes none and starts them itself, with a back-off)."""
    apply_text(TWO_PRINTERS, tmp_path)
    layout = Layout(tmp_path)
    config = parse_config(TWO_PRINTERS, "/etc/octobrix.toml")
    assert make_plan(config, layout, read_manifest(layout)).empty
    failed = ["octoprint@printer2.service", "octoprint@gone.service", "ustreamer@cam1.service"]
    plan = make_plan(config, layout, read_manifest(layout), failed=failed)
    assert not plan.empty
    assert plan.recover == ("octoprint@printer2.service",), "only printers the config runs"
    assert plan.commands()[-2:] == [
        "systemctl reset-failed octoprint@printer2.service",
        "systemctl start octoprint@printer2.service",
    ]


def test_a_broken_config_yaml_is_kept_and_the_hint_never_says_delete_it(tmp_path: Path) -> None:
    apply_text(TWO_PRINTERS, tmp_path)
    config_yaml = tmp_path / "var/lib/octobrix/printer1/basedir/config.yaml"
    broken = config_yaml.read_text() + "webcam: [unclosed\n"
    config_yaml.write_text(broken)

    with pytest.raises(OctobrixError) as caught:
        apply_text(TWO_PRINTERS.replace("port = 5001", "port = 5011"), tmp_path)
    said = f"{caught.value} {caught.value.hint}"
    assert "is not valid YAML" in said and "octobrixctl restore printer1" in said
    assert "remove" not in said and "delete" not in said, said
    assert config_yaml.read_text() == broken, "the user's settings file was changed"
