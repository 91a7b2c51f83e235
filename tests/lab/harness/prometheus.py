"""A real Prometheus (Debian's `prometheus` package) on a loopback port of this machine, scraping
octobrix front doors every second with each farm's metrics token. Used by test_metrics.py and
test_ansible.py.
"""

from __future__ import annotations

import contextlib
import json
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.lab.harness.procs import REAPER
from tests.lab.harness.waiting import wait_until


@dataclass(frozen=True)
class Scrape:
    """One farm to scrape: its front door (host:port) and its metrics token."""

    target: str
    token: str


def scrape_config(work: Path, jobs: Mapping[str, Scrape]) -> str:
    """prometheus.yml: one job per farm (each has its own token), every second."""
    text = "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
    for job, scrape in jobs.items():
        token = work / f"{job}.token"
        token.write_text(scrape.token + "\n")
        token.chmod(0o600)
        text += (
            f"  - job_name: {job}\n    scrape_timeout: 1s\n"
            f"    authorization:\n      credentials_file: {token}\n"
            f"    static_configs:\n      - targets: ['{scrape.target}']\n"
        )
    return text


def query(base: str, promql: str) -> float | None:
    """The instant query's one value, None when it has no sample (yet) or Prometheus is not up."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body: Any = json.loads(response.read())
    except (OSError, ValueError):
        return None
    results = body["data"]["result"]
    return float(results[0]["value"][1]) if len(results) == 1 else None


@contextlib.contextmanager
def prometheus(work: Path, port: int, jobs: Mapping[str, Scrape]) -> Iterator[str]:
    """Prometheus on 127.0.0.1:port scraping every job; yields its HTTP API's base URL once each
    job's first scrape succeeded."""
    (work / "prometheus.yml").write_text(scrape_config(work, jobs))
    log = (work / "prometheus.log").open("wb")
    proc = REAPER.spawn(
        ["prometheus", f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for job in jobs:
            wait_until(f"Prometheus's first good scrape of {job}", lambda: query(base, f'up{{job="{job}"}}') == 1.0,  # noqa: B023
                       timeout=120, every=1)  # fmt: skip
        yield base
    finally:
        REAPER.stop(proc)
        log.close()
