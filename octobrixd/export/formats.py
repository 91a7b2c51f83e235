"""The files FDM Monster and OctoFarm import: printer records in, text out.

FDM Monster (1.9): `POST /api/server/yaml-import` validates `config` (the export flags and the
comparison strategies), `printers` (each with an `id` its importer maps, `printerURL`,
`printerType` 0 for OctoPrint, `apiKey` of 32 to 43 letters, digits, `-` or `_`, `name`,
`enabled`) and, in SQLite mode, walks `floors` before validating, so the list is there even empty.
OctoFarm: a JSON list of `name`, `group`, `printerURL`, `cameraURL`, `apikey`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import yaml


class Tool(StrEnum):
    FDM_MONSTER = "fdm-monster"
    OCTOFARM = "octofarm"


# The app name each tool's key carries in OctoPrint (Settings > Application Keys shows it).
APP_IDS = {Tool.FDM_MONSTER: "FDM Monster", Tool.OCTOFARM: "OctoFarm"}
OCTOPRINT_TYPE = 0


@dataclass(frozen=True)
class ExportedPrinter:
    name: str
    url: str
    api_key: str
    camera_url: str | None = None


def render_fdm_monster(printers: Sequence[ExportedPrinter]) -> str:
    spec = {
        # Integer ids, as its SQLite mode keeps them; they only pair printers with floors in the file.
        "databaseType": "sqlite",
        "config": {
            "exportPrinters": True,
            "exportFloorGrid": False,
            "exportFloors": False,
            "exportGroups": False,
            # A printer already there with the same URL is updated, not added twice. Not by name: two
            # farm computers may both have a printer1, and they are two printers.
            "printerComparisonStrategiesByPriority": ["url"],
            "floorComparisonStrategiesByPriority": "name",
        },
        "printers": [
            {
                "id": index,
                "name": printer.name,
                # As FDM Monster stores it (its normalizeUrl drops the slash), so that importing the
                # file again finds the printer by its URL and updates it instead of adding it twice.
                "printerURL": printer.url.rstrip("/"),
                "printerType": OCTOPRINT_TYPE,
                "apiKey": printer.api_key,
                "enabled": True,
            }
            for index, printer in enumerate(printers, start=1)
        ],
        "floors": [],
    }
    return yaml.safe_dump(spec, sort_keys=False)


def render_octofarm(printers: Sequence[ExportedPrinter], group: str) -> str:
    records = [
        {
            "name": printer.name,
            "group": group,
            "printerURL": printer.url,
            "cameraURL": printer.camera_url or "",
            "apikey": printer.api_key,
        }
        for printer in printers
    ]
    return json.dumps(records, indent=2) + "\n"


def render(tool: Tool, printers: Sequence[ExportedPrinter], group: str) -> str:
    if tool is Tool.FDM_MONSTER:
        return render_fdm_monster(printers)
    return render_octofarm(printers, group)
