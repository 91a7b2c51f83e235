"""`octobrix_toml`: inventory data (a mapping of tables) as the text of /etc/octobrix.toml.

Values from the inventory are quoted here, never pasted into the template: a serial number with a
quote, a backslash or a newline in it still makes a valid TOML file (octobrix itself then says
whether it accepts that serial), and a value TOML cannot hold (a float where octobrix wants none,
a date, None) fails the run with its key path before anything is written to the farm computer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
# TOML basic strings may not hold control characters (U+0000-U+001F, U+007F) as they are.
ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in ESCAPES:
            out.append(ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_key(key: object, path: str) -> str:
    if not isinstance(key, str) or not key:
        raise AnsibleFilterError(f"octobrix_config: {path}{key!r}: a key must be a non-empty string")
    return key if BARE_KEY.match(key) else toml_string(key)


def toml_value(value: object, path: str) -> str:
    # bool before int: True is an int in Python.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(item, f"{path}[{i}]") for i, item in enumerate(value)) + "]"
    raise AnsibleFilterError(
        f"octobrix_config: {path}: {type(value).__name__} {value!r} is not a string, whole number, "
        "true/false or list of those (hint: quote it in the inventory)"
    )


def _table(header: str, body: Mapping[Any, Any], path: str) -> list[str]:
    lines = [f"[{header}]"]
    for key, value in body.items():
        if isinstance(value, Mapping):
            raise AnsibleFilterError(
                f"octobrix_config: {path}.{key}: a table inside {path}, which octobrix does not have "
                "(hint: see the config reference, docs/config.md in octobrix)"
            )
        lines.append(f"{toml_key(key, path + '.')} = {toml_value(value, f'{path}.{key}')}")
    return [*lines, ""]


def octobrix_toml(tables: object) -> str:
    """Top-level tables ([octobrix], [frontdoor], ...) and the named ones ([printers.NAME],
    [cameras.NAME]: a mapping of mappings) in the order the inventory gives them."""
    if not isinstance(tables, Mapping):
        raise AnsibleFilterError("octobrix_config: must be a mapping of tables (octobrix, frontdoor, printers, ...)")
    lines: list[str] = []
    for table, body in tables.items():
        key = toml_key(table, "")
        if body is None or body == {}:
            continue
        if not isinstance(body, Mapping):
            raise AnsibleFilterError(f"octobrix_config: {table}: must be a table (a mapping), not {body!r}")
        if all(isinstance(entry, Mapping) for entry in body.values()):
            for name, entry in body.items():
                lines += _table(f"{key}.{toml_key(name, table + '.')}", entry, f"{table}.{name}")
        else:
            lines += _table(key, body, table)
    return "\n".join(lines)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"octobrix_toml": octobrix_toml}
