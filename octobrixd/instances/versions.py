"""Which OctoPrint an instance runs, in the terms octobrix cares about: the dialect of its
config.yaml and of its connection API (OctoPrint 2.0 changed both)."""

from __future__ import annotations

from enum import StrEnum

from octobrixd.instances.venv_contents import _CLAUSE_RE, _VERSION_RE, current_venv, installed_versions, satisfies
from octobrixd.system.paths import Layout


class Generation(StrEnum):
    V1 = "1.x"  # serial.*, server.pluginBlacklist, accessControl.trustRemoteUser
    V2 = "2.x"  # printerConnection.*, plugins.serial_connector.*, server.pluginBlocklist


def generation_of(version: str) -> Generation:
    found = _VERSION_RE.match(version.strip().lower())
    major = int(found[1].split(".")[0]) if found else 1
    return Generation.V2 if major >= 2 else Generation.V1


def pinned_version(requirement: str) -> str | None:
    """The version an exact pin (`octoprint==2.0.0rc3`) names; None for a range or no version."""
    clauses = _CLAUSE_RE.findall(requirement)
    exact = [wanted for operator, wanted in clauses if operator in ("==", "===") and not wanted.endswith(".*")]
    return exact[0] if len(clauses) == 1 and exact else None


def pinned_generation(requirement: str) -> Generation:
    """The generation the lowest version a requirement allows belongs to (`octoprint~=2.0`,
    `octoprint>=2.0.0rc3`, `octoprint==2.0.*` are 2.x); a bare `octoprint` is 1.x, the newest
    stable release on the index when this was written."""
    floors = [v.removesuffix(".*") for op, v in _CLAUSE_RE.findall(requirement) if op in ("==", "===", "~=", ">=", ">")]
    return Generation.V2 if any(generation_of(v) is Generation.V2 for v in floors) else Generation.V1


def seeded_generation(installed: str | None, requirement: str) -> Generation:
    """The generation of the OctoPrint installed in the venv when it meets the pin (what runs);
    the pin's otherwise: a venv that does not meet it is rebuilt by the same apply."""
    if installed is not None and satisfies(installed, requirement) is not False:
        return generation_of(installed)
    return pinned_generation(requirement)


def installed_octoprint(layout: Layout, name: str) -> str | None:
    """The OctoPrint version in printer NAME's venv (a directory listing); None if unreadable or unbuilt."""
    return installed_versions(current_venv(layout, name)).get("octoprint")


def running_generation(installed: str | None, requirement: str) -> Generation:
    """The generation of the OctoPrint that answers now: the venv's, whatever the pin says (a pin
    changed a moment ago is not built yet); the pin's while no venv can be read."""
    return generation_of(installed) if installed is not None else pinned_generation(requirement)
