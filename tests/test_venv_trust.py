"""Building a printer's venv never runs the printer's code as root and never follows its links.

Real venvs, a real uv, offline from a wheels folder made here, and the real user `nobody` as the
printer's user. A `.pth` file (Python runs it at every start of the venv's interpreter, and uv starts
that interpreter on each install) writes a marker named by the uid it ran as.
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from octobrixd.instances.venv_spec import COMPLETE_MARKER, VenvSpec, current_venv, is_complete, is_current, venv_link
from octobrixd.instances.venvs import _build_dir, _mark_complete, _prune, provision
from octobrixd.instances.wheel_pack import repack
from octobrixd.system.paths import Layout

SECRET = b"ROOT-ONLY-SECRET-4711"
SITE = "lib/python3.11/site-packages"


@pytest.fixture
def nobody() -> tuple[int, int]:
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, which another user may enter (pytest's own folders are root's, 0700)."""
    changed = []
    for parent in [tmp_path, *tmp_path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o001 == 0:
            changed.append((parent, mode))
            parent.chmod(mode | 0o001)
    yield tmp_path
    for parent, mode in changed:
        parent.chmod(stat.S_IMODE(mode))


def make_wheel(folder: Path, name: str, version: str, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    members = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for member, text in members.items():
            archive.writestr(member, text)
        archive.writestr(f"{info}/RECORD", "".join(f"{m},,\n" for m in [*members, f"{info}/RECORD"]))
    return wheel


def root_only_secret(folder: Path) -> Path:
    secret = folder / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    return secret


def hostile_plugin(venv: Path, secret: Path, marker_dir: Path) -> Path:
    """A plugin as the printer's user can leave it in its venv: a .pth that runs at every start of the
    interpreter, a RECORD naming files outside site-packages, a link and a FIFO to a root-only file."""
    site = venv / SITE
    info = site / "evilplug-1.0.dist-info"
    info.mkdir(parents=True)
    (site / "evilplug").mkdir()
    (site / "evilplug" / "__init__.py").write_text("")
    (site / "evilplug" / "link.txt").symlink_to(secret)
    (site / "evilplug" / "linked_dir").symlink_to(secret.parent)
    os.mkfifo(site / "evilplug" / "fifo")
    (site / "evilplug.pth").write_text(f"import os; open('{marker_dir}/ran-as-%d' % os.getuid(), 'w').close()\n")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: evilplug\nVersion: 1.0\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "REQUESTED").write_text("")
    (info / "entry_points.txt").write_text("[octoprint.plugin]\nevilplug = evilplug\n")
    up = "../" * len(site.relative_to(secret.parent).parts)
    record = [
        "evilplug/__init__.py",
        "evilplug.pth",
        "evilplug/link.txt",
        "evilplug/fifo",
        f"evilplug/linked_dir/{secret.name}",
        f"{up}{secret.name}",
        f"evilplug/../{up}{secret.name}",
        str(secret),
        *(f"{info.name}/{n}" for n in ("METADATA", "INSTALLER", "REQUESTED", "entry_points.txt", "RECORD")),
    ]
    (info / "RECORD").write_text("".join(f"{r},,\n" for r in record))
    return info


def test_packing_takes_only_regular_files_inside_site_packages(tmp_path: Path) -> None:
    """Even as root (who could read the secret), a RECORD line leaving site-packages, a link (to a
    file or through a folder) and a FIFO are left out; the packing does not hang on the FIFO."""
    secret = root_only_secret(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    info = hostile_plugin(venv, secret, tmp_path)
    wheel = repack(info, "evilplug", "1.0", tmp_path / "out")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        contents = [archive.read(n) for n in names]
    assert {"evilplug/__init__.py", "evilplug.pth", "evilplug-1.0.dist-info/METADATA"} <= names
    assert not any(SECRET in data for data in contents), names
    assert not any("link" in n or "fifo" in n or "secret" in n for n in names), names


def test_a_provision_runs_nothing_of_the_printers_as_root(world: Path, nobody: tuple[int, int]) -> None:
    """Offline from a wheels folder: the previous venv's plugin (installed from a download that is gone)
    is packed and installed as the printer's user, and the new venv's OctoPrint imported as that user.
    The plugin's .pth runs then, as nobody; never as root. Its links and RECORD reach nothing of root's."""
    markers = world / "markers"
    markers.mkdir(mode=0o777)
    markers.chmod(0o1777)
    secret = root_only_secret(world)
    wheels = world / "wheels"
    for seed in Path("/usr/share/python-wheels").glob("*.whl"):
        (wheels / seed.name).parent.mkdir(exist_ok=True)
        (wheels / seed.name).write_bytes(seed.read_bytes())
    make_wheel(wheels, "wheel", "0.0.1", {"wheel/__init__.py": ""})
    make_wheel(wheels, "octoprint", "1.11.8", {"octoprint/__init__.py": ""})

    layout = Layout(world / "root")
    old = VenvSpec("demo", ("octoprint==1.11.7",))
    previous = layout.state_dir("demo") / "venvs" / old.digest
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(previous)], check=True)
    hostile_plugin(previous, secret, markers)
    (previous / COMPLETE_MARKER).touch()
    venv_link(layout, "demo").symlink_to(f"venvs/{old.digest}")
    layout.state_dir("demo").chmod(0o755)
    for current, _dirs, files in os.walk(previous):  # the printer's own venv
        os.chown(current, *nobody)
        for name in files:
            os.chown(Path(current) / name, *nobody, follow_symlinks=False)

    spec = VenvSpec("demo", ("octoprint==1.11.8",))
    target = provision(layout, spec, *nobody, wheels=str(wheels))

    assert is_current(layout, spec)
    ran = sorted(p.name for p in markers.iterdir())
    assert ran == [f"ran-as-{nobody[0]}"], "the carried .pth ran as the printer's user only"
    site = target / SITE
    assert (site / "evilplug.pth").is_file() and (site / "evilplug" / "__init__.py").is_file()
    assert not (site / "evilplug" / "link.txt").exists() and not (site / "evilplug" / "fifo").exists()
    for current, _dirs, files in os.walk(target):
        for name in files:
            path = Path(current) / name
            assert path.is_symlink() or SECRET not in path.read_bytes(), path
    assert (target / COMPLETE_MARKER).lstat().st_uid == 0
    assert (site / "octoprint" / "__init__.py").stat().st_uid == 0, "the config's files stay root's"
    assert (site / "evilplug" / "__init__.py").stat().st_uid == nobody[0], "the plugin was installed by nobody"
    home = layout.state_dir("demo") / "home"
    assert home.stat().st_uid == nobody[0] and (home / ".cache" / "uv").stat().st_uid == nobody[0]
    assert not list(target.parent.glob(".carry-*")), "the carry's scratch folder is gone"


