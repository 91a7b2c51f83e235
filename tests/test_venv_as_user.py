"""Root never runs a printer's venv: what must run there (pip's resolver for `upgrade --check`) runs as
the printer's user in a scrubbed environment, and asking the package index needs no printer venv at
all. Real venvs, the real `nobody` user, Debian's real pip; a plugin gone bad is a .pth file in the
venv's site-packages that leaves a mark saying who ran it."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from octobrixd.cli import upgrade as upgrade_cli
from octobrixd.config.model import parse_config
from octobrixd.errors import OctobrixError
from octobrixd.instances.instance import Instance
from octobrixd.system.paths import Layout
from octobrixd.upgrades import plugin_check, versions
from tests.test_plugins_carry import SITE, dist

NOBODY = pwd.getpwnam("nobody")
IDS = (NOBODY.pw_uid, NOBODY.pw_gid)
PIN = "octoprint==1.11.7"
# Runs whenever the venv's Python starts; as root it would own the computer.
HOSTILE = """\
import json, os, sys
MARKS = {marks!r}
if os.getuid() == 0:
    open(os.path.join(MARKS, "ran-as-root"), "w").close()
else:
    fds = {{}}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            pass
    seen = {{"uid": os.getuid(), "groups": os.getgroups(), "env": dict(os.environ), "fds": fds,
            "isolated": sys.flags.isolated, "argv": sys.argv}}
    with open(os.path.join(MARKS, "ran-as-user"), "w") as out:
        json.dump(seen, out)
