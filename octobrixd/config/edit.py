"""Changes octobrix itself makes to /etc/octobrix.toml (a pin moved by `upgrade`, an entry added from
the overview page or `octobrixctl add`, one removed, an `import`): the user's comments, order and
layout are kept (tomlkit round-trips the file), the edited text is validated like any config before
the real file is replaced, and the file keeps its owner and mode.

Edits are pure functions on the text (text in, text out), so they are tested without a file; only
`edit_config_file` touches the system.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import Item, Table

from octobrixd.config.model import Config, load_config, parse_config, with_machine_defaults
from octobrixd.errors import ConfigError, OctobrixError
from octobrixd.system import fsutil

log = logging.getLogger(__name__)

Edit = Callable[[str], str]


def _document(text: str) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(text)
    except TOMLKitError as exc:
        raise ConfigError(
            [f"not valid TOML: {exc}"], hint="fix the file by hand first (`octobrixctl check` names the line)"
        ) from None


def _entry(document: tomlkit.TOMLDocument, section: str, name: str) -> Table:
    table = document.get(section, {}).get(name)
    if not isinstance(table, Table):
        raise OctobrixError(
            f"there is no [{section}.{name}] in the config", hint=f"`octobrixctl status` lists the {section} there are"
        )
    return table


def set_value(text: str, section: str, name: str, key: str, value: Any) -> str:
    """[section.name] key = value; a key that is there keeps its place, spacing and trailing comment."""
    document = _document(text)
    table = _entry(document, section, name)
    new = tomlkit.item(value)
    if key in table:
        old = table.item(key)
        if isinstance(old, Item):
            for attribute in ("indent", "comment_ws", "comment", "trail"):
                setattr(new.trivia, attribute, getattr(old.trivia, attribute))
    table[key] = new
    return tomlkit.dumps(document)


def remove_value(text: str, section: str, name: str, key: str) -> str:
    document = _document(text)
    table = _entry(document, section, name)
    if key in table:
        del table[key]
    return tomlkit.dumps(document)


_HEADER = re.compile(r"^\s*\[")


def _entry_header(section: str) -> re.Pattern[str]:
    return re.compile(rf"^\s*\[\s*{re.escape(section)}\s*\.")


def add_entry(text: str, section: str, name: str, values: Mapping[str, Any], *, comment: str = "") -> str:
    """Add [section.name] with values right after the section's last entry (before any comments that
    follow it, which usually introduce what comes next), or at the end of the file."""
    document = _document(text)
    existing = document.get(section)
    if isinstance(existing, Table) and name in existing:
        raise OctobrixError(
            f"[{section}.{name}] is already in the config", hint="choose another name, or edit that entry"
        )
    entry = tomlkit.document()
    if comment:
        entry.add(tomlkit.comment(comment))
    entry.add(section, {name: dict(values)})
    block = tomlkit.dumps(entry).strip("\n").splitlines()

    lines = text.splitlines()
    headers = [i for i, line in enumerate(lines) if _entry_header(section).match(line)]
    if not headers:
        new_lines = [*lines, *([""] if lines and lines[-1].strip() else []), *block]
    else:
        end = next((i for i in range(headers[-1] + 1, len(lines)) if _HEADER.match(lines[i])), len(lines))
        last = max(i for i in range(headers[-1], end) if lines[i].strip() and not lines[i].lstrip().startswith("#"))
        new_lines = [*lines[: last + 1], "", *block, *lines[last + 1 :]]
    new_text = "\n".join(new_lines) + "\n"
    _document(new_text)
    return new_text


def remove_entry(text: str, section: str, name: str) -> str:
    document = _document(text)
    _entry(document, section, name)
    del document[section][name]
    return tomlkit.dumps(document)


def edited(text: str, edits: Iterable[Edit]) -> str:
    """The text after each edit in turn (pure: nothing is read or written)."""
    for edit in edits:
        text = edit(text)
    return text


def checked(text: str, source: str) -> Config:
    """The config the edited text describes; raises ConfigError (naming the key path) when it is wrong."""
    return with_machine_defaults(parse_config(text, source), "localhost")


def edit_config_file(path: Path, *edits: Edit) -> Config:
    """Apply edits to the file at path: validated on a temp copy first, then renamed over the file
    (owner and mode kept). Nothing is written when an edit or the validation fails."""
    load_config(path)  # refuse to build on a file that is already broken or writable by others
    text = path.read_text(encoding="utf-8")
    new_text = edited(text, edits)
    info = path.stat()
    temp = fsutil.stage(path, new_text, mode=info.st_mode & 0o7777)
    try:
        # The copy on disk is what is checked, so what is renamed into place is what passed.
        parse_config(temp.read_text(encoding="utf-8"), str(path))
        fsutil.commit(temp, path, uid=info.st_uid, gid=info.st_gid)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    log.info("edited %s", path)
    return load_config(path)
