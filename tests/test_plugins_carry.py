"""The user's Plugin Manager plugins and the OctoPrint version, read from a venv's dist-info folders.

The venvs here are fake trees under tmp_path (dist-info folders as pip and uv write them), so the
planning and carrying logic is tested in milliseconds; the real thing (OctoPrint's Plugin Manager,
a rebuild, an OctoPrint installed behind octobrix's back) is tests/lab/test_plugins.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from octobrixd.apply.plan import apply_plan, make_plan
from octobrixd.cli.doctor import DoctorContext, check_venvs, run_checks
from octobrixd.cli.status import format_table, to_json
from octobrixd.config.model import parse_config
from octobrixd.errors import CommandError
from octobrixd.farm.manifest import read_manifest
from octobrixd.farm.status import collect
from octobrixd.instances.carry import Source, carry
from octobrixd.instances.venv_contents import (
    Dist,
    PluginSource,
    drift_of,
    installed_versions,
    read_venv,
    report,
    satisfies,
    user_plugins,
)
from octobrixd.instances.venv_drift import venvs_to_build
from octobrixd.instances.venv_spec import COMPLETE_MARKER, VenvSpec, is_current, venv_spec
from octobrixd.instances.venvs import _build_dir, provision
from octobrixd.instances.wheel_pack import repack
from octobrixd.system.paths import Layout

SITE = "lib/python3.11/site-packages"


def dist(
    venv: Path,
    name: str,
    version: str,
    *,
    requires: Sequence[str] = (),
    plugin: bool = False,
    requested: bool = False,
    url: str | None = None,
    installer: str = "pip",
) -> Path:
    """A distribution as an installer leaves it: METADATA, RECORD, entry points, a module."""
    site = venv / SITE
    module = name.lower().replace("-", "_")
    info = site / f"{module}-{version}.dist-info"
    info.mkdir(parents=True)
    (site / module).mkdir()
    (site / module / "__init__.py").write_text(f"__version__ = {version!r}\n")
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    (info / "INSTALLER").write_text(f"{installer}\n")
    if plugin:
        (info / "entry_points.txt").write_text(f"[octoprint.plugin]\n{module} = {module}\n")
    if requested:
        (info / "REQUESTED").write_text("")
    if url is not None:
        (info / "direct_url.json").write_text(json.dumps({"url": url, "archive_info": {}}))
    files = [f"{module}/__init__.py", *(f"{info.name}/{f.name}" for f in info.iterdir()), f"{info.name}/RECORD"]
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in [*files, f"../../../bin/{module}"]))
    return info


def farm_venv(venv: Path, octoprint: str = "1.11.8") -> None:
    """OctoPrint with its dependencies, a config plugin, and two plugins the user added."""
    dist(venv, "pip", "24.0")
    dist(venv, "setuptools", "70.0")
    dist(venv, "OctoPrint", octoprint, requires=["OctoPrint-FileCheck>=2021.2.23", "Flask<2.3,>=2.2", "netifaces"])
    dist(venv, "OctoPrint-FileCheck", "2024.3.27", plugin=True)  # bundled through a dependency: OctoPrint's own
    dist(venv, "Flask", "2.2.5", requires=["click>=8", "pytest; extra == 'test'"])
    dist(venv, "click", "8.1.7")
    dist(venv, "netifaces", "0.11.0")
    dist(venv, "pytest", "8.0.0", requested=True)  # a test extra nobody asked for... but REQUESTED by hand
    dist(venv, "OctoPrint-MFATOTP", "1.1.1", plugin=True, requires=["pyotp"])  # the config's
    dist(venv, "pyotp", "2.9.0")
    # Through OctoPrint's Plugin Manager: from a download it deleted afterwards, and from PyPI.
    dist(venv, "OctoPrint-Labplug", "0.1.0", plugin=True, requested=True, url="file:///tmp/tmpab12/labplug.zip")
    dist(venv, "OctoPrint-Dashboard", "1.19.0", plugin=True, requested=True, requires=["cachetools"])
    dist(venv, "cachetools", "5.3.0")


REQUIREMENTS = ("octoprint==1.11.8", "OctoPrint-MFATOTP==1.1.1")


def test_the_users_plugins_are_what_neither_octoprint_nor_the_config_brought(tmp_path: Path) -> None:
    farm_venv(tmp_path)
    found = user_plugins(read_venv(tmp_path), REQUIREMENTS)
    # pytest is Flask's only as an extra, and was asked for by name: the user's too.
    assert [d.name for d in found] == ["OctoPrint-Dashboard", "OctoPrint-Labplug", "pytest"]
    labplug = next(d for d in found if d.name == "OctoPrint-Labplug")
    assert labplug.url == "file:///tmp/tmpab12/labplug.zip" and labplug.is_plugin


def test_a_plugin_taken_out_of_the_config_is_not_carried_but_one_carried_before_is(tmp_path: Path) -> None:
    farm_venv(tmp_path)
    dist(tmp_path, "OctoPrint-PSUControl", "1.0.6", plugin=True, requested=True, installer="uv")  # was the config's
    dist(tmp_path, "OctoPrint-Carried", "3.0", plugin=True, installer="uv")  # octobrix carried it last time
    found = [d.name for d in user_plugins(read_venv(tmp_path), REQUIREMENTS, carried_before=["OctoPrint-Carried"])]
    assert "OctoPrint-PSUControl" not in found
    assert "OctoPrint-Carried" in found and "OctoPrint-Labplug" in found


def test_a_config_plugin_given_as_a_bare_url_is_the_configs(tmp_path: Path) -> None:
    farm_venv(tmp_path)
    url = "https://github.com/x/OctoPrint-Dashboard/archive/1.19.0.zip"
    info = next((tmp_path / SITE).glob("octoprint_dashboard-*.dist-info"))
    (info / "direct_url.json").write_text(json.dumps({"url": url, "archive_info": {}}))
    found = user_plugins(read_venv(tmp_path), (*REQUIREMENTS, url))
    assert "OctoPrint-Dashboard" not in [d.name for d in found]


def test_report_lists_each_plugin_with_where_it_came_from(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    config = parse_config(
        '[printers.demo]\nvirtual = true\nport = 5100\nplugins = ["OctoPrint-MFATOTP==1.1.1"]\n', "/etc/octobrix.toml"
    )
    venv = layout.state_dir("demo") / "venvs" / "x"
    farm_venv(venv, octoprint="1.11.7")
    (layout.state_dir("demo") / "venv").symlink_to("venvs/x")
    got = report(layout, config, "demo")
    assert got.octoprint_version == "1.11.7"
    sources = {p.name: (p.version, p.source) for p in got.plugins}
    assert sources["OctoPrint-MFATOTP"] == ("1.1.1", PluginSource.CONFIG)
    assert sources["OctoPrint-Labplug"] == ("0.1.0", PluginSource.PLUGIN_MANAGER)
    assert "OctoPrint" not in sources and "OctoPrint-FileCheck" not in sources
    assert got.drift is not None and "OctoPrint 1.11.7 is installed" in got.drift and "octoprint==1.11.8" in got.drift


def test_drift_names_another_octoprint_and_a_missing_config_plugin(tmp_path: Path) -> None:
    farm_venv(tmp_path)
    dists = installed_versions(tmp_path)
    assert dists["octoprint"] == "1.11.8" and dists["octoprint-labplug"] == "0.1.0"
    assert drift_of(dists, REQUIREMENTS) is None
    assert drift_of(dists, ("octoprint>=1.10,<2",)) is None
    other = drift_of(dists, ("octoprint==1.11.7", "OctoPrint-PSUControl==1.0.6"))
    assert other is not None
    assert "OctoPrint 1.11.8 is installed, the config asks for octoprint==1.11.7" in other
    assert "plugin OctoPrint-PSUControl==1.0.6 from the config is not installed" in other
    assert drift_of({}, REQUIREMENTS) is None, "an unreadable venv (no root) is not called drift"


@pytest.mark.parametrize(
    ("version", "requirement", "expected"),
    [
        ("1.11.8", "octoprint==1.11.8", True),
        ("1.11.8", "octoprint==1.11.7", False),
        ("1.11.0", "octoprint==1.11", True),
        ("1.11.8", "octoprint==1.11.*", True),
        ("1.10.3", "octoprint==1.11.*", False),
        ("2.0.0rc3", "octoprint>=2.0.0", False),
        ("2.0.0rc3", "octoprint>=2.0.0rc1", True),
        ("1.11.8", "octoprint~=1.11.2", True),
        ("1.12.0", "octoprint~=1.11.2", False),
        ("1.11.8", "octoprint!=1.11.8", False),
        ("1.11.8.post1", "octoprint>1.11.8", True),
        ("weird", "octoprint==1.11.8", None),
    ],
)
def test_versions_are_compared_as_pep_440_says(version: str, requirement: str, expected: bool | None) -> None:
    assert satisfies(version, requirement) is expected


class FakeBuilder:
    """uv as carry() sees it (the venv holds the config's requirements already): installs fail when
    they include a requirement in `broken`; installed copies are packed for real."""

    def __init__(self, scratch: Path, broken: Sequence[str] = ()) -> None:
        self.scratch = scratch
        self.broken = broken
        self.calls: list[tuple[str, ...]] = []

    def install(self, requirements: Sequence[str]) -> None:
        self.calls.append(tuple(requirements))
        if any(b in r for r in requirements for b in self.broken):
            raise CommandError(["uv", "pip", "install", *requirements], 1, "  × No solution found\n  ╰─▶ conflict")

    def pack(self, dist: Dist) -> Path:
        return repack(dist.path, dist.name, dist.version, self.scratch)


def test_all_plugins_go_in_in_one_install(tmp_path: Path) -> None:
    farm_venv(tmp_path / "old")
    plugins = user_plugins(read_venv(tmp_path / "old"), REQUIREMENTS)
    builder = FakeBuilder(tmp_path / "scratch")
    result = carry(builder, plugins, None)
    assert len(builder.calls) == 1
    (installed,) = builder.calls
    assert "OctoPrint-Dashboard==1.19.0" in installed, "from PyPI, the same version"
    assert not any(r.startswith("octoprint==") for r in installed), "the config's were installed by root before"
    # Installed from a download OctoPrint deleted: from a wheel of the installed copy.
    wheel = next(r for r in installed if r.endswith(".whl"))
    assert Path(wheel).name == "octoprint_labplug-0.1.0-py3-none-any.whl"
    assert {c.name: c.source for c in result.carried} == {
        "OctoPrint-Dashboard": Source.INDEX,
        "OctoPrint-Labplug": Source.INSTALLED_COPY,
        "pytest": Source.INDEX,
    }
    assert result.message("demo") is None


def test_a_plugin_that_no_longer_fits_costs_only_itself_and_is_named(tmp_path: Path) -> None:
    farm_venv(tmp_path / "old")
    plugins = user_plugins(read_venv(tmp_path / "old"), REQUIREMENTS)
    # Neither its release nor a wheel of the installed copy fits the new OctoPrint.
    builder = FakeBuilder(tmp_path / "scratch", broken=("Dashboard", "dashboard"))
    result = carry(builder, plugins, None)
    assert len(builder.calls[0]) == 3, "all three together first"
    assert all(len(call) == 1 for call in builder.calls[1:]), "then each on its own"
    assert {c.name for c in result.carried} == {"OctoPrint-Labplug", "pytest"}
    assert [(n.name, n.version) for n in result.not_carried] == [("OctoPrint-Dashboard", "1.19.0")]
    message = result.message("demo")
    assert message is not None and "OctoPrint-Dashboard 1.19.0" in message and "No solution found" not in message
    assert "conflict" in message and "settings are kept" in message
    assert "OctoPrint-Labplug" not in message


def test_no_plugins_installs_nothing(tmp_path: Path) -> None:
    builder = FakeBuilder(tmp_path / "scratch")
    assert carry(builder, [], None).message("demo") is None and builder.calls == []


def test_an_offline_farm_carries_from_the_wheels_folder_only(tmp_path: Path) -> None:
    farm_venv(tmp_path / "old")
    url = "https://example.invalid/OctoPrint-Dashboard-1.19.0.zip"
    info = next((tmp_path / "old" / SITE).glob("octoprint_dashboard-*.dist-info"))
    (info / "direct_url.json").write_text(json.dumps({"url": url, "archive_info": {}}))
    plugins = user_plugins(read_venv(tmp_path / "old"), REQUIREMENTS)
    builder = FakeBuilder(tmp_path / "scratch")
    carry(builder, plugins, "/srv/wheels")
    installed = builder.calls[0]
    assert "OctoPrint-Dashboard==1.19.0" in installed and not any("example.invalid" in r for r in installed)
    online = FakeBuilder(tmp_path / "scratch2")
    carry(online, plugins, None)
    assert f"OctoPrint-Dashboard @ {url}" in online.calls[0], "online: again from the URL it came from"


def test_the_installed_copy_packs_into_a_wheel_uv_installs(tmp_path: Path) -> None:
    farm_venv(tmp_path / "old")
    labplug = read_venv(tmp_path / "old")["octoprint-labplug"]
    wheel = repack(labplug.path, labplug.name, labplug.version, tmp_path / "wheels")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    info = "octoprint_labplug-0.1.0.dist-info"
    assert {f"{info}/METADATA", f"{info}/WHEEL", f"{info}/RECORD", "octoprint_labplug/__init__.py"} <= names
    assert f"{info}/direct_url.json" not in names, "it would name a file that is gone"
    target = tmp_path / "new"
    env = dict(os.environ, UV_CACHE_DIR=str(tmp_path / "cache"), UV_NO_PROGRESS="1")
    uv = [sys.executable, "-m", "uv"]
    subprocess.run([*uv, "venv", "--quiet", str(target)], check=True, env=env, capture_output=True)
    subprocess.run(
        [*uv, "pip", "install", "--quiet", "--no-index", "--python", str(target / "bin" / "python"), str(wheel)],
        check=True,
        env=env,
        capture_output=True,
    )
    again = read_venv(target)["octoprint-labplug"]
    assert (again.version, again.is_plugin) == ("0.1.0", True)


def test_a_venv_changed_behind_octobrixs_back_is_rebuilt_beside_the_running_one(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    config = parse_config("[printers.demo]\nvirtual = true\nport = 5100\n", "/etc/octobrix.toml")
    spec = venv_spec(config, "demo")
    running = layout.state_dir("demo") / "venvs" / spec.digest
    farm_venv(running, octoprint="1.11.7")  # the config pins 1.11.8
    (running / COMPLETE_MARKER).touch()
    (layout.state_dir("demo") / "venv").symlink_to(f"venvs/{spec.digest}")
    assert is_current(layout, spec), "the config did not change..."
    (built,) = venvs_to_build(layout, config)
    assert built.drift, "...but the venv did"
    assert "OctoPrint 1.11.7 is installed, the config asks for octoprint==1.11.8" in built.reason
    assert "keeping the plugins installed through OctoPrint: OctoPrint-Dashboard 1.19.0" in built.reason
    assert _build_dir(layout, spec).name == f"{spec.digest}-1", "never into the folder OctoPrint runs from"
    # Once rebuilt there, it is current and matches.
    rebuilt = _build_dir(layout, spec)
    farm_venv(rebuilt)
    (rebuilt / COMPLETE_MARKER).touch()
    (layout.state_dir("demo") / "venv").unlink()
    (layout.state_dir("demo") / "venv").symlink_to(f"venvs/{rebuilt.name}")
    assert is_current(layout, spec) and venvs_to_build(layout, config) == ()
    assert _build_dir(layout, spec).name == spec.digest


def test_status_and_doctor_name_another_octoprint_and_list_the_plugins(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    config_file = tmp_path / "octobrix.toml"
    config_file.write_text(
        '[printers.demo]\nvirtual = true\nport = 5100\noctoprint = "octoprint==1.11.7"\n'
        'plugins = ["OctoPrint-MFATOTP==1.1.1"]\n'
    )
    config = parse_config(config_file.read_text(), str(config_file))
    venv = layout.state_dir("demo") / "venvs" / "x"
    farm_venv(venv, octoprint="1.11.8")  # OctoPrint's updater put 1.11.8 there
    (layout.state_dir("demo") / "venv").symlink_to("venvs/x")

    printers, _cameras = collect(config, layout, {}, {}, "farm")
    row = json.loads(to_json(printers, []))["printers"][0]
    assert (row["octoprint_version"], row["octoprint_requirement"]) == ("1.11.8", "octoprint==1.11.7")
    assert "OctoPrint 1.11.8 is installed, the config asks for octoprint==1.11.7" in row["drift"]
    assert {"name": "OctoPrint-Labplug", "version": "0.1.0", "source": "plugin-manager"} in row["plugins"]
    assert {"name": "OctoPrint-MFATOTP", "version": "1.1.1", "source": "config"} in row["plugins"]
    table = format_table(printers, [])
    assert "demo: OctoPrint 1.11.8 is installed" in table and "`sudo octobrixctl apply`" in table

    results = run_checks(DoctorContext(layout, config_file), [check_venvs])
    assert [(r.name, r.ok) for r in results] == [("octoprint demo", False)]
    assert "1.11.8" in results[0].detail and results[0].fix is not None and "sudo octobrixctl apply" in results[0].fix

    # Put back as pinned, after a build that could not keep one plugin.
    shutil.rmtree(venv / SITE / "octoprint-1.11.8.dist-info")
    shutil.rmtree(venv / SITE / "octoprint")
    dist(venv, "OctoPrint", "1.11.7")
    (layout.state_dir("demo") / "carried-plugins.json").write_text(
        json.dumps({"version": 1, "not_carried": [{"name": "OctoPrint-Gone", "version": "2.0", "reason": "conflict"}]})
    )
    printers, _cameras = collect(config, layout, {}, {}, "farm")
    assert printers[0].drift is None and "installed" not in format_table(printers, [])
    results = run_checks(DoctorContext(layout, config_file), [check_venvs])
    assert [(r.name, r.ok) for r in results] == [("octoprint demo", True), ("plugins demo", False)]
    assert "OctoPrint-Labplug 0.1.0 (plugin-manager)" in results[0].detail
    assert "OctoPrint-Gone 2.0 (conflict)" in results[1].detail and "Plugin Manager" in (results[1].fix or "")


def test_a_drift_repair_waits_while_the_printer_prints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The venv of a printing OctoPrint is neither rebuilt nor restarted; once the print ends it is."""
    layout = Layout(tmp_path)
    config = parse_config("[printers.demo]\nvirtual = true\nport = 5100\n", "/etc/octobrix.toml")
    apply_plan(make_plan(config, layout, read_manifest(layout)), layout, read_manifest(layout))
    built: list[str] = []
    monkeypatch.setattr("octobrixd.apply.plan.provision", lambda _layout, spec, *_a, **_k: built.append(spec.name))
    unit = "octoprint@demo.service"
    # What make_plan gives on a live system when the venv holds another OctoPrint.
    spec = replace(venv_spec(config, "demo"), drift=True, reason="OctoPrint 1.11.7 is installed")
    previous = read_manifest(layout)
    plan = replace(make_plan(config, layout, previous), provision=(spec,), restart=(unit,), wheels="/srv/wheels")
    assert "(OctoPrint 1.11.7 is installed)" in plan.commands()[0]
    held = apply_plan(plan, layout, previous, busy=lambda _name: True)
    assert held.deferred == (unit,) and built == []
    assert read_manifest(layout).deferred == (unit,), "status says restart pending; octobrixd retries"
    done = apply_plan(plan, layout, read_manifest(layout), busy=lambda _name: False)
    assert done.deferred == () and built == ["demo"]


def test_provision_carries_what_fits_names_the_rest_and_remembers_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """venvs.provision with uv stood in for (it installs into the fake tree): the build goes on without
    the plugin that no longer installs, says so once, and the state dir remembers what happened."""
    layout = Layout(tmp_path)
    old_spec = VenvSpec("demo", ("octoprint==1.11.8",))
    old = layout.state_dir("demo") / "venvs" / old_spec.digest
    dist(old, "OctoPrint", "1.11.8")
    dist(old, "OctoPrint-Good", "1.0", plugin=True, requested=True)
    dist(old, "OctoPrint-Bad", "2.0", plugin=True, requested=True)
    (old / COMPLETE_MARKER).touch()
    (layout.state_dir("demo") / "venv").symlink_to(f"venvs/{old_spec.digest}")

    def fake_uv(args: list[str], _layout: Layout) -> None:
        if args[0] == "venv":
            (Path(args[-1]) / SITE).mkdir(parents=True, exist_ok=True)
            return
        python = Path(args[args.index("--python") + 1])
        venv = python.parent.parent
        wanted = args[args.index("--python") + 2 :]
        if any("Bad" in w or "bad" in w for w in wanted):
            raise CommandError(["uv", *args], 1, "  × No solution found\n  ╰─▶ OctoPrint-Bad 2.0 needs OctoPrint>=2")
        for requirement in wanted:
            name, _, version = Path(requirement).name.partition("==")
            if requirement.endswith(".whl"):
                name, version = Path(requirement).name.split("-")[:2]
            if not (venv / SITE / f"{name.lower().replace('-', '_')}-{version}.dist-info").exists():
                dist(venv, name, version, plugin=name != "octoprint", installer="uv")

    monkeypatch.setattr("octobrixd.instances.venvs._uv", fake_uv)
    monkeypatch.setattr("octobrixd.instances.venvs._uv_as", lambda args, _user: fake_uv(args, layout))
    monkeypatch.setattr("octobrixd.instances.venvs._check_imports", lambda *_a: None)
    new_spec = VenvSpec("demo", ("octoprint==1.11.7",))
    with caplog.at_level("WARNING"):
        target = provision(layout, new_spec, os.getuid(), os.getgid())
    assert (layout.state_dir("demo") / "venv").resolve() == target.resolve()
    installed = read_venv(target)
    assert installed["octoprint"].version == "1.11.7" and installed["octoprint-good"].version == "1.0"
    assert "octoprint-bad" not in installed
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "demo: could not carry" in warnings[0]
    assert "OctoPrint-Bad 2.0 (╰─▶ OctoPrint-Bad 2.0 needs OctoPrint>=2)" in warnings[0]
    state = json.loads((layout.state_dir("demo") / "carried-plugins.json").read_text())
    assert [(c["name"], c["source"]) for c in state["carried"]] == [("OctoPrint-Good", "index")]
    assert [n["name"] for n in state["not_carried"]] == ["OctoPrint-Bad"] and state["octoprint"] == "1.11.7"
    assert old.exists(), "the previous venv stays, for a running OctoPrint"


def test_doctor_without_root_says_what_it_cannot_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain user cannot look into /var/lib/octobrix/NAME (0700, the instance's). The tests run as
    root, who can: the EACCES a plain user gets from lstat is raised by a stand-in here."""
    layout = Layout(tmp_path)
    config_file = tmp_path / "octobrix.toml"
    config_file.write_text("[printers.demo]\nvirtual = true\nport = 5100\n")
    state = layout.state_dir("demo")
    real_is_symlink = Path.is_symlink

    def is_symlink(path: Path) -> bool:
        if path.is_relative_to(state):
            raise PermissionError(13, "Permission denied", str(path))
        return real_is_symlink(path)

    monkeypatch.setattr(Path, "is_symlink", is_symlink)
    results = run_checks(DoctorContext(layout, config_file), [check_venvs])
    assert [(r.name, r.ok) for r in results] == [("octoprint demo", True)]
    assert "run doctor as root" in results[0].detail


def test_a_venv_that_is_not_ours_to_read_is_unknown_not_a_crash(tmp_path: Path) -> None:
    """status without root and the overview's unprivileged web service read a 0700 state dir they
    cannot enter: the venv's fields are unknown (null), and nothing raises (found by the browser test)."""
    state = tmp_path / "var/lib/octobrix/demo"
    (state / "venvs/x/lib/python3.11/site-packages").mkdir(parents=True)
    (state / "venv").symlink_to("venvs/x")
    state.chmod(0o700)
    script = (
        "import sys\nfrom pathlib import Path\nfrom octobrixd.config.model import parse_config\n"
        "from octobrixd.system.paths import Layout\nfrom octobrixd.instances.venv_contents import report\n"
        "config = parse_config('[printers.demo]\\nvirtual = true\\nport = 5000\\n')\n"
        "print(report(Layout(Path(sys.argv[1])), config, 'demo'))\n"
    )
    for parent in [tmp_path, *tmp_path.parents]:
        parent.chmod(parent.stat().st_mode | 0o005)
    for folder in (tmp_path / "var", tmp_path / "var/lib", tmp_path / "var/lib/octobrix"):
        folder.chmod(0o755)
    result = subprocess.run(
        ["runuser", "-u", "nobody", "--", sys.executable, "-c", script, str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "VenvReport(octoprint_version=None, plugins=(), drift=None)"
