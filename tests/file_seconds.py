"""Where the suite's time goes (issue #31): seconds per test file, setup and teardown included,
printed at the end of the run. Under pytest-xdist the controller sums the reports its workers send,
so the figures cover every worker; the workers themselves keep no tally.

tests/conftest.py registers it; another pytest run loads it with `-p tests.file_seconds`.
"""

from __future__ import annotations

import pytest

NAME = "octobrix-file-seconds"
SHOWN = 5.0  # files taking less are summed on one line


class FileSeconds:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        path = report.nodeid.split("::", 1)[0]
        self.seconds[path] = self.seconds.get(path, 0.0) + report.duration

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.seconds:
            return
        ranked = sorted(self.seconds.items(), key=lambda item: item[1], reverse=True)
        shown = [(path, seconds) for path, seconds in ranked if seconds >= SHOWN]
        rest = sum(seconds for _path, seconds in ranked[len(shown) :])
        terminalreporter.section(f"seconds per test file ({SHOWN:.0f} s and more)")
        for path, seconds in shown:
            terminalreporter.write_line(f"{seconds:8.1f}  {path}")
        terminalreporter.write_line(f"{rest:8.1f}  the other {len(ranked) - len(shown)} files")


def register(config: pytest.Config) -> None:
    """On the controller (or a run without xdist), once; never on an xdist worker."""
    if hasattr(config, "workerinput") or config.pluginmanager.has_plugin(NAME):
        return
    config.pluginmanager.register(FileSeconds(), NAME)


def pytest_configure(config: pytest.Config) -> None:
    register(config)
