"""octobrix's own edits of the config keep what the user wrote and never leave a broken file."""

from __future__ import annotations

from pathlib import Path

import pytest

from octobrixd.config import edit as config_edit
from octobrixd.errors import ConfigError, OctobrixError

STARTER = """\
# My farm. Keep this comment.
[octobrix]
public_host = "farm.local"

[printers.ender]   # the one by the window
serial = "PRN0042"
port = 5000
octoprint = "octoprint==1.11.7"  # pinned on purpose

# Cameras below.
[cameras.cam1]
serial = "CAM1"
port = 8080
"""


def test_a_pin_changes_in_place_with_its_comment_and_every_other_line_kept() -> None:
    edited = config_edit.set_value(STARTER, "printers", "ender", "octoprint", "octoprint==1.11.8")
    assert edited == STARTER.replace("1.11.7", "1.11.8")


def test_an_added_printer_lands_after_the_printers_and_the_comments_stay() -> None:
    edited = config_edit.add_entry(STARTER, "printers", "prusa", {"serial": "ABC", "port": 5001})
    for line in STARTER.splitlines():
        assert line in edited.splitlines()
    config = config_edit.checked(edited, "/etc/octobrix.toml")
    assert config.printers["prusa"].port == 5001
    assert edited.index("[printers.prusa]") < edited.index("# Cameras below.")


def test_an_entry_is_removed_and_nothing_else() -> None:
    edited = config_edit.remove_entry(STARTER, "cameras", "cam1")
    assert "[cameras.cam1]" not in edited
    assert "# My farm. Keep this comment." in edited and "[printers.ender]   # the one by the window" in edited


def test_a_name_already_taken_is_refused_with_a_hint() -> None:
    with pytest.raises(OctobrixError, match=r"\[printers.ender\] is already in the config"):
        config_edit.add_entry(STARTER, "printers", "ender", {"serial": "X", "port": 5002})


def test_an_edit_that_makes_the_config_invalid_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "octobrix.toml"
    path.write_text(STARTER)
    path.chmod(0o640)
    with pytest.raises(ConfigError, match=r"printers\.prusa.*port"):
        config_edit.edit_config_file(
            path, lambda text: config_edit.add_entry(text, "printers", "prusa", {"serial": "ABC", "port": 5000})
        )
    assert path.read_text() == STARTER
    assert list(tmp_path.iterdir()) == [path]


def test_a_good_edit_replaces_the_file_keeping_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "octobrix.toml"
    path.write_text(STARTER)
    path.chmod(0o640)
    config = config_edit.edit_config_file(
        path, lambda text: config_edit.set_value(text, "printers", "ender", "port", 5003)
    )
    assert config.printers["ender"].port == 5003
    assert path.stat().st_mode & 0o777 == 0o640
    assert "port = 5003" in path.read_text() and "# pinned on purpose" in path.read_text()
