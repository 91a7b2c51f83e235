"""Run a command in a private mount namespace with overlays on chosen directories.

    unshare --mount --propagation private -- python -m tests.nsexec --overlay /var/lib=UPPER -- CMD...

systemd-analyze verify insists that every ExecStart= program exists on the checking machine.
The programs a unit starts (an instance's venv, octobrixd under /usr/bin) exist only on an
installed system, so the check runs where the overlays make them exist, and the host's real
directories are never written.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile


def main(argv: list[str]) -> int:
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1 :]
    scratch = tempfile.mkdtemp(prefix="nsexec-")
    while options:
        flag, spec = options[0], options[1]
        options = options[2:]
        if flag != "--overlay":
            raise SystemExit(f"unknown option {flag}")
        target, upper = spec.split("=", 1)
        work = tempfile.mkdtemp(dir=scratch)
        subprocess.run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={target},upperdir={upper},workdir={work}",
                target,
            ],
            check=True,
        )
    os.execvp(command[0], command)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
