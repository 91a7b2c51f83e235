"""Hostile configs, generated: every one is either rejected with clear, located messages or renders
files in which no value from the input escapes its place (udev rule values, unit environment).

OCTOBRIX_FUZZ_EXAMPLES raises the number of cases (default 600 per property).
"""

from __future__ import annotations

import os
import re
import string
from typing import Any

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from octobrixd.config.model import parse_config
from octobrixd.errors import ConfigError
from octobrixd.render.tree import render_all

SRC = "/etc/octobrix.toml"
EXAMPLES = int(os.environ.get("OCTOBRIX_FUZZ_EXAMPLES", "600"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HOSTILE = ['"', "\\", "\n", "%", "$", ";", "..", "/", "*", "?", "[", "|", "`", "'", " ", "\t", "\x00", "é", "𝕏"]
hostile_text = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from([*HOSTILE, "a", "1", "-", ".", ":"]), max_size=12).map("".join),
    st.text(alphabet=string.ascii_letters + string.digits + ".-_:", min_size=1, max_size=20),
    st.just("x" * 5000),
)
scalar = st.one_of(hostile_text, st.integers(-(2**40), 2**40), st.booleans(), st.floats(allow_nan=False))
value = st.one_of(scalar, st.lists(scalar, max_size=3))
names = st.one_of(hostile_text, st.sampled_from(["printer1", "cam1", "demo", "p-2"]))
printer_keys = st.sampled_from(
    ["serial", "usb_port", "virtual", "port", "baudrate", "camera", "octoprint", "plugins", "bogus"]
)
camera_keys = st.sampled_from(
    ["serial", "usb_port", "device_name", "resolution", "fps", "format", "port", "streamer", "nope"]
)
controls = st.dictionaries(st.one_of(hostile_text, st.sampled_from(["focus_absolute", "gain"])), value, max_size=3)
entry = st.one_of(
    st.dictionaries(st.one_of(printer_keys, camera_keys), value, max_size=6),
    st.dictionaries(camera_keys, value, max_size=5).flatmap(
        lambda base: controls.map(lambda table: {**base, "controls": table})
    ),
)
document = st.fixed_dictionaries(
    {},
    optional={
        "octobrix": st.dictionaries(
            st.sampled_from(["octoprint", "listen", "streamer", "wheels", "public_host", "x"]), value
        ),
        "printers": st.dictionaries(names, entry, max_size=3),
        "cameras": st.dictionaries(names, entry, max_size=2),
        "uvcvideo": st.dictionaries(st.sampled_from(["max_compressed_payload", "uncompressed_bandwidth_fix"]), value),
    },
)

# What a generated value may look like where it lands: udev match/assign values and unit environment.
UDEV_VALUE = re.compile(r"^[A-Za-z0-9._:/*?\[\]|+ -]*$")
# A camera's V4L2 name is the device's own text: any printable character but quotes, escapes,
# glob syntax and substitutions.
UDEV_NAME_VALUE = re.compile(r'^[^"\\*?\[\]|%$\x00-\x1f\x7f]+$')
UDEV_RULE = re.compile(r'^(?:[A-Z_]+(?:\{[A-Za-z_]+\})?(?:==|!=|\+=|=)"[^"\\\n]*"(?:, |$))+$')
# The only option octobrix sets: the lower link priority of a board's second serial port.
UDEV_OPTION = re.compile(r"^link_priority=-?\d+$")
ENVIRONMENT = re.compile(r'^Environment=(?:[A-Z_]+=[A-Za-z0-9.:_-]*|"[A-Z_]+=[A-Za-z0-9.:_ -]*")$')
CONTROL = re.compile(r"^ExecStartPre=-/usr/bin/v4l2-ctl --device=/dev/octobrix/%i --set-ctrl=[a-z][a-z0-9_]*=-?\d+$")
LOCATED = re.compile(rf"^{re.escape(SRC)}:\d+: ")


def check_rendered(files: dict[Any, Any]) -> None:
    for path, rendered in files.items():
        text = rendered.text
        assert "\x00" not in text and "\r" not in text, path
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            if str(path).endswith(".rules"):
                assert UDEV_RULE.match(line), line
                for key, quoted in re.findall(r'([A-Z_]+(?:\{[A-Za-z_]+\})?)(?:==|!=|\+=|=)"([^"]*)"', line):
                    pattern = {"ATTR{name}": UDEV_NAME_VALUE, "OPTIONS": UDEV_OPTION}.get(key, UDEV_VALUE)
                    assert pattern.match(quoted), (path, quoted)
            elif str(path).endswith(".conf") and "systemd" in str(path) and line.startswith("Environment="):
                assert ENVIRONMENT.match(line), (path, line)
            elif str(path).endswith(".conf") and "systemd" in str(path) and line.startswith("ExecStartPre="):
                assert CONTROL.match(line), (path, line)


@FUZZ
@given(document)
def test_generated_configs_are_rejected_clearly_or_render_safely(doc: dict[str, Any]) -> None:
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):
        return  # not representable as TOML at all (e.g. NUL in a key): nothing a user could write
    try:
        config = parse_config(text, SRC)
    except ConfigError as error:
        assert error.problems
        for problem in error.problems:
            assert LOCATED.match(problem), problem
            assert "Traceback" not in problem
        return
    check_rendered(render_all(config))


@FUZZ
@given(st.text(max_size=300))
def test_any_text_is_a_config_or_a_located_error(text: str) -> None:
    try:
        parse_config(text, SRC)
    except ConfigError as error:
        assert all(problem.startswith(f"{SRC}") for problem in error.problems)


BASE = {
    "printers": {
        "printer1": {"serial": "CZPX1919X004XC24974", "port": 5001, "camera": "cam1"},
        "printer2": {"usb_port": "1-1.2", "port": 5002},
    },
    "cameras": {"cam1": {"serial": "SN0001", "port": 8081}},
}
FIELDS = [
    ("printers", "printer1", "serial"),
    ("printers", "printer2", "usb_port"),
    ("printers", "printer1", "camera"),
    ("printers", "printer1", "octoprint"),
    ("cameras", "cam1", "serial"),
    ("cameras", "cam1", "resolution"),
    ("cameras", "cam1", "device_name"),
    ("octobrix", "", "public_host"),
]


@FUZZ
@given(st.sampled_from(FIELDS), hostile_text)
def test_one_hostile_value_in_a_good_config(field: tuple[str, str, str], hostile: str) -> None:
    section, name, key = field
    doc: dict[str, Any] = {s: {n: dict(e) for n, e in entries.items()} for s, entries in BASE.items()}
    if section == "octobrix":
        doc["octobrix"] = {key: hostile}
    else:
        if key == "device_name":
            del doc[section][name]["serial"]
        doc[section][name][key] = hostile
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):
        return
    try:
        config = parse_config(text, SRC)
    except ConfigError as error:
        where = f"{section}.{key}" if section == "octobrix" else f"{section}.{name}.{key}"
        assert any(f": {where}: " in problem for problem in error.problems), error.problems
        return
    check_rendered(render_all(config))
