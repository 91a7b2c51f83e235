"""Provisioning an instance's OctoPrint: octobrix (uv, shared hard-linked cache) against the usual
`python -m venv` + `pip install octoprint`, both measured here in the same run.

    sudo .venv/bin/python -m benchmarks.provision [--instances 4]

Cold: empty caches for both. Warm: both tools' caches filled by the cold run. Disk: 1 instance
against N instances of the same OctoPrint, hard links counted once (as `du` does).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from octobrixd.instances.venv_spec import VenvSpec, venv_link
from octobrixd.instances.venvs import provision
from octobrixd.system.paths import Layout

OCTOPRINT = "octoprint==1.11.8"


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def pip_baseline(target: Path, cache: Path | None) -> None:
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(target)], check=True)
    # Only PyPI, like a user's machine: the host's pip.conf may point at local mirrors.
    env = dict(os.environ, PIP_CONFIG_FILE=os.devnull)
    cache_args = ["--cache-dir", str(cache)] if cache else ["--no-cache-dir"]
    subprocess.run(
        [str(target / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", *cache_args, OCTOPRINT],
        check=True,
        env=env,
    )


def disk_kib(*paths: Path) -> int:
    # One du call counts each hard-linked file once, which is what the disk really holds.
    out = subprocess.run(["du", "-sk", "--total", *map(str, paths)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1].split()[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=4)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="octobrix-bench-"))
    try:
        pip_cache = scratch / "pip-cache"
        pip_cold = timed(lambda: pip_baseline(scratch / "pip-cold", pip_cache))
        pip_warm = timed(lambda: pip_baseline(scratch / "pip-warm", pip_cache))

        layout = Layout(scratch / "root")
        ids = (os.getuid(), os.getgid())
        ours_cold = timed(lambda: provision(layout, VenvSpec("p1", (OCTOPRINT,)), *ids))
        ours_warm = timed(lambda: provision(layout, VenvSpec("p2", (OCTOPRINT,)), *ids))
        for index in range(3, args.instances + 1):
            provision(layout, VenvSpec(f"p{index}", (OCTOPRINT,)), *ids)

        one = disk_kib(venv_link(layout, "p1").resolve())
        many = disk_kib(*(venv_link(layout, f"p{i}").resolve() for i in range(1, args.instances + 1)))
        pip_one = disk_kib(scratch / "pip-cold")
        print(f"provision one instance, cold cache: octobrix {ours_cold:6.1f} s   pip {pip_cold:6.1f} s   "
              f"ratio {pip_cold / ours_cold:5.1f}x faster")  # fmt: skip
        print(f"provision one instance, warm cache: octobrix {ours_warm:6.1f} s   pip {pip_warm:6.1f} s   "
              f"ratio {pip_warm / ours_warm:5.1f}x faster")  # fmt: skip
        print(f"disk: 1 instance {one / 1024:6.1f} MiB, {args.instances} instances {many / 1024:6.1f} MiB "
              f"({many / one:4.2f}x of one; pip venvs: {args.instances * pip_one / 1024:6.1f} MiB)")  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
