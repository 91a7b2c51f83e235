"""Every program the shipped units, the generated drop-ins, install.sh and the Debian maintainer
scripts call is installed on a minimal Debian by what octobrix declares: install.sh's PACKAGES
(for the script and the units it installs), the .deb's Depends (for the maintainer scripts and the
units it ships), or what every Debian has: systemd (octobrix needs it running), coreutils, and the
packages debootstrap's minbase installs (Essential: yes or Priority: required).

Found by trying it: `ExecReload=/bin/kill` (procps, Priority: important) was never applied on a
minimal Debian, which has no procps. Who provides a program is asked of dpkg on this (Debian)
machine; a declared package that is not installed here (udev, on a machine without systemd as
PID 1) is looked up in its .deb, fetched with `apt-get download`.

Shell scripts are parsed with shfmt's syntax tree, not with regular expressions, so a command in
a `$(...)`, a pipe or an `if` is found as the shell would run it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from octobrixd.config.model import parse_config
from octobrixd.render.tree import render_all
from tests.conftest import REPO, require_programs

PACKAGING = REPO / "packaging"
INSTALL_SH = PACKAGING / "install.sh"
MAINTAINER_SCRIPTS = [PACKAGING / "debian" / name for name in ("preinst", "postinst", "prerm", "postrm")]
UNITS = sorted(p for p in (REPO / "systemd").iterdir() if p.suffix in (".service", ".path"))
FARM = REPO / "tests" / "data" / "farm.toml"
SEARCH_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# Always there: octobrix refuses to install without systemd running, and coreutils is Essential.
EVERYWHERE = frozenset({"systemd", "coreutils"})
# Not from a Debian package, each for a reason a user can read in the README or docs/
NOT_PACKAGED = {
    "/opt/octobrix/": "octobrix's own venv, made by install.sh and postinst",
    "/var/lib/octobrix/": "each printer's own OctoPrint venv, made by octobrix",
    "/usr/local/bin/octobrixctl": "install.sh's link to octobrix's venv",
    "/usr/local/bin/octobrixd": "install.sh's link to octobrix's venv",
    "/usr/local/bin/mjpg_streamer": "mjpg-streamer: no distribution packages it; docs/cameras.md says how to build "
    "it, and apply warns when a camera asks for it and it is missing",
}
# sh builtins and keywords (dash): never a program.
BUILTINS = frozenset((
    ".", ":", "[", "alias", "bg", "break", "cd", "command", "continue", "echo", "eval", "exec", "exit",
    "export", "false", "fg", "getopts", "hash", "jobs", "kill", "local", "printf", "pwd", "read", "readonly",
    "return", "set", "shift", "test", "times", "trap", "true", "type", "ulimit", "umask", "unalias", "unset",
    "wait",
))  # fmt: skip
# Shell functions that run the command given after N words of their own.
WRAPPERS = {"logged": 2}
PROGRAM_PATH = re.compile(r"^/(?:usr/)?(?:local/)?s?bin/[^/\s]+$")
EXEC_LINE = re.compile(r"^(Exec[A-Za-z]+)=(.*)$", re.MULTILINE)


@dataclass(frozen=True)
class Call:
    program: str  # a command name or an absolute path
    where: str  # file:line, for the message

    def __str__(self) -> str:
        return f"{self.where}: {self.program}"


# --- what is declared ---------------------------------------------------------------------------


def install_sh_packages() -> frozenset[str]:
    text = INSTALL_SH.read_text()
    words: set[str] = set()
    for value in re.findall(r'^\s*PACKAGES="([^"]*)"', text, re.MULTILINE):
        words.update(value.split())
    # --with-kmod's own packages.
    for line in re.findall(r'^\s*install_packages "" (.*)$', text, re.MULTILINE):
        words.update(line.split())
    return frozenset(w for w in words if "$" not in w and '"' not in w)


def deb_depends() -> frozenset[str]:
    control = (PACKAGING / "debian" / "control.in").read_text()
    depends = next(line for line in control.splitlines() if line.startswith("Depends:"))
    names: set[str] = set()
    for item in depends.removeprefix("Depends:").split(","):
        # An alternative (a | b) counts only if each side would do; keep it simple: none used yet.
        assert "|" not in item, f"teach this test alternatives: {item}"
        names.add(item.split("(")[0].strip())
    return frozenset(names)


# --- what is called: units ----------------------------------------------------------------------


def unit_calls(name: str, text: str) -> Iterator[Call]:
    for match in EXEC_LINE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        command = match.group(2).strip().lstrip("@-:+!|")
        if command:
            yield Call(command.split()[0], f"{name}:{line}")


def shipped_unit_calls() -> list[Call]:
    return [call for unit in UNITS for call in unit_calls(f"systemd/{unit.name}", unit.read_text())]


def generated_calls() -> list[Call]:
    """What octobrix writes for a farm with every kind of entry (cameras with controls, both streamers)."""
    config = parse_config(FARM.read_text(), "/etc/octobrix.toml")
    calls: list[Call] = []
    for rel, rendered in render_all(config).items():
        if rel.suffix in (".conf",) and "systemd/system" in str(rel):
            calls += unit_calls(f"/{rel}", rendered.text)
        if rel.name == "octobrix.conf" and "sysusers.d" in str(rel):
            # Each instance user's login shell.
            for number, line in enumerate(rendered.text.splitlines(), 1):
                calls += [Call(word, f"/{rel}:{number}") for word in line.split() if PROGRAM_PATH.match(word)]
    return calls


# --- what is called: shell scripts --------------------------------------------------------------


def syntax_tree(script: Path) -> dict[str, Any]:
    require_programs("shfmt", deps="packaging.sh")
    parsed = subprocess.run(
        ["shfmt", "--to-json", "-ln", "posix"], input=script.read_text(), capture_output=True, text=True, check=True
    )
    tree: dict[str, Any] = json.loads(parsed.stdout)
    return tree


def nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from nodes(value)
    elif isinstance(node, list):
        for item in node:
            yield from nodes(item)


def word_text(word: dict[str, Any]) -> str | None:
    """A word as text, with `$NAME` for a parameter; None when it holds a command substitution."""
    out = []
    for part in word.get("Parts", []):
        kind = part.get("Type")
        if kind in ("Lit", "SglQuoted"):
            out.append(part["Value"])
        elif kind == "DblQuoted":
            inner = word_text(part)
            if inner is None:
                return None
            out.append(inner)
        elif kind == "ParamExp" and not part.get("Exp") and not part.get("Repl"):
            out.append("$" + part["Param"]["Value"])
        else:
            return None
    return "".join(out)


def script_calls(script: Path) -> tuple[list[Call], list[Call]]:
    """(calls, unresolved): every command the script runs, with its variables filled in from the
    script's own plain assignments (PREFIX=/opt/octobrix), and every absolute program path it names."""
    tree = syntax_tree(script)
    name = str(script.relative_to(REPO)) if script.is_relative_to(REPO) else script.name
    functions = {n["Name"]["Value"] for n in nodes(tree) if n.get("Type") == "FuncDecl"}
    values: dict[str, set[str]] = {}
    for node in nodes(tree):
        for assign in node.get("Assigns") or []:
            value = word_text(assign["Value"]) if assign.get("Value") else ""
            if value is not None and "$" not in value:
                values.setdefault(assign["Name"]["Value"], set()).add(value)

    def expand(text: str) -> list[str] | None:
        found = re.search(r"\$(\w+)", text)
        if not found:
            return [text]
        if found.group(1) not in values:
            return None
        out: list[str] = []
        for value in values[found.group(1)]:
            rest = expand(text[: found.start()] + value + text[found.end() :])
            if rest is None:
                return None
            out += rest
        return out

    calls: list[Call] = []
    unresolved: list[Call] = []
    for node in nodes(tree):
        line = f"{name}:{node.get('Pos', {}).get('Line', '?')}"
        if node.get("Type") == "CallExpr" and node.get("Args"):
            words = [word_text(w) for w in node["Args"]]
            commands = [words[0]]
            # install.sh's `logged WHAT COMMAND...` runs COMMAND (as "$@", checked here instead).
            if words[0] in WRAPPERS and len(words) > WRAPPERS[words[0]]:
                commands.append(words[WRAPPERS[words[0]]])
            if words[0] == "$@":
                continue
            # find -exec PROGRAM ...
            commands += [words[i + 1] for i, w in enumerate(words[:-1]) if words[0] == "find" and w == "-exec"]
            for command in commands:
                expanded = expand(command) if command is not None else None
                if expanded is None:
                    unresolved.append(Call(str(command), line))
                    continue
                calls += [Call(p, line) for p in expanded if p not in BUILTINS and p not in functions]
        # Program paths named as plain words: PYTHON=/usr/bin/python3.11, [ -x /usr/bin/python3 ].
        plain = [w for w in node.get("Args") or [] if isinstance(w, dict)]
        plain += [a["Value"] for a in node.get("Assigns") or [] if a.get("Value")]
        for word in plain:
            text = word_text(word)
            if text is not None and "$" not in text and PROGRAM_PATH.match(text):
                calls.append(Call(text, line))
    return calls, unresolved


