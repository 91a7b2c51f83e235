"""Arguments several octobrixctl subcommands share, spelled the same everywhere."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from octobrixd.errors import OctobrixError
from octobrixd.system.paths import DEFAULT_CONFIG

if TYPE_CHECKING:
    from octobrixd.config.model import Config


def add_config_argument(parser: argparse.ArgumentParser, what: str = "config file") -> None:
    """--config FILE; what says what the command does with it (in its --help)."""
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, metavar="FILE", help=f"{what} (default {DEFAULT_CONFIG})"
    )


ROOT_HELP = "act on the tree under DIR instead of the system: no systemctl, no udevadm (for tests and packaging)"


def add_root_argument(parser: argparse.ArgumentParser, help_text: str = ROOT_HELP) -> None:
    parser.add_argument("--root", type=Path, default=Path("/"), metavar="DIR", help=help_text)


def printers_named(config: Config, config_path: Path, names: Sequence[str], doing: str) -> list[str]:
    """The printers a command acts on: those named (each once), or every printer; one that is not in
    the config, or none at all, is an error that says which there are."""
    chosen = list(dict.fromkeys(names)) or sorted(config.printers)
    unknown = [n for n in chosen if n not in config.printers]
    if unknown:
        known = ", ".join(sorted(config.printers)) or "none"
        raise OctobrixError(
            f"no printer named {', '.join(unknown)} in {config_path} (printers: {known})",
            hint="`octobrixctl status` lists them",
        )
    if not chosen:
        raise OctobrixError(f"no printers in {config_path}: nothing to {doing}", hint="add a [printers.NAME] first")
    return chosen
