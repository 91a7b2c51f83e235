"""How long a newcomer waits: the README's install command, and `apt install ./octobrix_*.deb`, each
on a pristine Debian 12 lab container, from the command to a working demo printer.

    sudo .venv/bin/python -m benchmarks.install_time

Cold: nothing downloaded yet (apt has to fetch the compiler, Python headers and ustreamer; uv's
cache is empty, so OctoPrint and its dependencies come from PyPI). Warm: another pristine
container that is given the cold one's download caches (apt's .debs and uv's wheels) first, as a
second farm computer behind a caching proxy would see it, or a reinstall after a disk swap. The
clock stops when the command returns: both print the status table only once the demo printer is
Operational. The .deb is built once beforehand (packaging/build-deb.sh), not timed.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tests.lab.harness.container import Container, booted
from tests.lab.harness.installs import (
    Timed,
    built_deb,
    holding_printer_ports,
    install_deb,
    prepare_newcomer,
    run_readme_install,
    trust_host_certificates,
    wait_operational,
)

CACHES = ("/var/cache/apt/archives", "/var/cache/octobrix/uv")
TARGET_SECONDS = 180.0


def _checked(box: Container, timed: Timed, what: str) -> float:
    if timed.result.returncode != 0:
        raise SystemExit(f"{what} failed:\n{timed.output}")
    wait_operational(box)  # already so when the command returns; a cheap guard against a wrong figure
    return timed.seconds


def _save_caches(box: Container, into: Path) -> None:
    for cache in CACHES:
        shutil.copytree(box.path(cache), into / cache.lstrip("/"), symlinks=True, dirs_exist_ok=True)


def _load_caches(box: Container, source: Path) -> None:
    for cache in CACHES:
        box.copy_in(source / cache.lstrip("/"), cache)


def readme_install(scratch: Path, caches: Path, warm: bool) -> float:
    with holding_printer_ports(), booted(scratch / f"readme-{'warm' if warm else 'cold'}", boot_timeout=120) as box:
        prepare_newcomer(box)  # a user with sudo and a checkout: not part of the install
        if warm:
            _load_caches(box, caches)
        seconds = _checked(box, run_readme_install(box), "the README's install command")
        if not warm:
            _save_caches(box, caches)
        return seconds


def deb_install(scratch: Path, deb: Path, caches: Path, warm: bool) -> float:
    with holding_printer_ports(), booted(scratch / f"deb-{'warm' if warm else 'cold'}", boot_timeout=120) as box:
        trust_host_certificates(box)
        if warm:
            _load_caches(box, caches)
        seconds = _checked(box, install_deb(box, deb), f"apt install ./{deb.name}")
        if not warm:
            _save_caches(box, caches)
        return seconds


def main() -> None:
    deb = built_deb()
    scratch = Path(tempfile.mkdtemp(prefix="octobrix-bench-install-"))
    try:
        readme_caches, deb_caches = scratch / "readme-caches", scratch / "deb-caches"
        rows = [
            ("sudo packaging/install.sh", readme_install(scratch, readme_caches, warm=False),
             readme_install(scratch, readme_caches, warm=True)),
            (f"apt install ./{deb.name}", deb_install(scratch, deb, deb_caches, warm=False),
             deb_install(scratch, deb, deb_caches, warm=True)),
        ]  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    width = max(len(name) for name, _cold, _warm in rows)
    print(f"{'fresh Debian 12 container, to a working demo':<{width}}  {'cold':>7}  {'warm':>7}")
    for name, cold, warm in rows:
        print(f"{name:<{width}}  {cold:6.1f}s  {warm:6.1f}s")
    print(f"target: under {TARGET_SECONDS:.0f} s with the caches cold")


if __name__ == "__main__":
    main()
