"""`octobrixctl url`: the address a browser opens the farm at, as the installer's last line says it:
the front door with its port when that is not 80, or each printer's own port with it off."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from octobrixd.config.model import parse_config
from octobrixd.urls import browser_addresses
from tests.conftest import REPO, Ctl

INSTALL_SH = REPO / "packaging" / "install.sh"

FARM = (
    '[octobrix]\npublic_host = "farm"\n'
    "[printers.demo]\nvirtual = true\nport = 5000\n"
    '[printers.prusa]\nserial = "PRN0001"\nport = 5001\n'
)


def addresses(text: str, host: str = "farm") -> list[tuple[str, str]]:
    return browser_addresses(parse_config(text, "/etc/octobrix.toml"), host)


def test_the_front_door_on_port_80_is_the_host_alone() -> None:
    assert [url for url, _what in addresses(FARM)] == ["http://farm/"]


def test_the_front_door_on_another_port_names_it() -> None:
    assert [url for url, _what in addresses(FARM + "[frontdoor]\nport = 8080\n")] == ["http://farm:8080/"]
    assert [url for url, _what in addresses(FARM + "[frontdoor]\nport = 8080\n", "fd00::7")] == [
        "http://[fd00::7]:8080/"
    ]


def test_with_the_front_door_off_each_printer_at_its_own_port() -> None:
    assert addresses(FARM + "[frontdoor]\nenabled = false\n") == [
        ("http://farm:5000/", "demo"),
        ("http://farm:5001/", "prusa"),
    ]


def test_the_command_prints_the_front_door_with_its_port(ctl: Ctl, write_config: Callable[[str], Path]) -> None:
    done = ctl("url", "--config", write_config(FARM))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "http://farm/  the farm: its page, every printer one click away\n"
    done = ctl("url", "--config", write_config(FARM + "[frontdoor]\nport = 8080\n"))
    assert done.stdout == "http://farm:8080/  the farm: its page, every printer one click away\n"


def test_the_command_prints_each_printers_port_with_the_front_door_off(
    ctl: Ctl, write_config: Callable[[str], Path]
) -> None:
    done = ctl("url", "--config", write_config(FARM + "[frontdoor]\nenabled = false\n"))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "http://farm:5000/  demo\nhttp://farm:5001/  prusa\n"
    # No printers and no front door: nothing to open yet, and it says so.
    done = ctl("url", "--config", write_config('[frontdoor]\nenabled = false\n[octobrix]\npublic_host = "farm"\n'))
    assert (done.returncode, done.stdout) == (0, "")
    assert "no printers" in done.stderr


def test_named_printers_are_where_a_browser_reaches_them(ctl: Ctl, write_config: Callable[[str], Path]) -> None:
    done = ctl("url", "--config", write_config(FARM + "[frontdoor]\nport = 8080\n"), "prusa")
    assert done.stdout == "http://farm:15001/  prusa\n"
    done = ctl("url", "--config", write_config(FARM + "[frontdoor]\nenabled = false\n"), "prusa")
    assert done.stdout == "http://farm:5001/  prusa\n"
    done = ctl("url", "--config", write_config(FARM), "ender")
    assert done.returncode == 1 and done.stdout == ""
    assert "no printer named ender" in done.stderr


def install_sh_ending(config: Path, bin_dir: Path) -> str:
    """What install.sh prints from its "installed" line on, with bin_dir's octobrixctl on config."""
    script = INSTALL_SH.read_text(encoding="utf-8")
    say = next(line for line in script.splitlines() if line.startswith("say() "))
    ending = script[script.index('say "installed.') :]
    bin_dir.mkdir()
    octobrixctl = bin_dir / "octobrixctl"
    octobrixctl.write_text(f'#!/bin/sh\nexec {sys.executable} -m octobrixd.cli "$@" --config {config}\n')
    octobrixctl.chmod(0o755)
    done = subprocess.run(
        ["bash", "-c", f"set -eu\n{say}\n{ending}"],
        env={"PATH": os.environ["PATH"], "BIN_DIR": str(bin_dir), "CONFIG": str(config)},
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return done.stdout


def test_install_sh_ends_with_the_address_octobrixctl_gives(tmp_path: Path) -> None:
    moved = tmp_path / "moved.toml"
    moved.write_text(FARM + "[frontdoor]\nport = 8080\n", encoding="utf-8")
    said = install_sh_ending(moved, tmp_path / "bin").splitlines()
    assert said[0].startswith("octobrix: installed. Open in a browser")
    assert said[1].startswith("http://farm:8080/  the farm")
    off = tmp_path / "off.toml"
    off.write_text(FARM + "[frontdoor]\nenabled = false\n", encoding="utf-8")
    said = install_sh_ending(off, tmp_path / "bin-off").splitlines()
    assert said[1:3] == ["http://farm:5000/  demo", "http://farm:5001/  prusa"]
