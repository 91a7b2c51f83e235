"""The documentation holds together: the README stays a maker's page, every relative link leads to a
file (and heading) that exists, every test and benchmark the promises name exists, and every config
example parses."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.first_farm import readme_steps
from octobrixd.config.model import parse_config
from tests.lab.harness.installs import readme_commands

REPO = Path(__file__).resolve().parent.parent
README_MAX_LINES = 300
# The README, the reference, and the other READMEs a reader follows links through.
PAGES = sorted(
    [
        REPO / "README.md",
        *(REPO / "docs").glob("*.md"),
        *(REPO / folder / "README.md" for folder in ("octobrixd", "kmod", "tests/lab")),
    ]
)
FENCE = re.compile(r"^```[^\n]*\n.*?^```", re.DOTALL | re.MULTILINE)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _name(page: Path) -> str:
    return str(page.relative_to(REPO))


def test_the_readme_is_a_page_not_a_manual() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move reference to docs/"
    )


def test_the_readme_still_gives_the_commands_the_lab_and_the_benchmark_run() -> None:
    """What tests/lab/test_install.py (the install, the tests' command) and benchmarks/first_farm.py (the
    add) read from README.md, checked in the quick suite too: the README keeps them while reference moves out."""
    commands = readme_commands()
    assert commands[:2] == ["sudo packaging/install.sh", "sudo tests/run"]
    assert readme_steps() == ("sudo packaging/install.sh", "sudo octobrixctl add --all")


def _anchors(page: Path) -> set[str]:
    """GitHub's ids for a page's headings: lowercase, punctuation dropped, spaces to dashes, -1 for repeats."""
    seen: Counter[str] = Counter()
    anchors = set()
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
        seen[slug] += 1
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_relative_link_leads_somewhere(page: Path) -> None:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        goal = (page.parent / path).resolve() if path else page
        if not goal.exists():
            broken.append(f"{target}: no such file")
        elif anchor and goal.suffix == ".md" and anchor not in _anchors(goal):
            broken.append(f"{target}: no heading #{anchor} in {_name(goal)}")
    assert not broken, f"{_name(page)}: " + "; ".join(broken)


def test_every_test_and_benchmark_a_promise_names_exists() -> None:
    promises = (REPO / "docs/promises.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:tests|benchmarks)/[\w/.]+\.py)`", promises))
    assert len(named) > 20
    missing = sorted(path for path in named if not (REPO / path).is_file())
    assert not missing, f"docs/promises.md names files that do not exist: {', '.join(missing)}"


def _toml_examples() -> list[tuple[str, str]]:
    return [
        (f"{_name(page)} #{number}", block)
        for page in PAGES
        for number, block in enumerate(
            re.findall(r"^```toml\n(.*?)^```", page.read_text(encoding="utf-8"), re.DOTALL | re.MULTILINE)
        )
    ]


@pytest.mark.parametrize(("where", "example"), _toml_examples(), ids=[where for where, _ in _toml_examples()])
def test_every_config_example_is_a_valid_config(where: str, example: str) -> None:
    parse_config(example, source=where)
