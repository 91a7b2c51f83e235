"""`octobrixctl import` of a 4-printer octoprint_deploy farm, against copying its basedirs with cp -a.

    .venv/bin/python -m benchmarks.import_farm [--printers 4] [--mb 50]

The farm is built in a scratch tree as octoprint_deploy's scripts leave it (tests/import_trees.py:
/etc/octoprint_instances, the udev rules, units, a shared venv's dist-info, one basedir per printer
with settings, users, a timelapse and --mb MB of G-code uploads each), and imported with --root: the
discovery, the plan, the config edit, apply's files and the real copy of every basedir, but no
systemd and no OctoPrint builds (--root never builds venvs). Measured in the same run, each a median
of RUNS on fresh trees, caches dropped where root may (else the page cache is warm for both):

- import:   `octobrixctl import --root TREE` (in this process, as the CLI runs it);
- cp -a:    `cp -a` of the same basedirs into a scratch folder: the floor of any copy;
- dry run:  `octobrixctl import --dry-run` (discovery, plan and the survey of every basedir).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from octobrixd.cli.main import main as octobrixctl
from tests import import_trees as trees

RUNS = 3


def farm(root: Path, printers: int, megabytes: int) -> None:
    chunk = os.urandom(1 << 20)
    uploads = {f"part{i}.gcode": chunk for i in range(megabytes)}
    names = {f"printer{n}": (5650 + n, f"serial:PRN000{n}") for n in range(1, printers + 1)}
    trees.octoprint_deploy_farm(root, names, uploads=uploads)
    trees.config(root)


def drop_caches() -> None:
    with contextlib.suppress(OSError):
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed_import(root: Path, *extra: str) -> float:
    drop_caches()
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        status = octobrixctl(["import", "--root", str(root), "--config", str(root / "etc/octobrix.toml"), *extra])
    seconds = time.perf_counter() - started
    assert status == 0, f"import failed in {root}"
    return seconds


def timed_cp(root: Path, target: Path) -> float:
    basedirs = sorted(str(p) for p in (root / "home/pi").glob(".printer*"))
    target.mkdir()
    drop_caches()
    started = time.perf_counter()
    subprocess.run(["cp", "-a", *basedirs, str(target)], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--printers", type=int, default=4)
    parser.add_argument("--mb", type=int, default=50, help="MB of uploads per printer")
    args = parser.parse_args()
    results: dict[str, list[float]] = {"import": [], "cp -a": [], "dry run": []}
    with tempfile.TemporaryDirectory(prefix="import-bench-", dir="/var/tmp") as scratch:
        for run in range(RUNS):
            root = Path(scratch) / f"tree{run}"
            farm(root, args.printers, args.mb)
            results["dry run"].append(timed_import(root, "--dry-run"))
            results["cp -a"].append(timed_cp(root, Path(scratch) / f"cp{run}"))
            results["import"].append(timed_import(root))
            shutil.rmtree(root)
            shutil.rmtree(Path(scratch) / f"cp{run}")
    total = args.printers * args.mb
    medians = {what: statistics.median(samples) for what, samples in results.items()}
    print(f"{args.printers} printers, {total} MB of uploads, median of {RUNS}:")
    for what, seconds in medians.items():
        print(f"  {what:8} {seconds:6.2f} s  ({total / seconds:6.0f} MB/s)")
    print(f"import / cp -a: {medians['import'] / medians['cp -a']:.2f}x")


if __name__ == "__main__":
    main()
