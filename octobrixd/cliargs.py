"""Arguments several octobrixctl subcommands share, spelled the same everywhere."""

from __future__ import annotations

import argparse
from pathlib import Path

from octobrixd.paths import DEFAULT_CONFIG


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, metavar="FILE", help=f"config file (default {DEFAULT_CONFIG})"
    )


def add_root_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        metavar="DIR",
        help="act on the tree under DIR instead of the system: no systemctl, no udevadm (for tests and packaging)",
    )