# --- who provides a program ---------------------------------------------------------------------


def aliases(path: str) -> set[str]:
    """The names dpkg may know a path by: on a merged /usr, /bin/x is /usr/bin/x, and Debian 12's
    packages still ship most of them under /bin."""
    out = {path}
    for top in ("/bin/", "/sbin/", "/lib/"):
        if path.startswith(top):
            out.add("/usr" + path)
        if path.startswith("/usr" + top):
            out.add(path.removeprefix("/usr"))
    return out


_OWNERS: dict[str, frozenset[str]] = {}


def candidates(path: str) -> set[str]:
    names = aliases(path)
    if os.path.lexists(path):
        names |= aliases(os.path.realpath(path))  # alternatives: /usr/bin/awk -> mawk
    return names


def ask_dpkg(paths: set[str]) -> None:
    """Who owns each path, in one dpkg-query run (each run reads dpkg's whole file list)."""
    wanted = {p for p in paths if p not in _OWNERS}
    if not wanted:
        return
    names = set().union(*(candidates(p) for p in wanted))
    found = subprocess.run(["dpkg-query", "-S", *sorted(names)], capture_output=True, text=True, check=False)
    owners: dict[str, set[str]] = {}
    for line in found.stdout.splitlines():
        packages, _, owned = line.rpartition(": ")
        if owned in names and not packages.startswith("diversion"):
            owners.setdefault(owned, set()).update(p.strip().split(":")[0] for p in packages.split(","))
    for path in wanted:
        _OWNERS[path] = frozenset(set().union(*(owners.get(c, set()) for c in candidates(path))))


