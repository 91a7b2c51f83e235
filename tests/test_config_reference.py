"""docs/config.md is made from the config models (octobrixd/config/reference.py), and every key has its
description there, so a key can neither land undocumented nor drift from its page."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from octobrixd.config.model import Config
from octobrixd.config.reference import COMMAND, config_reference, table_models

REPO = Path(__file__).resolve().parent.parent


def test_docs_config_md_is_what_the_models_make_now() -> None:
    written = (REPO / "docs/config.md").read_text(encoding="utf-8")
    assert written == config_reference(), f"docs/config.md differs from the config models; regenerate it: {COMMAND}"


def _models() -> list[type[BaseModel]]:
    return [Config, *(model for _, model in table_models())]


@pytest.mark.parametrize("model", _models(), ids=lambda model: model.__name__)
def test_every_field_of_every_model_has_a_description(model: type[BaseModel]) -> None:
    undocumented = [key for key, field in model.model_fields.items() if not (field.description or "").strip()]
    assert not undocumented, f"{model.__name__}: give {', '.join(undocumented)} a Field(description=...)"


def test_every_section_of_the_file_is_in_the_reference() -> None:
    tables = dict(table_models())
    assert {"octobrix", "frontdoor", "uvcvideo", "printers.NAME", "cameras.NAME"} <= set(tables)
    reference = config_reference()
    for prefix, model in tables.items():
        assert f"## `[{prefix}]`" in reference
        assert (model.__doc__ or "").strip(), f"{model.__name__}: its docstring is the table's introduction"
        for key in model.model_fields:
            as_row = f"| `{key}` |" in reference
            as_table = any(sub in tables for sub in (f"{prefix}.{key}", f"{prefix}.{key}.NAME"))
            assert as_row or as_table, f"[{prefix}] {key} is missing from the reference"
