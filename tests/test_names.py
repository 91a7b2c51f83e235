"""The names octobrix gives things are spelled in octobrixd/names.py only: a link path, unit name or
udev mark built by hand elsewhere would drift from what the rules and units really say."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from octobrixd import names
from octobrixd.config.model import parse_config
from octobrixd.devices import hotplug
from octobrixd.names import DeviceKind
from octobrixd.render.udev import render_udev_rules

PACKAGE = Path(__file__).resolve().parent.parent / "octobrixd"

# What a spelling looks like in a string literal, with each {...} of an f-string as "{}".
SPELLINGS = {
    "a /dev/octobrix link": re.compile(re.escape("/dev/octobrix/")),
    "an OctoPrint unit": re.compile(r"octoprint@"),
    "an instance unit": re.compile(r"@\{\}\.service"),
    "an instance user": re.compile(r"octobrix-\{\}"),
    "a udev mark": re.compile(r"OCTOBRIX_(NAME|KIND)\b"),
    "the drop-in's name": re.compile(re.escape(names.DROPIN_NAME)),
}


def _docstrings(tree: ast.AST) -> set[int]:
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    }


def _literals(source: str) -> list[tuple[int, str]]:
    """Every string literal but docstrings, as (line, text), f-strings with their fields as {}."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    inner = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(str(v.value) if isinstance(v, ast.Constant) else "{}" for v in node.values)
            found.append((node.lineno, text))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip | inner:
            found.append((node.lineno, node.value))
    return found


def spelled(source: str) -> list[str]:
    return [
        f"{line}: {what} ({text!r})"
        for line, text in _literals(source)
        for what, pattern in SPELLINGS.items()
        if pattern.search(text)
    ]


def test_the_check_sees_a_name_built_by_hand() -> None:
    source = (
        '"""A docstring may say /dev/octobrix/NAME and octoprint@NAME.service."""\n'
        "def f(name, streamer):\n"
        '    """So may this one: OCTOBRIX_NAME."""\n'
        '    return [f"/dev/octobrix/{name}", f"{streamer}@{name}.service", "octoprint@x",\n'
        '            f"octobrix-{name}", \'ENV{OCTOBRIX_KIND}="camera"\', "x.d/50-octobrix.conf"]\n'
    )
    assert [s.split(" (")[0] for s in spelled(source)] == [
        "4: a /dev/octobrix link",
        "4: an instance unit",
        "4: an OctoPrint unit",
        "5: an instance user",
        "5: a udev mark",
        "5: the drop-in's name",
    ]


@pytest.mark.parametrize(
    "module",
    sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "names.py"),
)
def test_octobrixd_spells_its_names_only_in_names_py(module: str) -> None:
    found = spelled((PACKAGE / module).read_text(encoding="utf-8"))
    assert not found, f"octobrixd/{module} spells names that names.py owns: {found}"


def test_the_rules_set_the_marks_that_hotplug_reads() -> None:
    toml = '[printers.mk3]\nserial = "P1"\nport = 5001\n[cameras.cam]\nserial = "C1"\nport = 8081\n'
    config = parse_config(toml, "/x")
    rules = render_udev_rules(config)
    for name, kind in (("mk3", DeviceKind.PRINTER), ("cam", DeviceKind.CAMERA)):
        assert f'ENV{{{names.NAME_PROPERTY}}}="{name}", ENV{{{names.KIND_PROPERTY}}}="{kind}"' in rules
        assert f'SYMLINK+="{names.udev_symlink(name)}"' in rules


@pytest.mark.parametrize(
    ("marked", "kind"), [("printer", DeviceKind.PRINTER), ("camera", DeviceKind.CAMERA), ("hub", None), (None, None)]
)
def test_hotplug_reads_the_kind_the_rules_marked(marked: str | None, kind: DeviceKind | None) -> None:
    # A stand-in for pyudev's device (only its properties are read); the lab VM's hotplug tests
    # plug real devices under the real rules.
    properties = {"ID_BUS": "usb"} | ({names.NAME_PROPERTY: "mk3", names.KIND_PROPERTY: marked} if marked else {})
    device = SimpleNamespace(properties=properties, subsystem="tty", device_node="/dev/ttyACM0")
    event = hotplug.record(device, "add")
    assert event.name == ("mk3" if marked else None) and event.kind is kind


@pytest.mark.parametrize(
    "module",
    sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "systemd.py"),
)
def test_systemctl_is_run_only_through_the_systemd_boundary(module: str) -> None:
    # A "systemctl" literal of its own is a command line's program: hints that mention it say more.
    calls = [line for line, text in _literals((PACKAGE / module).read_text(encoding="utf-8")) if text == "systemctl"]
    assert not calls, f"octobrixd/{module} runs systemctl itself (lines {calls}): use octobrixd/systemd.py"