def dpkg_owners(path: str) -> frozenset[str]:
    ask_dpkg({path})
    return _OWNERS[path]


@functools.cache
def deb_files(package: str, scratch: Path) -> frozenset[str]:
    """The files of a package that is not installed on this machine, from its .deb."""
    folder = scratch / package
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", "-q", package], cwd=folder, capture_output=True, check=True)
    (deb,) = folder.glob("*.deb")
    listing = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True)
    names = subprocess.run(["tar", "-t"], input=listing.stdout, capture_output=True, check=True).stdout.decode()
    return frozenset("/" + n.removeprefix("./").rstrip("/") for n in names.splitlines())


@functools.cache
def installed(package: str) -> bool:
    status = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    ).stdout
    return status.endswith(" installed")


def search(program: str) -> list[str]:
    return [program] if program.startswith("/") else [f"{d}/{program}" for d in SEARCH_PATH]


def resolve(program: str, declared: frozenset[str], scratch: Path) -> tuple[str, set[str]]:
    """(path, packages providing it)."""
    paths = search(program)
    for path in paths:
        if os.path.lexists(path):
            # The first one found, as the shell's PATH search would.
            return path, set(dpkg_owners(path))
    for package in sorted(p for p in declared if not installed(p)):
        files = deb_files(package, scratch)
        for path in paths:
            if aliases(path) & files:
                return path, {package}
    return program, set()


@functools.cache
def always_there(package: str) -> bool:
    fields = subprocess.run(
        ["dpkg-query", "-W", "-f=${Essential} ${Priority}", package], capture_output=True, text=True, check=False
    ).stdout.split()
    if not fields:
        fields = subprocess.run(
            ["apt-cache", "show", "--no-all-versions", package], capture_output=True, text=True, check=False
        ).stdout.split()
        fields = ["yes" if "Essential: yes" in " ".join(fields) else "no", *fields]
    return package in EVERYWHERE or fields[0] == "yes" or "required" in fields[1:2]


