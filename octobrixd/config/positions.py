"""Line numbers for TOML key paths.

tomllib gives values but no positions, and an error message without a line sends users
hunting. This scanner understands the parts of TOML a config file uses — [table] headers,
dotted and quoted keys, key = value lines, multi-line strings and arrays — well enough to
map ("printers", "printer1", "port") to the line the user wrote it on.
"""

from __future__ import annotations

import re

_BARE_KEY = r"[A-Za-z0-9_-]+"
_KEY_PART = rf'(?:{_BARE_KEY}|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED_KEY = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_HEADER_RE = re.compile(rf"^\s*\[\s*({_DOTTED_KEY})\s*\]\s*(?:#.*)?$")
_ARRAY_HEADER_RE = re.compile(rf"^\s*\[\[\s*({_DOTTED_KEY})\s*\]\]")
_KEYVAL_RE = re.compile(rf"^\s*({_DOTTED_KEY})\s*=")
_PART_RE = re.compile(_KEY_PART)


def split_key(dotted: str) -> tuple[str, ...]:
    parts = []
    for match in _PART_RE.finditer(dotted):
        part = match.group(0)
        if part[0] in "\"'":
            part = part[1:-1]
            if match.group(0)[0] == '"':
                part = part.encode("utf-8").decode("unicode_escape") if "\\" in part else part
        parts.append(part)
    return tuple(parts)


class KeyLocator:
    """Maps key paths to 1-based line numbers of the text they were parsed from."""

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        skip_until: str | None = None
        depth = 0
        for number, line in enumerate(text.splitlines(), start=1):
            if skip_until is not None:
                if line.count(skip_until) % 2 == 1:
                    skip_until = None
                continue
            if depth > 0:
                depth += _bracket_balance(line)
                continue
            array_header = _ARRAY_HEADER_RE.match(line)
            if array_header:
                # Arrays of tables are not part of octobrix's schema; point errors at them anyway.
                table = split_key(array_header.group(1))
                self.lines.setdefault(table, number)
                continue
            header = _HEADER_RE.match(line)
            if header:
                table = split_key(header.group(1))
                for length in range(1, len(table) + 1):
                    self.lines.setdefault(table[:length], number)
                continue
            keyval = _KEYVAL_RE.match(line)
            if keyval:
                path = table + split_key(keyval.group(1))
                self.lines.setdefault(path, number)
                for length in range(len(table) + 1, len(path)):
                    self.lines.setdefault(path[:length], number)
                rest = line[keyval.end() :]
                for quote in ('"""', "'''"):
                    if rest.count(quote) % 2 == 1:
                        skip_until = quote
                depth = _bracket_balance(rest)

    def line_of(self, path: tuple[str, ...]) -> int:
        """The line of the longest prefix of path that appears in the text (1 if none does)."""
        for length in range(len(path), 0, -1):
            if path[:length] in self.lines:
                return self.lines[path[:length]]
        return 1


def _bracket_balance(text: str) -> int:
    # Brackets inside strings are rare in a config; strings are stripped first to be safe.
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'', "", text.split("#", 1)[0])
    return stripped.count("[") + stripped.count("{") - stripped.count("]") - stripped.count("}")