"""


def chown_tree(top: Path, ids: tuple[int, int]) -> None:
    for entry in [top, *top.rglob("*")]:
        os.chown(entry, *ids, follow_symlinks=False)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder nobody can pass through (pytest's own is 0700, and every pytest that starts, another
    test run's too, makes it 0700 again)."""
    folder = Path(tempfile.mkdtemp(prefix="octobrix-test-"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def printer(shared: Path, monkeypatch: pytest.MonkeyPatch) -> Instance:
    """Printer ender's real venv (its Python, Debian's pip through the system site), handed to its user
    (here nobody), with OctoPrint 1.11.7, a Plugin Manager plugin and a hostile .pth file."""
    instance = Instance("ender", Layout(shared / "root"))
    built = instance.venvs / "abc"
    subprocess.run(
        ["/usr/bin/python3", "-m", "venv", "--without-pip", "--system-site-packages", str(built)], check=True
    )
    dist(built, "OctoPrint", "1.11.7")
    dist(built, "OctoPrint-Labplug", "0.1.0", plugin=True, requested=True)
    marks = shared / "marks"
    marks.mkdir()
    (built / SITE / "_hostile.py").write_text(HOSTILE.format(marks=str(marks)))
    (built / SITE / "zz-hostile.pth").write_text("import _hostile\n")
    instance.venv.symlink_to(Path("venvs") / "abc")
    chown_tree(built, IDS)
    os.chown(marks, *IDS)
    monkeypatch.setattr(Instance, "ids", lambda _self: IDS)
    return instance


def marks(instance: Instance) -> Path:
    return instance.layout.root.parent / "marks"


def seen_as_user(instance: Instance) -> dict[str, object]:
    found = marks(instance) / "ran-as-user"
    assert found.exists(), "the venv's code never ran: the test proves nothing"
    seen: dict[str, object] = json.loads(found.read_text())
    return seen


def test_the_mark_works_the_venvs_code_run_as_root_leaves_one(printer: Instance) -> None:
    """The control for every test below: the hostile file runs under -I, and tells root from nobody."""
    subprocess.run([str(printer.python), "-I", "-c", "pass"], check=True)
    assert (marks(printer) / "ran-as-root").exists()


def test_the_venvs_python_runs_as_its_user_with_nothing_of_roots_environment_or_descriptors(
    printer: Instance, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PYTHONPATH", "/root/evil")
    monkeypatch.setenv("PIP_INDEX_URL", "http://evil.invalid/simple")
    secret = tmp_path / "roots-secret"
    secret.write_text("x")
    held = os.open(secret, os.O_RDONLY)
    os.set_inheritable(held, True)  # even a descriptor root left inheritable stays behind
    try:
        done = printer.run_in_venv(["site"], ids=IDS, doing="say where it looks")
    finally:
        os.close(held)
    assert "ENABLE_USER_SITE: False" in done.stdout, done.stdout  # -I: no user site
    assert not (marks(printer) / "ran-as-root").exists()
    seen = seen_as_user(printer)
    assert seen["uid"] == NOBODY.pw_uid and seen["groups"] == [] and seen["isolated"] == 1
    env = seen["env"]
    assert isinstance(env, dict)
    assert env["HOME"] == str(printer.home) == str(printer.state_dir / "home")
    assert env["PATH"] == "/usr/bin:/bin" and env["PYTHONUNBUFFERED"] == "1"
    assert not [k for k in env if k.startswith("PYTHON") and k != "PYTHONUNBUFFERED"], env
    assert "PIP_INDEX_URL" not in env and env["PIP_NO_INPUT"] == "1", env
    fds = seen["fds"]
    assert isinstance(fds, dict)
    assert str(secret) not in fds.values(), fds
    # Its stdio, and what Python itself has open at that moment (the .pth file, the listing of fds).
    venv = str(printer.venv.resolve())
    others = {k: v for k, v in fds.items() if not v.startswith((venv, "/proc/"))}
    assert others.keys() <= {"0", "1", "2"}, fds


def test_a_venv_that_fails_is_one_line_naming_the_printer(printer: Instance) -> None:
    with pytest.raises(OctobrixError) as caught:
        printer.run_in_venv(["no_such_module"], ids=IDS, doing="run no_such_module")
    assert str(caught.value).startswith("the venv of ender could not run no_such_module: ")
    assert "No module named no_such_module" in str(caught.value)
    assert caught.value.hint is not None and "sudo -u octobrix-ender" in caught.value.hint
    assert not (marks(printer) / "ran-as-root").exists() and seen_as_user(printer)


def test_no_venv_yet_says_to_apply_and_runs_nothing(tmp_path: Path) -> None:
    with pytest.raises(OctobrixError, match="printer ender has no OctoPrint installed yet") as caught:
        Instance("ender", Layout(tmp_path)).run_in_venv(["site"], ids=IDS, doing="x")
    assert caught.value.hint == "run `sudo octobrixctl apply` first"


def wheel(folder: Path, name: str, version: str, requires: Sequence[str] = ()) -> Path:
    """A pure-Python wheel as a build backend leaves it."""
    module = name.lower().replace("-", "_")
    info = f"{module}-{version}.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", *(f"Requires-Dist: {r}" for r in requires)]
    files = {
        f"{module}/__init__.py": "",
        f"{info}/METADATA": "\n".join(meta) + "\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in [*files, f"{info}/RECORD"])
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for entry, text in files.items():
            archive.writestr(entry, text)
    return path


def test_upgrade_check_judges_a_plugin_with_real_pip_as_the_printers_user_never_as_root(
    printer: Instance, shared: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wheels = shared / "wheels"
    wheels.mkdir()
    wheel(wheels, "OctoPrint-Labplug", "0.2.0", ["OctoPrint>=1.10"])
    wheel(wheels, "OctoPrint-Labplug", "0.3.0", ["OctoPrint>=1.12"])
    text = f'[octobrix]\nwheels = "{wheels}"\n\n[printers.ender]\nvirtual = true\nport = 5600\noctoprint = "{PIN}"\n'

    def no_root_pip(*_args: object, **_kw: object) -> None:
        raise AssertionError("offline, octobrix's own pip has nothing to ask")

    monkeypatch.setattr(versions, "run", no_root_pip)
    rc = upgrade_cli.check(parse_config(text, str(shared / "octobrix.toml")), printer.layout, ["ender"], None, False)
    out = capsys.readouterr().out
    assert rc == 0, out
    lab = next(line for line in out.splitlines() if "OctoPrint-Labplug" in line)
    assert f"0.1.0 -> 0.2.0  fits {PIN}; 0.3.0 does not" in lab, out
    assert f"upload {wheels}/OctoPrint_Labplug-0.2.0-py3-none-any.whl" in lab, lab
    assert "octoprint-labplug 0.3.0 depends on OctoPrint>=1.12" in lab, "pip's own reason, read as the user"
    assert not (marks(printer) / "ran-as-root").exists(), "the printer's code ran as root"
    seen = seen_as_user(printer)
    argv = seen["argv"]
    assert isinstance(argv, list) and argv[0] == "-m" and "--dry-run" in argv, seen  # pip itself, as nobody
    assert seen["uid"] == NOBODY.pw_uid


def test_a_report_planted_as_a_link_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"install": [{"metadata": {"name": "x", "version": "6.6.6"}}]}))
    planted = tmp_path / "report.json"
    planted.symlink_to(secret)
    assert plugin_check.read_report(planted) == ""
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    assert plugin_check.read_report(fifo) == "", "a FIFO neither blocks nor is read"
    planted.unlink()
    planted.write_text('{"install": []}')
    assert plugin_check.read_report(planted) == '{"install": []}'


def test_the_package_index_is_asked_by_octobrixs_own_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[list[str], dict[str, object]]] = []

    def fake(argv: Sequence[str], **kw: object) -> subprocess.CompletedProcess[str]:
        asked.append(([str(a) for a in argv], kw))
        listing = "octoprint (1.11.8)\nAvailable versions: 1.11.8, 1.11.7\n"
        return subprocess.CompletedProcess(list(argv), 0, listing, "")

    monkeypatch.setattr(versions, "run", fake)
    assert versions.from_index() == ["1.11.8", "1.11.7"]
    [(argv, kw)] = asked
    assert argv[:4] == [sys.executable, "-I", "-m", "pip"] and argv[-3:] == ["index", "versions", "octoprint"]
    assert "as_user" not in kw