@functools.cache
def brought_by(declared: frozenset[str]) -> frozenset[str]:
    """The declared packages and everything they depend on (python3 brings python3-minimal)."""
    shown = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
         "--no-breaks", "--no-replaces", "--no-enhances", *sorted(declared)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    names = {line.strip() for line in shown.splitlines() if line and not line.startswith(" ")}
    names |= {line.split(":", 1)[1].strip() for line in shown.splitlines() if "Depends:" in line}
    return frozenset(n.strip("<>") for n in names) | declared


def undeclared(calls: list[Call], declared: frozenset[str], scratch: Path) -> list[str]:
    problems = []
    brought = brought_by(declared)
    ask_dpkg({p for c in calls for p in search(c.program) if os.path.lexists(p)})
    for call in calls:
        if any(call.program.startswith(prefix) for prefix in NOT_PACKAGED):
            continue
        path, owners = resolve(call.program, declared, scratch)
        if not owners:
            problems.append(f"{call}: no package provides {path} (none installed here, none declared)")
        elif not owners & brought and not any(always_there(p) for p in owners):
            problems.append(
                f"{call}: {path} comes from {', '.join(sorted(owners))}, which is neither declared "
                f"nor on every Debian (declared: {' '.join(sorted(declared))})"
            )
    return problems


# --- the tests ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("debs")


def test_declared_package_lists_are_read() -> None:
    # What the checks below compare against, so a reshaped PACKAGES= cannot empty them silently.
    assert {"python3", "python3-venv", "ustreamer", "kmod", "udev"} <= install_sh_packages()
    assert {"python3", "python3-venv", "ustreamer", "kmod", "udev", "systemd"} <= deb_depends()


def test_every_call_is_found() -> None:
    # The lists the checks walk: a parser that finds nothing would pass everything.
    units = {c.program for c in shipped_unit_calls()}
    assert {"/opt/octobrix/bin/octobrixd", "/usr/bin/ustreamer", "/usr/bin/systemctl"} <= units
    assert "/usr/bin/v4l2-ctl" in {c.program for c in generated_calls()}
    calls, _ = script_calls(INSTALL_SH)
    assert {"apt-get", "systemctl", "udevadm", "/usr/bin/python3.11", "/opt/octobrix/bin/python"} <= {
        c.program for c in calls
    }
    calls, _ = script_calls(PACKAGING / "debian" / "postrm")
    assert {"userdel", "awk", "systemctl", "udevadm"} <= {c.program for c in calls}


def test_units_call_only_what_both_installers_declare(scratch: Path) -> None:
    calls = shipped_unit_calls() + generated_calls()
    for declared in (install_sh_packages(), deb_depends()):
        assert undeclared(calls, declared, scratch) == []


def test_install_sh_calls_only_what_it_installs(scratch: Path) -> None:
    calls, unresolved = script_calls(INSTALL_SH)
    # new_enough/python_version run the Python they are given: every such path is named
    # literally in the script, and so checked as a program path above.
    assert {c.program for c in unresolved} <= {"$1"}, unresolved
    assert undeclared(calls, install_sh_packages(), scratch) == []


@pytest.mark.parametrize("script", MAINTAINER_SCRIPTS, ids=lambda p: p.name)
def test_maintainer_scripts_call_only_what_the_package_depends_on(script: Path, scratch: Path) -> None:
    calls, unresolved = script_calls(script)
    assert unresolved == []
    assert undeclared(calls, deb_depends(), scratch) == []


def test_the_check_catches_an_undeclared_program(scratch: Path) -> None:
    # What the daemon's unit said before: /bin/kill is procps, not on a minimal Debian.
    calls = list(unit_calls("octobrixd.service", "[Service]\nExecReload=/bin/kill -HUP $MAINPID\n"))
    problems = undeclared(calls, deb_depends(), scratch)
    assert len(problems) == 1 and "procps" in problems[0], problems
    script = scratch / "script.sh"
    script.write_text("#!/bin/sh\nif true; then x=$(pgrep -x foo | head -n1); fi\n")
    calls, _ = script_calls(script)
    problems = undeclared(calls, install_sh_packages(), scratch)
    assert len(problems) == 1 and "pgrep" in problems[0] and "procps" in problems[0], problems
