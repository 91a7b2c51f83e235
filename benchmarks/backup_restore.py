"""How long a backup and a restore of one printer take with 200 MB of uploads, in a lab container
with octobrix installed from this checkout and a real OctoPrint (a virtual printer on port 5602).

    sudo .venv/bin/python -m benchmarks.backup_restore

Baselines measured in the same run: the same instance's backup with no uploads (what starting
OctoPrint's CLI costs), and `cp -a` plus `sync` of its basedir (what moving 200 MB costs on this
disk). The uploads are G-code-like text (moves with random coordinates), which compresses as real
G-code does, so the zip's size and the time spent compressing are realistic.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from tests.lab.harness.container import Container
from tests.lab.harness.farm import pty_farm
from tests.lab.harness.installs import wait_operational

NAME = "bench"
PORT = 5602
CONFIG = f"[printers.{NAME}]\nvirtual = true\nport = {PORT}\n"
UPLOAD_MB = 200
FILES = 4
BASEDIR = f"/var/lib/octobrix/{NAME}/basedir"
MAKE_UPLOADS = f"""
import os, random, sys
random.seed(1)
for n in range({FILES}):
    path = "{BASEDIR}/uploads/part{{}}.gcode".format(n)
    with open(path, "w") as out:
        written = 0
        while written < {UPLOAD_MB // FILES} * 1024 * 1024:
            lines = "".join(
                "G1 X{{:.3f}} Y{{:.3f}} E{{:.5f}}\\n".format(random.uniform(0, 250), random.uniform(0, 210),
                                                        random.uniform(0, 2))
                for _ in range(5000)
            )
            out.write(lines)
            written += len(lines)
"""


def timed(box: Container, *argv: str, timeout: float = 1800.0) -> tuple[float, str]:
    started = time.monotonic()
    result = box.run(list(argv), check=False, timeout=timeout)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}")
    return seconds, result.stdout


def backup(box: Container) -> tuple[float, dict[str, object]]:
    seconds, out = timed(box, "octobrixctl", "backup", NAME, "--json")
    return seconds, json.loads(out)["backups"][0]


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="octobrix-bench-backup-"))
    try:
        with pty_farm(scratch, CONFIG, {}, ports=[PORT]) as box:
            wait_operational(box, NAME, PORT)
            empty_seconds, _ = backup(box)
            box.run(["python3", "-c", MAKE_UPLOADS], timeout=600)
            box.run(["chown", "-R", f"octobrix-{NAME}:octobrix-{NAME}", f"{BASEDIR}/uploads"])
            box.run(["sync"])
            copy_seconds, _ = timed(box, "sh", "-c", f"cp -a {BASEDIR} /root/basedir-copy && sync")
            box.run(["rm", "-rf", "/root/basedir-copy"])
            backup_seconds, made = backup(box)
            started = time.monotonic()
            restore_seconds, _ = timed(box, "octobrixctl", "restore", NAME, str(made["file"]))
            wait_operational(box, NAME, PORT)
            operational_seconds = time.monotonic() - started
            listed = box.run(["sh", "-c", f"ls {BASEDIR}/uploads | wc -l"]).stdout.strip()
            if listed != str(FILES):
                raise SystemExit(f"the restore brought back {listed} uploads, not {FILES}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    size_mb = int(str(made["size_bytes"])) / 1e6
    print(f"one printer, {UPLOAD_MB} MB of uploads ({FILES} G-code files), OctoPrint 1.11.8, lab container")
    print(f"{'backup, no uploads (baseline: OctoPrint CLI start)':<58} {empty_seconds:6.1f} s")
    print(f"{'cp -a + sync of the basedir (baseline: moving the bytes)':<58} {copy_seconds:6.1f} s")
    print(f"{'octobrixctl backup':<58} {backup_seconds:6.1f} s  zip {size_mb:.0f} MB"
          f"  ({backup_seconds / copy_seconds:.1f}x the copy)")  # fmt: skip
    print(f"{'octobrixctl restore (stop, restore, keys, start)':<58} {restore_seconds:6.1f} s"
          f"  ({restore_seconds / copy_seconds:.1f}x the copy)")  # fmt: skip
    print(f"{'restore until the printer is Operational again':<58} {operational_seconds:6.1f} s")


if __name__ == "__main__":
    main()
