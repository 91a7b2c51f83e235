"""Typed errors. Anything the user can cause or fix ends up as one of these."""

from __future__ import annotations


class OctobrixError(Exception):
    """An error shown to the user as one line plus, optionally, what to do about it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(OctobrixError):
    """The config file cannot be used. Carries every problem found, not just the first."""

    def __init__(self, problems: list[str], hint: str | None = None) -> None:
        self.problems = problems
        count = len(problems)
        summary = problems[0] if count == 1 else f"{count} problems in the config"
        super().__init__(summary, hint)


class CommandError(OctobrixError):
    """An external command failed; carries its stderr."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else "no error output"
        super().__init__(f"{argv[0]} failed (exit {returncode}): {tail}")


class CommandTimeoutError(CommandError):
    """An external command did not finish in its time and was killed. A CommandError, so every
    caller that says what failed says this too: one line, not a traceback."""

    def __init__(self, argv: list[str], seconds: float, stderr: str) -> None:
        self.argv = argv
        self.returncode = -9
        self.stderr = stderr
        self.seconds = seconds
        OctobrixError.__init__(
            self,
            f"{argv[0]} did not finish within {seconds:g} s and was stopped",
            hint="the computer may be very busy: run it again once it is quieter",
        )


class CommandNotFoundError(OctobrixError):
    """A program octobrix needs is not installed."""
