"""`octobrixctl import`: reading octoprint_deploy's, KIAUH's and a plain OctoPrint's files (odd and
hostile ones too), the plan a dry run shows, and a whole import under --root (no systemd: the files
it writes and copies). The real thing, with real OctoPrints and systemd: tests/lab/test_import.py."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from octobrixd.apply.plan import make_plan
from octobrixd.cli.main import main
from octobrixd.config.model import load_config
from octobrixd.farm.manifest import read_manifest
from octobrixd.importers import kiauh, octoprint_deploy, plain
from octobrixd.importers.octoprint_deploy import parse_list, parse_rules
from octobrixd.importers.plan import ImportPlan, make_import_plan, octobrix_name
from octobrixd.instances.venv_contents import read_venv
from octobrixd.instances.venv_spec import VenvSpec
from octobrixd.instances.venvs import provision
from octobrixd.system.paths import Layout
from tests import import_trees as trees

TWO = {"ender": (5650, "serial:PRN0001"), "prusa": (5651, "usb:1-1.2")}


def plan_of(root: Path, reader: ModuleType, config_text: str = "[frontdoor]\nport = 8650\n") -> ImportPlan:
    layout = Layout(root)
    return make_import_plan(reader.discover(layout), load_config(trees.config(root, config_text)), layout)


def test_instances_file_odd_lines_are_notes_with_file_line_and_hint() -> None:
    text = (
        "instance:ender port:5000 udev:true\n"
        "instance:../etc port:5001 udev:false\n"
        "instance:a/b port:5002 udev:false\n"
        "port:5003 udev:true\n"
        "instance:ender port:5004 udev:true\n"
        "instance:noport udev:false\n"
        "\n# a comment\n"
    )
    listed, notes = parse_list(text, "instance", "/etc/octoprint_instances")
    assert [(entry.name, entry.port, entry.udev) for entry in listed] == [
        ("ender", 5000, True),
        ("noport", None, False),
    ]
    assert notes[0].startswith("/etc/octoprint_instances:2: instance name '../etc' cannot be a file name, left out")
    assert notes[1].startswith("/etc/octoprint_instances:3: instance name 'a/b' cannot be a file name")
    assert "/etc/octoprint_instances:4: no instance:NAME" in notes[2] and "hint:" in notes[2]
    assert notes[3] == "/etc/octoprint_instances:5: instance ender is listed twice; the first line counts"
    assert notes[4].startswith("/etc/octoprint_instances:6: instance noport has no port:N")


def test_rules_by_serial_by_port_and_a_quote_inside_a_serial() -> None:
    text = (
        'SUBSYSTEM=="tty", ATTRS{serial}=="PRN0001", SYMLINK+="octo_ender"\n'
        'KERNELS=="1-1.2",SUBSYSTEM=="tty",SYMLINK+="octo_prusa"\n'
        'SUBSYSTEM=="tty", ATTRS{serial}=="AB"C", SYMLINK+="octo_quoted"\n'
        'SUBSYSTEM=="tty", ATTRS{idVendor}=="1a86", SYMLINK+="octo_vendor"\n'
    )
    rules = parse_rules(text, "/etc/udev/rules.d/99-octoprint.rules")
    assert rules["octo_ender"].serial == "PRN0001" and rules["octo_prusa"].usb_port == "1-1.2"
    assert rules["octo_quoted"].problem is not None
    assert rules["octo_quoted"].problem.startswith("/etc/udev/rules.d/99-octoprint.rules:3: its rule cannot be read")
    assert rules["octo_vendor"].problem == (
        "/etc/udev/rules.d/99-octoprint.rules:4: its rule matches neither ATTRS{serial} nor KERNELS"
    )


@pytest.mark.parametrize(
    ("old", "taken", "expected"),
    [
        ("ender", (), "ender"),
        ("My_Printer", (), "my-printer"),
        ("ender", ("ender",), "ender-2"),
        ("ender", ("ender", "ender-2"), "ender-3"),
        ("__", (), "printer"),
        ("a" * 40, (), "a" * 23),
        ("api", (), "api-2"),
    ],
)
def test_octobrix_names_for_old_names(old: str, taken: tuple[str, ...], expected: str) -> None:
    assert octobrix_name(old, taken, reserved={"api"}) == expected


def test_octoprint_deploy_plan_keeps_names_ports_devices_and_pins(tmp_path: Path) -> None:
    trees.octoprint_deploy_farm(
        tmp_path,
        TWO,
        cameras={"ender": (5652, "serial:CAM1")},
        version="1.10.3",
        plugins={"OctoPrint-Dashboard": "1.19.0"},
    )
    plan = plan_of(tmp_path, octoprint_deploy)
    ender, prusa = plan.printers
    assert (ender.name, dict(ender.entry)) == (
        "ender",
        {"serial": "PRN0001", "port": 5650, "octoprint": "octoprint==1.10.3", "camera": "cam-ender"},
    )
    assert (prusa.name, dict(prusa.entry)) == (
        "prusa",
        {"usb_port": "1-1.2", "port": 5651, "octoprint": "octoprint==1.10.3"},
    )
    assert ender.old.basedir == tmp_path / "home/pi/.ender" and ender.old.unit == "ender.service"
    assert ender.plugins == ("OctoPrint-Dashboard 1.19.0",)
    # config.yaml, users.yaml, keys.yaml, an upload, a timelapse: not the log nor the old backup.
    assert ender.size.files == 5
    (camera,) = plan.cameras
    assert (camera.name, dict(camera.entry)) == (
        "cam-ender",
        {"serial": "CAM1", "port": 5652, "resolution": "1280x720", "fps": 15},
    )
    assert "octoprint_deploy's camera cam_ender becomes camera cam-ender (octobrix names are lowercase" in " ".join(
        plan.messages
    )


def test_taken_names_and_ports_are_renamed_and_moved_with_a_message(tmp_path: Path) -> None:
    trees.octoprint_deploy_farm(tmp_path, {"ender": (5000, "serial:PRN0001"), "Big_One": (5001, "serial:PRN0002")})
    plan = plan_of(
        tmp_path, octoprint_deploy, "[frontdoor]\nport = 8650\n[printers.ender]\nvirtual = true\nport = 5000\n"
    )
    assert [(m.name, m.entry["port"]) for m in plan.printers] == [("ender-2", 5001), ("big-one", 5002)]
    messages = plan.messages
    assert (
        "octoprint_deploy's ender becomes printer ender-2 (that name is taken in the config or by the front door)"
        in messages
    )
    assert "printer ender-2: port 5000 is taken in the config, it gets 5001" in messages
    assert "printer big-one: port 5001 is taken in the config, it gets 5002" in messages


def test_a_printer_without_a_usable_rule_comes_over_virtual_with_what_to_set(tmp_path: Path) -> None:
    trees.octoprint_deploy_farm(tmp_path, {"quoted": (5650, 'serial:AB"C'), "norule": (5651, "")})
    plan = plan_of(tmp_path, octoprint_deploy)
    assert [dict(m.entry) for m in plan.printers] == [
        {"virtual": True, "port": 5650},
        {"virtual": True, "port": 5651},
    ]
    quoted, norule = (m for m in plan.messages if m.startswith("printer "))
    assert quoted.startswith("printer quoted: /etc/udev/rules.d/99-octoprint.rules:1: its rule cannot be read")
    assert "hint: set serial or usb_port in [printers.quoted] instead of virtual" in quoted
    assert norule.startswith("printer norule: no udev rule for it in /etc/udev/rules.d/99-octoprint.rules")


def test_missing_files_are_said_and_what_can_be_read_still_comes(tmp_path: Path) -> None:
    trees.octoprint_deploy_farm(tmp_path, TWO)
    (tmp_path / "etc/octoprint_deploy").unlink()
    (tmp_path / "etc/systemd/system/prusa.service").unlink()
    (tmp_path / "home/pi/OctoPrint/lib").rename(tmp_path / "home/pi/OctoPrint/lib.gone")
    plan = plan_of(tmp_path, octoprint_deploy)
    assert [m.name for m in plan.printers] == ["ender"]
    messages = "\n".join(plan.messages)
    assert "/etc/octoprint_deploy is missing or empty" in messages
    assert "prusa: no unit /etc/systemd/system/prusa.service; nothing of it to stop" in messages
    assert "prusa: neither its unit nor /etc/octoprint_deploy names its user, so its basedir is unknown" in messages
    assert "printer ender: no OctoPrint found in" in messages


def test_no_old_tool_at_all_says_so_with_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = trees.config(tmp_path)
    assert main(["import", "--root", str(tmp_path), "--config", str(config), "--dry-run"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "octobrixctl: found no octoprint_deploy farm, KIAUH OctoPrint or ~/.octoprint on this computer",
        "hint: name the tool with --from if its files are there",
    ]


def test_kiauh_instances_are_planned_from_their_units_and_bound_to_nothing(tmp_path: Path) -> None:
    # The bash KIAUH (2022-2025): octoprint-SUFFIX.service, one venv copy per instance in ~/OctoPrint_SUFFIX/venv.
    trees.kiauh_farm(tmp_path, {"ender": 5660, "voron": 5661})
    plan = plan_of(tmp_path, kiauh)
    assert [(m.name, dict(m.entry), m.old.unit) for m in plan.printers] == [
        ("ender", {"virtual": True, "port": 5660}, "octoprint-ender.service"),
        ("voron", {"virtual": True, "port": 5661}, "octoprint-voron.service"),
    ]
    ender = plan.printers[0]
    assert (ender.old.basedir, ender.old.venv, ender.old.user) == (
        tmp_path / "home/pi/.octoprint_ender",
        tmp_path / "home/pi/OctoPrint_ender/venv",
        "pi",
    )
    assert ender.octoprint == trees.OCTOPRINT_VERSION, "the version is read from the venv its unit runs"
    assert any("talks to Klipper through /home/pi/ender_data/comms/klippy.serial" in m for m in plan.messages)


def test_kiauh_6_instances_with_their_venv_at_the_top_come_too(tmp_path: Path) -> None:
    trees.kiauh_farm(tmp_path, {"1": 5660, "2": 5661}, user="biqu", kiauh6=True)
    plan = plan_of(tmp_path, kiauh)
    assert [(m.old.name, m.old.venv, m.octoprint) for m in plan.printers] == [
        ("1", tmp_path / "home/biqu/OctoPrint_1", trees.OCTOPRINT_VERSION),
        ("2", tmp_path / "home/biqu/OctoPrint_2", trees.OCTOPRINT_VERSION),
    ]
    assert any("talks to Klipper through /home/biqu/printer_1_data/comms/klippy.serial" in m for m in plan.messages)


def test_kiauh_2021_basedirs_and_shared_venv_are_taken_from_the_unit(tmp_path: Path) -> None:
    # scripts/install_octoprint.sh (2021): ~/.octoprint-N basedirs, all on ~/OctoPrint/venv.
    trees.fake_venv(tmp_path / "home/pi/OctoPrint/venv")
    trees.basedir(tmp_path / "home/pi/.octoprint-1", "one")
    unit = trees.kiauh_unit("pi", "1", 5660, "/home/pi/OctoPrint/venv").replace(".octoprint_1", ".octoprint-1")
    trees.write(tmp_path / "etc/systemd/system/octoprint-1.service", unit)
    (move,) = plan_of(tmp_path, kiauh).printers
    assert (move.old.basedir, move.old.venv, move.old.unit) == (
        tmp_path / "home/pi/.octoprint-1",
        tmp_path / "home/pi/OctoPrint/venv",
        "octoprint-1.service",
    )


def test_kiauh_reads_only_its_own_unit_names_and_says_what_it_leaves_out(tmp_path: Path) -> None:
    trees.kiauh_farm(tmp_path, {"ender": 5660})
    units = tmp_path / "etc/systemd/system"
    # octobrix's own template, a name KIAUH never gives, and one KIAUH's single instance has (plain's).
    for other in ("octoprint@x.service", "octoprint-my_printer.service", "octoprint.service"):
        trees.write(units / other, trees.kiauh_unit("pi", "x", 5662, "/home/pi/OctoPrint"))
    trees.write(units / "octoprint-bare.service", "[Service]\nExecStart=/usr/bin/octoprint serve\n")
    (tmp_path / "home/pi/.octoprint_linked").symlink_to(tmp_path / "home/pi/.octoprint_ender")
    trees.write(units / "octoprint-linked.service", trees.kiauh_unit("pi", "linked", 5663, "/home/pi/OctoPrint"))
    found = kiauh.discover(Layout(tmp_path))
    assert [p.unit for p in found.printers] == ["octoprint-ender.service"]
    assert found.notes == (
        "/etc/systemd/system/octoprint-bare.service: names neither --basedir nor User=, so its basedir is unknown; "
        "left out (hint: KIAUH writes both; set them as it does and import again)",
        f"/etc/systemd/system/octoprint-linked.service: its basedir {tmp_path}/home/pi/.octoprint_linked is a link; "
        "left out (links are not followed)",
    )


def test_a_single_kiauh_octoprint_is_the_plain_readers_with_its_venv_from_the_unit(tmp_path: Path) -> None:
    # KIAUH's one-instance install: octoprint.service, ~/.octoprint, the bash KIAUH's ~/OctoPrint/venv.
    trees.fake_venv(tmp_path / "home/pi/OctoPrint/venv")
    trees.basedir(tmp_path / "home/pi/.octoprint", "octoprint")
    unit = trees.kiauh_unit("pi", "x", 5000, "/home/pi/OctoPrint/venv").replace(".octoprint_x", ".octoprint")
    trees.write(tmp_path / "etc/systemd/system/octoprint.service", unit)
    assert not kiauh.present(Layout(tmp_path))
    (move,) = plan_of(tmp_path, plain).printers
    assert (move.old.unit, move.old.venv, move.octoprint) == (
        "octoprint.service",
        tmp_path / "home/pi/OctoPrint/venv",
        trees.OCTOPRINT_VERSION,
    )


def test_a_plain_octoprint_is_planned_with_its_pin(tmp_path: Path) -> None:
    trees.plain_octoprint(tmp_path, port=5670)
    plan = plan_of(tmp_path, plain)
    (move,) = plan.printers
    assert (move.name, dict(move.entry)) == (
        "octoprint",
        {"virtual": True, "port": 5670, "octoprint": "octoprint==1.10.3"},
    )
    assert move.old.basedir == tmp_path / "home/pi/.octoprint" and move.old.unit == "octoprint.service"


def test_a_link_is_kept_as_a_link_never_followed(tmp_path: Path) -> None:
    trees.octoprint_deploy_farm(tmp_path, {"ender": (5650, "serial:PRN0001")})
    base = tmp_path / "home/pi/.ender"
    (base / "uploads" / "secret.gcode").symlink_to("/etc/shadow" if Path("/etc/shadow").exists() else "/etc/hostname")
    if os.geteuid() == 0:
        for path in [base, *base.rglob("*")]:
            os.lchown(path, 65534, 65534)
    plan = plan_of(tmp_path, octoprint_deploy)
    assert plan.printers[0].size.skipped == ()
    (link,) = plan.printers[0].size.links
    assert link.startswith(f"{base}/uploads/secret.gcode -> /etc/")
    assert plan.printers[0].size.files == 5, "what it points to is not counted: it is not copied"


def test_dry_run_shows_everything_and_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trees.octoprint_deploy_farm(tmp_path, TWO, cameras={"ender": (5652, "serial:CAM1")})
    config = trees.config(tmp_path)
    before = trees.tree_state(tmp_path, ["etc", "home", "var"] if (tmp_path / "var").exists() else ["etc", "home"])
    assert main(["import", "--root", str(tmp_path), "--config", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert trees.tree_state(tmp_path, ["etc", "home"]) == before and not (tmp_path / "var").exists()
    assert "Would import from octoprint_deploy (dry run: nothing is changed):" in out
    assert "printer ender: from ender (ender.service, port 5650, serial PRN0001)" in out
    assert f"  copy {tmp_path}/home/pi/.ender (5 files, 0.0 MB: settings, users, uploads, timelapses" in out
    assert "start octoprint@ender.service; once it answers, disable ender.service (its files stay)" in out
    assert "camera cam-ender: from cam_ender (cam_ender.service, port 5652); disable cam_ender.service" in out
    assert "+[printers.prusa]" in out and '+usb_port = "1-1.2"' in out
    assert "to go back: `sudo systemctl disable --now octoprint@ender.service octoprint@prusa.service`" in out


def test_import_under_root_writes_entries_copies_basedirs_and_a_second_does_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trees.octoprint_deploy_farm(tmp_path, TWO, cameras={"ender": (5652, "serial:CAM1")})
    config = trees.config(tmp_path, "# my farm\n[frontdoor]\nport = 8650\n")
    old = trees.tree_state(tmp_path, ["home", "etc/systemd", "etc/udev"])
    assert main(["import", "--root", str(tmp_path), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    body = tomllib.loads(config.read_text())
    assert config.read_text().startswith("# my farm\n")
    assert body["printers"]["ender"] == {"serial": "PRN0001", "port": 5650, "camera": "cam-ender"}
    assert body["printers"]["prusa"] == {"usb_port": "1-1.2", "port": 5651}
    assert body["cameras"]["cam-ender"]["serial"] == "CAM1"
    new = tmp_path / "var/lib/octobrix/ender/basedir"
    assert (new / "uploads/ender.gcode").read_bytes() == b"G28\n"
    assert (new / "timelapse/ender.mp4").exists() and (new / "users.yaml").read_text().startswith("maker:")
    assert not (new / "logs").exists() and not (new / "data/backup").exists()
    settings = yaml.safe_load((new / "config.yaml").read_text())
    # What the old OctoPrint had, with what octobrix owns on top (its serial port, its web port).
    assert settings["appearance"] == {"name": "ender", "color": "red"}, settings
    assert settings["serial"]["port"] == "/dev/octobrix/ender" and settings["server"]["port"] == 5650, settings
    assert "ender: copied 5 files" in out
    after = trees.tree_state(tmp_path, ["home", "etc/systemd", "etc/udev"])
    assert {path: after.get(path) for path in old} == old  # the old files, as they were
    assert main(["import", "--root", str(tmp_path), "--config", str(config)]) == 0
    again = capsys.readouterr().out
    assert again.strip().endswith(
        "Nothing left to import from octoprint_deploy (already moved in: camera cam_ender (now cam-ender), "
        "ender (now printer ender), prusa (now printer prusa))."
    )


def test_import_keeps_the_name_the_old_octoprint_had(tmp_path: Path) -> None:
    # The printer is named after the old instance in the config; in OctoPrint it keeps the name its
    # user gave it there (apply used to write the config's name over it).
    trees.octoprint_deploy_farm(tmp_path, TWO)
    old_settings = tmp_path / "home/pi/.ender/config.yaml"
    old_settings.write_text(old_settings.read_text().replace("name: ender", "name: Ender 3 in the garage"))
    config = trees.config(tmp_path, "[frontdoor]\nport = 8650\n")
    assert main(["import", "--root", str(tmp_path), "--config", str(config)]) == 0
    settings = yaml.safe_load((tmp_path / "var/lib/octobrix/ender/basedir/config.yaml").read_text())
    assert settings["appearance"] == {"name": "Ender 3 in the garage", "color": "red"}, settings
    assert settings["server"]["port"] == 5650, "octobrix's own keys are on top as before"
    layout = Layout(tmp_path)
    again = make_plan(load_config(config), layout, read_manifest(layout))
    assert not [c for c in again.files if c.path.name == "config.yaml"], "the next apply leaves the name"


def test_a_new_instance_carries_the_old_venvs_plugin_manager_plugins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """venvs.provision with uv stood in for: an imported printer has no venv of its own yet, so the
    plugins come from the old (octoprint_deploy's shared) venv named by the plan's carry_from."""
    old_venv = tmp_path / "home/pi/OctoPrint"
    trees.fake_venv(old_venv, "1.11.8", {"OctoPrint-Dashboard": "1.19.0"})
    site = "lib/python3.11/site-packages"

    def fake_uv(args: list[str], _layout: Layout) -> None:
        if args[0] == "venv":
            (Path(args[-1]) / site).mkdir(parents=True, exist_ok=True)
            return
        venv = Path(args[args.index("--python") + 1]).parent.parent
        for requirement in args[args.index("--python") + 2 :]:
            name, _, version = requirement.partition("==")
            info = venv / site / f"{name}-{version}.dist-info"
            trees.write(info / "METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n")
            trees.write(info / "INSTALLER", "uv\n")

    layout = Layout(tmp_path)
    monkeypatch.setattr("octobrixd.instances.venvs._uv", fake_uv)
    monkeypatch.setattr("octobrixd.instances.venvs._uv_as", lambda args, _user: fake_uv(args, layout))
    monkeypatch.setattr("octobrixd.instances.venvs._check_imports", lambda *_a: None)
    spec = VenvSpec("ender", ("octoprint==1.11.8",), carry_from=old_venv)
    target = provision(layout, spec, os.getuid(), os.getgid())
    assert {d.name: d.version for d in read_venv(target).values()} == {
        "octoprint": "1.11.8",
        "OctoPrint-Dashboard": "1.19.0",
    }
    state = json.loads((layout.state_dir("ender") / "carried-plugins.json").read_text())
    assert [(c["name"], c["version"]) for c in state["carried"]] == [("OctoPrint-Dashboard", "1.19.0")]
