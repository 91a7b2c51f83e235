"""The shapes of a requirement the config accepts: shared by validation and by reading a venv (without pydantic)."""

from __future__ import annotations

import re

# A pip requirement limited to a project name, extras and version specifiers: no URLs, no
# paths and nothing starting with '-', so it can never smuggle an option into pip's command line.
_VERSION_CLAUSE = r"(?:===|==|~=|!=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+"
REQUIREMENT_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)"
    r"(?:\[[A-Za-z0-9._-]+(?:\s*,\s*[A-Za-z0-9._-]+)*\])?"
    rf"(?:\s*{_VERSION_CLAUSE}(?:\s*,\s*{_VERSION_CLAUSE})*)?\Z"
)

# Most OctoPrint plugins are published as archives, not on PyPI: an https URL, bare or "Name @ URL".
PLUGIN_URL_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*\s*@\s*)?https://[A-Za-z0-9][^\s\"'\\]*\Z")
