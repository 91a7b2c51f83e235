"""The config reference, docs/config.md, made from the models: every key of /etc/octobrix.toml with
its type, default and meaning, as config/model.py and config/values.py define them.

    python -m octobrixd.config.reference > docs/config.md

tests/test_config_reference.py fails when docs/config.md differs from what this makes now.
"""

from __future__ import annotations

import inspect
import json
import sys
import types
from collections.abc import Iterator
from enum import Enum
from typing import Annotated, Any, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from octobrixd.config.model import Config
from octobrixd.config.values import NAME_MAX, Shape
from octobrixd.names import device_link

COMMAND = "python -m octobrixd.config.reference > docs/config.md"

_WORDS: dict[Any, tuple[str, str]] = {
    str: ("string", "strings"),
    int: ("whole number", "whole numbers"),
    bool: ("`true` or `false`", "`true` or `false`"),
}


def _peel(annotation: Any) -> tuple[Any, list[Any]]:
    """The type under Optional and Annotated, with the Annotated metadata met on the way."""
    metadata: list[Any] = []
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation, *more = get_args(annotation)
            metadata.extend(more)
        elif origin in (Union, types.UnionType):
            kept = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(kept) != 1:
                raise TypeError(f"the reference cannot describe {annotation!r}")
            annotation = kept[0]
        else:
            return annotation, metadata


def _table_model(annotation: Any) -> tuple[type[BaseModel], bool] | None:
    """(model, named) when a field is a table of its own: [key] (named False) or [key.NAME] (named True)."""
    base, _ = _peel(annotation)
    if isinstance(base, type) and issubclass(base, BaseModel):
        return base, False
    if get_origin(base) is dict:
        value, _ = _peel(get_args(base)[1])
        if isinstance(value, type) and issubclass(value, BaseModel):
            return value, True
    return None


def _limits(metadata: list[Any]) -> list[str]:
    low = next((m.ge for m in metadata if isinstance(m, annotated_types.Ge)), None)
    high = next((m.le for m in metadata if isinstance(m, annotated_types.Le)), None)
    said = [m.text for m in metadata if isinstance(m, Shape)]
    if low is not None and high is not None:
        said.insert(0, f"{low} to {high}" if str(low).startswith("-") else f"{low}–{high}")
    elif low is not None:
        said.insert(0, f"at least {low}")
    elif high is not None:
        said.insert(0, f"at most {high}")
    return said


def _kind(base: Any, plural: bool = False) -> str:
    if isinstance(base, type) and issubclass(base, Enum):
        return "one of " + ", ".join(f'`"{member.value}"`' for member in base)
    if base in _WORDS:
        return _WORDS[base][plural]
    raise TypeError(f"the reference has no words for {base!r}")


def type_words(field: FieldInfo) -> str:
    """A field's type in words, with what its checks allow."""
    base, metadata = _peel(field.annotation)
    metadata = [*field.metadata, *metadata]
    origin = get_origin(base)
    if origin in (tuple, list):
        item, item_metadata = _peel(get_args(base)[0])
        words = f"list of {_kind(item, plural=True)}"
        metadata = [*metadata, *item_metadata]
    elif origin is dict:
        value, value_metadata = _peel(get_args(base)[1])
        words = f"table of {_kind(value, plural=True)}"
        metadata = [*metadata, *value_metadata]
    else:
        words = _kind(base)
    said = _limits(metadata)
    return f"{words}: {'; '.join(said)}" if said else words


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return _toml(value.value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {_toml(item)}" for key, item in value.items()) + " }" if value else "{}"
    raise TypeError(f"the reference cannot write the default {value!r}")


def default_words(field: FieldInfo) -> str:
    """A field's default as it would be written in the file; "required" or "unset" (left out)."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    return "unset" if value is None else f"`{_toml(value)}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _paragraph(model: type[BaseModel]) -> str:
    return " ".join(inspect.cleandoc(model.__doc__ or "").split())


def _table(prefix: str, model: type[BaseModel]) -> str:
    """The Markdown of the table [prefix]: its keys, not its sub-tables (those follow as tables of their own)."""
    rows = [
        "| "
        + " | ".join(
            _cell(cell) for cell in (f"`{key}`", type_words(field), default_words(field), field.description or "")
        )
        + " |"
        for key, field in model.model_fields.items()
        if _table_model(field.annotation) is None
    ]
    about = _paragraph(model)
    return "\n".join(
        [
            f"## `[{prefix}]`\n",
            *([about + "\n"] if about else []),
            "| key | type | default | meaning |",
            "| --- | --- | --- | --- |",
            *rows,
            "",
        ]
    )


def table_models() -> Iterator[tuple[str, type[BaseModel]]]:
    """Every table of the file, as (its header without brackets, its model), in the models' order."""

    def walk(prefix: str, model: type[BaseModel]) -> Iterator[tuple[str, type[BaseModel]]]:
        yield prefix, model
        for key, field in model.model_fields.items():
            table = _table_model(field.annotation)
            if table is not None:
                yield from walk(f"{prefix}.{key}.NAME" if table[1] else f"{prefix}.{key}", table[0])

    for key, field in Config.model_fields.items():
        table = _table_model(field.annotation)
        if table is not None:
            yield from walk(f"{key}.NAME" if table[1] else key, table[0])


def config_reference() -> str:
    """docs/config.md: the config file's every table and key, from the models."""
    parts = [
        "# The config file: `/etc/octobrix.toml`\n",
        "*Generated from the models in [`octobrixd/config/model.py`](../octobrixd/config/model.py): change "
        f"them, then run `{COMMAND}`.*\n",
        "A complete example with comments is in [`packaging/octobrix.toml`](../packaging/octobrix.toml). "
        "Names of printers and cameras (`printer1`, `cam1`) use lowercase letters, digits and dashes, at most "
        f"{NAME_MAX} characters: they become service names and `{device_link('<name>')}`. Every printer and camera "
        "states its own port, so adding one never moves another. Unknown keys are errors, so a typo never passes "
        "silently: `sudo octobrixctl check` names each mistake with its line.\n",
        "In the tables, *default* is what a key that is left out means: *required* keys must be given, and "
        "for an *unset* one the meaning says what octobrix does without it.\n",
        "Read on: how a camera shows in its printer's OctoPrint and several cameras on one USB bus in "
        "[cameras.md](cameras.md); the front door in [frontdoor.md](frontdoor.md) and its metrics in "
        "[fleet.md](fleet.md#metrics-for-prometheus); `octoprint` pins, OctoPrint 2.x and plugins in "
        "[upgrades.md](upgrades.md); backups in [backups.md](backups.md).\n",
    ]
    parts.extend(_table(prefix, model) for prefix, model in table_models())
    return "\n".join(parts)


def main() -> None:
    sys.stdout.write(config_reference())


if __name__ == "__main__":
    main()
