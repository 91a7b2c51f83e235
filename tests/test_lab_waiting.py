"""The lab's one wait (tests/lab/harness/waiting.wait_until): it returns what it waited for, looks a
last time at the deadline, and when it gives up says what never happened."""

from __future__ import annotations

import pytest

from tests.lab.harness.waiting import wait_until


def test_it_returns_the_first_truthy_answer() -> None:
    answers = iter([0, "", None, {"state": "Operational"}, "later"])
    assert wait_until("the printer", lambda: next(answers), timeout=5, every=0.01) == {"state": "Operational"}


def test_it_looks_once_more_at_the_deadline_however_long_a_round() -> None:
    looks: list[int] = []

    def check() -> bool:
        looks.append(1)
        return len(looks) == 2

    assert wait_until("the second look", check, timeout=0.1, every=60)
    assert len(looks) == 2


def test_giving_up_names_what_never_happened_the_last_answer_and_the_detail_read_then() -> None:
    journal = ["nothing yet"]

    def check() -> str:
        journal.append("still starting")
        return ""

    with pytest.raises(AssertionError) as caught:
        wait_until("demo to be Operational", check, timeout=0.1, every=0.02, detail=lambda: journal[-1])
    message = str(caught.value)
    assert message.startswith("timed out after 0s waiting for demo to be Operational (last: '')"), message
    assert message.endswith("\nstill starting"), message


def test_an_ignored_exception_is_not_yet_and_any_other_one_is_raised() -> None:
    answers: list[object] = [ConnectionRefusedError("refused"), ValueError("not JSON yet"), "up"]

    def check() -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert wait_until("OctoPrint", check, timeout=5, every=0.01, ignoring=(OSError, ValueError)) == "up"

    def refused() -> None:
        raise ConnectionRefusedError("refused")

    with pytest.raises(AssertionError, match=r"waiting for OctoPrint \(last: ConnectionRefusedError\('refused'\)\)"):
        wait_until("OctoPrint", refused, timeout=0.05, every=0.01, ignoring=(OSError,))
    with pytest.raises(KeyError):
        wait_until("OctoPrint", lambda: dict[str, str]()["current"], timeout=5, every=0.01, ignoring=(OSError,))


def test_until_picks_the_answer_and_the_last_one_is_shown_whole() -> None:
    jobs = iter([{"state": "Operational"}, {"state": "Printing", "file": "cube.gcode"}])
    job = wait_until("a print", lambda: next(jobs), timeout=5, every=0.01, until=lambda job: job["state"] == "Printing")
    assert job == {"state": "Printing", "file": "cube.gcode"}
    with pytest.raises(AssertionError, match=r"waiting for a print \(last: \{'state': 'Operational'\}\)"):
        wait_until(
            "a print", lambda: {"state": "Operational"}, 0.05, 0.01, until=lambda job: job["state"] == "Printing"
        )
