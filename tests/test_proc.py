"""octobrixd.system.command.run: a command that outlives its time is stopped and reported in one line."""

from __future__ import annotations

import time

import pytest

from octobrixd.errors import CommandError, CommandTimeoutError
from octobrixd.system.command import run


def test_a_command_that_takes_too_long_is_stopped_and_said_in_one_line_with_what_to_do() -> None:
    started = time.monotonic()
    with pytest.raises(CommandError) as caught:  # what every caller already catches
        run(["sh", "-c", "echo slow disk >&2; exec sleep 30"], timeout=0.5)
    assert time.monotonic() - started < 10, "it was stopped, not waited for"
    error = caught.value
    assert isinstance(error, CommandTimeoutError)
    assert str(error) == "sh did not finish within 0.5 s and was stopped"
    assert error.hint and "busy" in error.hint
    assert "slow disk" in error.stderr, "what it said before it was stopped is kept"