@pytest.mark.parametrize("link", ["/etc", "../../../../etc", "venvs/../../x", "venvs/x/y", "venvs/..", "x", "venvs/"])
def test_a_venv_link_of_another_shape_is_no_current_venv(tmp_path: Path, link: str) -> None:
    layout = Layout(tmp_path)
    spec = VenvSpec("demo", ("octoprint==1.11.8",))
    venvs = layout.state_dir("demo") / "venvs"
    (venvs / spec.digest).mkdir(parents=True)
    (venvs / spec.digest / COMPLETE_MARKER).touch()
    venv_link(layout, "demo").symlink_to(link)
    assert current_venv(layout, "demo") is None and not is_current(layout, spec)
    assert _build_dir(layout, spec).name == spec.digest
    venv_link(layout, "demo").unlink()
    venv_link(layout, "demo").symlink_to(f"venvs/{spec.digest}")
    assert current_venv(layout, "demo") == venvs / spec.digest and is_current(layout, spec)


def test_the_marker_is_never_written_through_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("root's\n")
    os.utime(victim, (1_000_000, 1_000_000))
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / COMPLETE_MARKER).symlink_to(victim)
    assert not is_complete(venv), "a link is not the marker"
    _mark_complete(venv)
    assert (victim.read_text(), victim.stat().st_mtime) == ("root's\n", 1_000_000)
    assert stat.S_ISREG((venv / COMPLETE_MARKER).lstat().st_mode) and is_complete(venv)


def test_pruning_removes_a_link_and_never_what_it_points_to(tmp_path: Path) -> None:
    venvs = tmp_path / "venvs"
    (venvs / "new").mkdir(parents=True)
    outside = tmp_path / "outside"
    (outside / "keep").mkdir(parents=True)
    (outside / COMPLETE_MARKER).touch()
    (venvs / "planted").symlink_to(outside)
    _prune(Layout(tmp_path), venvs / "new")
    assert not (venvs / "planted").is_symlink() and (outside / "keep").is_dir()
