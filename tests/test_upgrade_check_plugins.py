"""`upgrade --check`'s plugin part without a system: the listing read from a venv on disk, the package
index and pip's resolver replaced by fake `run()` results (the lab has no index; the real offline path,
with a real pip resolving against a wheels folder, is in tests/lab/test_upgrades.py, and as the
printer's user in tests/test_venv_as_user.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from octobrixd.cli import upgrade as upgrade_cli
from octobrixd.config.model import parse_config
from octobrixd.errors import CommandError
from octobrixd.instances import instance as instance_module
from octobrixd.instances.instance import Instance
from octobrixd.instances.venv_contents import InstalledPlugin, PluginSource
from octobrixd.system.paths import Layout
from octobrixd.upgrades import plugin_check, versions
from tests.test_plugins_carry import farm_venv

PIN = "octoprint==1.11.7"
CONFIG = f"""\
[printers.ender]
virtual = true
port = 5600
octoprint = "{PIN}"
plugins = ["OctoPrint-MFATOTP==1.1.1"]

[printers.prusa]
virtual = true
port = 5601
octoprint = "{PIN}"
"""
INDEX = {
    "octoprint": "1.11.8, 1.11.7, 1.10.3",
    "OctoPrint-MFATOTP": "1.2.0, 1.1.1",
    "OctoPrint-Labplug": "0.3.0, 0.2.0, 0.1.0",
    "OctoPrint-Dashboard": "1.19.0",
}
# What pip's resolver says in the venv with the pin as constraint: Labplug 0.3.0 needs OctoPrint 1.12.
# (pip 23 explains the conflict on stdout, the error on stderr)
CONFLICT_OUT = (
    "The conflict is caused by:\n"
    "    octoprint-labplug 0.3.0 depends on OctoPrint>=1.12\n"
    "    The user requested (constraint) octoprint==1.11.7\n"
)
CONFLICT_ERR = (
    "ERROR: Cannot install OctoPrint-Labplug==0.3.0 because these package versions have conflicting dependencies.\n"
    "ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/\n"
)
PICKS = {"OctoPrint-MFATOTP>1.1.1": "1.2.0", "OctoPrint-Labplug>0.1.0": "0.2.0"}
PRINTER_IDS = (65534, 65534)  # its user: nobody here


def report(name: str, version: str) -> str:
    return json.dumps({"version": "1", "install": [{"metadata": {"name": name, "version": version}}]})


class FakePip:
    """pip as seen through octobrixd.system.command.run: `index versions` (octobrix's own pip) and
    `install --dry-run --report FILE` (the printer's, as its user)."""

    def __init__(self, unreachable: bool = False) -> None:
        self.unreachable = unreachable
        self.calls: list[list[str]] = []
        self.options: list[dict[str, object]] = []

    def __call__(self, argv: Sequence[str], **_kw: object) -> subprocess.CompletedProcess[str]:
        args = [str(a) for a in argv]
        self.calls.append(args)
        self.options.append(_kw)
        if self.unreachable:
            raise CommandError(args, 1, "WARNING: Retrying ... NewConnectionError\nERROR: Could not reach the index")
        if "index" in args:
            project = args[-1]
            if project not in INDEX:
                raise CommandError(args, 1, f"ERROR: No matching distribution found for {project}")
            return subprocess.CompletedProcess(args, 0, f"{project} (x)\nAvailable versions: {INDEX[project]}\n", "")
        assert "--dry-run" in args and "--only-binary" in args and _kw.get("check") is False, args
        constraints = Path(args[args.index("--constraint") + 1]).read_text()
        assert constraints.strip() == PIN, "the printer's pin is pip's constraint"
        requirement = args[-1]
        if requirement in PICKS:
            name = requirement.partition(">")[0]
            Path(args[args.index("--report") + 1]).write_text(report(name, PICKS[requirement]))
            return subprocess.CompletedProcess(args, 0, f"Would install {name}-{PICKS[requirement]}\n", "")
        return subprocess.CompletedProcess(args, 1, CONFLICT_OUT, CONFLICT_ERR)


@pytest.fixture
def farm(tmp_path: Path) -> tuple[Layout, Path]:
    layout = Layout(tmp_path / "root")
    for name in ("ender", "prusa"):
        built = layout.state_dir(name) / "venvs" / "abc"
        farm_venv(built, octoprint="1.11.7")
        (built / "bin").mkdir()
        (built / "bin/python").symlink_to("/nonexistent/python3")  # never run: run() is faked
        (layout.state_dir(name) / "venv").symlink_to(Path("venvs") / "abc")
    path = tmp_path / "octobrix.toml"
    path.write_text(CONFIG)
    return layout, path


def check(
    farm: tuple[Layout, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], pip: FakePip,
    *, as_json: bool = False, config: str = CONFIG,
) -> tuple[int, str, str]:  # fmt: skip
    monkeypatch.setattr(versions, "run", pip)
    monkeypatch.setattr(instance_module, "run", pip)
    monkeypatch.setattr(Instance, "ids", lambda _self: PRINTER_IDS)
    layout, path = farm
    rc = upgrade_cli.check(parse_config(config, str(path)), layout, ["ender", "prusa"], None, as_json)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_check_lists_each_printers_plugin_updates_aligned_with_what_applies_them(
    farm: tuple[Layout, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pip = FakePip()
    rc, out, err = check(farm, monkeypatch, capsys, pip)
    assert rc == 0 and err == "", err
    lines = out.splitlines()
    assert lines[0].startswith("ender: runs OctoPrint 1.11.7 (octoprint==1.11.7); can move to octoprint==1.11.8"), out
    ender = lines[1:4]
    mfa = next(line for line in ender if "OctoPrint-MFATOTP" in line)
    assert "1.1.1 -> 1.2.0" in mfa and f"fits {PIN}" in mfa
    assert 'pin "OctoPrint-MFATOTP==1.2.0" in printers.ender.plugins, then `sudo octobrixctl apply`' in mfa
    lab = next(line for line in ender if "OctoPrint-Labplug" in line)
    assert "0.1.0 -> 0.2.0" in lab and f"fits {PIN}; 0.3.0 does not" in lab, lab
    assert "octoprint-labplug 0.3.0 depends on OctoPrint>=1.12" in lab, "the reason is pip's own"
    assert "in ender's OctoPrint: Settings > Software Update, or Plugin Manager > Get More" in lab
    assert "  pytest 8.0.0: newest unknown, not on the package index" in out, "a plugin PyPI does not know"
    assert not any("Dashboard" in line for line in ender), "1.19.0 is the newest: not an update"
    # Aligned: the version and the fit column start at the same place on every plugin line.
    plugin_lines = [line for line in lines if line.startswith("  OctoPrint-")]
    assert len({line.index(" -> ") for line in plugin_lines}) == 1, plugin_lines
    assert len({line.index("fits") for line in plugin_lines}) == 1, plugin_lines
    assert lines[4].startswith("prusa: runs OctoPrint 1.11.7"), out
    # One index question per project for the whole farm, however many printers have it.
    asked = [c[-1] for c in pip.calls if "index" in c]
    assert sorted(asked) == sorted(set(asked)), asked
    # Root asks the index with octobrix's own pip; pip's resolver runs in each printer's venv as its user.
    layout, _ = farm
    for argv, options in zip(pip.calls, pip.options, strict=True):
        if "index" in argv:
            assert argv[:4] == [sys.executable, "-I", "-m", "pip"] and "as_user" not in options, argv
        else:
            printers = [Instance(n, layout) for n in ("ender", "prusa")]
            printer = next(p for p in printers if argv[0] == str(p.python))
            assert argv[1:4] == ["-I", "-m", "pip"] and options["as_user"] == PRINTER_IDS, argv
            assert options["env"] == {
                "HOME": str(printer.home), "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1",
                "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            }  # fmt: skip
    assert any("--dry-run" in c for c in pip.calls)


def test_check_json_has_every_plugin_with_newest_update_fit_and_how(
    farm: tuple[Layout, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = check(farm, monkeypatch, capsys, FakePip(), as_json=True)
    assert rc == 0 and err == "", err
    body = json.loads(out)  # nothing but JSON on stdout
    assert body["version"] == 1 and body["errors"] == [] and body["source"] == "the package index"
    ender = body["printers"][0]
    assert ender["name"] == "ender" and ender["octoprint_version"] == "1.11.7"
    assert ender["octoprint_update"] == "octoprint==1.11.8" and ender["command"] == "sudo octobrixctl upgrade ender"
    plugins = {p["name"]: p for p in ender["plugins"]}
    assert plugins["OctoPrint-Labplug"] == {
        "name": "OctoPrint-Labplug", "source": "plugin-manager", "version": "0.1.0", "newest": "0.3.0",
        "update": "0.2.0", "fits_octoprint": True,
        "note": "octoprint-labplug 0.3.0 depends on OctoPrint>=1.12",
        "how": "in ender's OctoPrint: Settings > Software Update, or Plugin Manager > Get More",
    }  # fmt: skip
    assert plugins["OctoPrint-MFATOTP"]["source"] == "config" and plugins["OctoPrint-MFATOTP"]["update"] == "1.2.0"
    assert plugins["OctoPrint-Dashboard"]["update"] is None and plugins["OctoPrint-Dashboard"]["newest"] == "1.19.0"


def test_a_plugin_no_newer_version_of_which_fits_the_pin_says_so_and_offers_nothing(
    farm: tuple[Layout, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    PICKS.pop("OctoPrint-Labplug>0.1.0")
    try:
        rc, out, _ = check(farm, monkeypatch, capsys, FakePip())
    finally:
        PICKS["OctoPrint-Labplug>0.1.0"] = "0.2.0"
    assert rc == 0
    lab = next(line for line in out.splitlines() if "OctoPrint-Labplug" in line)
    assert "0.1.0 -> 0.3.0" in lab and f"needs another OctoPrint than {PIN}" in lab, lab
    assert "depends on OctoPrint>=1.12" in lab and "Software Update" not in lab, lab


def test_an_unreachable_index_is_one_line_with_a_hint_and_what_runs_is_still_shown(
    farm: tuple[Layout, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = check(farm, monkeypatch, capsys, FakePip(unreachable=True))
    assert rc == 1
    unknown = "newer releases unknown (the package index could not be read)"
    assert out.splitlines() == [
        f"ender: runs OctoPrint 1.11.7 (octoprint==1.11.7); {unknown}",
        f"prusa: runs OctoPrint 1.11.7 (octoprint==1.11.7); {unknown}",
    ]
    assert err.splitlines() == [
        "octobrixctl: cannot ask the package index for OctoPrint's releases: ERROR: Could not reach the index",
        "hint: check the network, or set [octobrix] wheels to a folder of wheels",
    ]
    rc, out, err = check(farm, monkeypatch, capsys, FakePip(unreachable=True), as_json=True)
    body = json.loads(out)
    assert rc == 1 and body["errors"][0]["hint"].startswith("check the network"), body
    assert [p["octoprint_version"] for p in body["printers"]] == ["1.11.7", "1.11.7"]
    assert body["printers"][0]["plugins"] is None and body["printers"][0]["octoprint_update"] is None


def test_offline_the_wheels_folder_names_the_file_to_upload_and_a_missing_plugin_is_unknown(
    farm: tuple[Layout, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in ("octoprint-1.11.7-py3-none-any.whl", "OctoPrint_Labplug-0.2.0-py3-none-any.whl",
                 "octoprint_mfatotp-1.1.1-py3-none-any.whl"):  # fmt: skip
        (wheels / name).touch()
    config = f'[octobrix]\nwheels = "{wheels}"\n\n' + CONFIG
    pip = FakePip()
    rc, out, _ = check(farm, monkeypatch, capsys, pip, config=config)
    assert rc == 0, out
    assert not any("index" in c for c in pip.calls), "offline: never the index"
    resolved = [c for c in pip.calls if "--dry-run" in c]
    assert resolved and all("--no-index" in c and str(wheels) in c for c in resolved)
    lab = next(line for line in out.splitlines() if "OctoPrint-Labplug" in line)
    upload = f"upload {wheels}/OctoPrint_Labplug-0.2.0-py3-none-any.whl"
    assert f"in ender's OctoPrint: Plugin Manager > Get More > {upload}" in lab, lab
    assert f"  OctoPrint-Dashboard 1.19.0: newest unknown, not in the wheels folder {wheels}" in out, out
    prusa = out.split("prusa: ", 1)[1].splitlines()
    assert not any("MFATOTP" in line for line in prusa), "prusa has no config plugin"


def test_a_printer_without_plugins_says_none_and_one_up_to_date_says_so() -> None:
    up_to_date = plugin_check.PluginUpdate("X", PluginSource.CONFIG, "1.0", "1.0", None, None, None, None)
    widths = plugin_check.widths_of([([up_to_date], PIN)])
    assert plugin_check.plugin_lines([up_to_date], PIN, widths) == ["  plugins: up to date"]
    assert plugin_check.plugin_lines([], PIN, widths) == ["  plugins: none"]


def test_a_config_plugin_given_as_an_address_is_not_looked_up() -> None:
    plugin = InstalledPlugin("OctoPrint-Thing", "1.0", PluginSource.CONFIG)
    assert plugin_check.config_url(plugin, ["https://example.invalid/thing.zip"])
    assert not plugin_check.config_url(plugin, ["OctoPrint-Thing==1.0"])


def test_pip_without_a_wheel_to_read_is_fit_unknown_not_a_guess() -> None:
    answer = plugin_check.PipAnswer(1, "ERROR: Could not find a version that satisfies the requirement X>1.0")
    target, fits, why = plugin_check.read_fit(answer, "X")
    assert target is None and fits is None and "no wheel" in why


def test_a_plugin_whose_metadata_would_reach_pip_as_an_option_is_never_asked_about() -> None:
    hostile = InstalledPlugin("--index-url=http://evil.invalid/simple", "1.0", PluginSource.PLUGIN_MANAGER)
    asked: list[InstalledPlugin] = []

    def newest_of(plugin: InstalledPlugin) -> tuple[str | None, str | None]:
        asked.append(plugin)
        return "9.9", None

    rows = plugin_check.check_printer(
        "ender", [hostile], requirements=[], source=plugin_check.Source(None, {}),
        instance=Instance("ender", Layout(Path("/nonexistent"))), pin=PIN, newest_of=newest_of,
    )  # fmt: skip
    assert asked == [] and rows[0].newest is None and "not one pip can be asked about" in (rows[0].note or "")
