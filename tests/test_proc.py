"""octobrixd.system.command.run: a command that outlives its time is stopped and reported in one line."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from octobrixd.errors import CommandError, CommandNotFoundError, CommandTimeoutError
from octobrixd.system.command import SYSTEM_PATH, run


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


def _alive(pid: int) -> bool:
    """The process runs (a zombie waiting for its parent to reap it runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_a_timeout_ends_the_commands_children_too(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    script = f"sleep 300 & echo $! > {pidfile}; echo started >&2; wait"
    with pytest.raises(CommandTimeoutError) as caught:
        run(["sh", "-c", script], timeout=1)
    assert "started" in caught.value.stderr
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)  # polls the condition; the deadline bounds it
    assert not _alive(grandchild), f"the command's child {grandchild} outlived the timeout"


def test_the_command_runs_in_a_clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCTOBRIX_TEST_LEAK", "from the caller")
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    seen = run(["env"]).stdout.splitlines()
    assert "LANG=C.UTF-8" in seen
    assert not any(line.startswith("OCTOBRIX_TEST_LEAK=") for line in seen)
    assert f"PATH={SYSTEM_PATH}" in seen
    assert "https_proxy=http://proxy.example:3128" in seen, "pip and uv still reach the network through the proxy"
    explicit = run(["env"], env={"HOME": "/var/lib/octobrix/demo", "PATH": "/usr/bin:/bin"}).stdout.splitlines()
    assert {"HOME=/var/lib/octobrix/demo", "PATH=/usr/bin:/bin", "LANG=C.UTF-8"} <= set(explicit)


def test_stdin_is_closed_unless_input_is_given() -> None:
    # octobrix's own stdin is a pipe nobody writes to: a command that read it would wait forever.
    read_end, write_end = os.pipe()
    saved = os.dup(0)
    os.dup2(read_end, 0)
    try:
        started = time.monotonic()
        assert run(["cat"], timeout=30).stdout == "", "cat read end-of-file at once"
        assert time.monotonic() - started < 10
        assert run(["readlink", "/proc/self/fd/0"]).stdout.strip() == "/dev/null"
        assert run(["cat"], input_text="typed\n").stdout == "typed\n"
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_end, write_end):
            os.close(fd)


def test_the_command_has_no_terminal_and_a_process_group_of_its_own() -> None:
    pid, stat = run(["sh", "-c", "echo $$; cat /proc/$$/stat"]).stdout.split("\n", 1)
    _state, _parent, group, session, terminal = stat.rsplit(")", 1)[1].split()[:5]
    assert int(group) == int(session) == int(pid), "a session of its own, led by the command"
    assert terminal == "0", "no controlling terminal to ask a password on"


def test_a_missing_program_is_said_with_what_to_install() -> None:
    with pytest.raises(CommandNotFoundError) as caught:
        run(["octobrix-no-such-program"])
    assert str(caught.value) == "octobrix-no-such-program is not installed"
