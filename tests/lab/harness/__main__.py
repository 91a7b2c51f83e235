"""The lab by hand (as root, from the repository root):

    python -m tests.lab.harness build              build (or reuse) the rootfs and the VM image
    python -m tests.lab.harness status             what is cached, and under which recipe hash
    python -m tests.lab.harness clean              delete the cache (the next run rebuilds it)
    python -m tests.lab.harness shell container    boot a pristine container, open a root shell in it
    python -m tests.lab.harness shell vm           boot the VM, open its serial console (log in as root, no password)

Leaving the shell stops what it booted.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys

from tests.lab.harness import build
from tests.lab.harness.container import Container
from tests.lab.harness.procs import lab_tempdir, sweep_stale
from tests.lab.harness.vm import Vm


def cmd_build(_args: argparse.Namespace) -> int:
    base, image, newcomer = build.build_all()
    print(f"rootfs:   {base}")
    print(f"VM image: {image.image} (kernel {image.kernel_version})")
    print(f"newcomer: {newcomer} (a bare server, for the install tests)")
    return 0


def cmd_status(_args: argparse.Namespace) -> int:
    print(f"cache: {build.CACHE}")
    print(f"current recipes: rootfs-{build.base_hash()}  vm-{build.vm_hash()}  newcomer-{build.newcomer_hash()}")
    if build.CACHE.exists():
        for entry in sorted(build.CACHE.iterdir()):
            if entry.is_dir():
                complete = entry / ".complete"
                if complete.exists():
                    state = complete.read_text().strip()
                elif entry.name.startswith(("rootfs-", "vm-", "newcomer-", "build-")):
                    state = "(incomplete)"
                else:
                    state = "(download cache)"
                print(f"  {entry.name}: {state}")
    return 0


def cmd_clean(_args: argparse.Namespace) -> int:
    kept = build.clean()
    for entry in kept:
        print(f"kept {entry}: in use by a running lab session")
    return 0


def cmd_shell(args: argparse.Namespace) -> int:
    sweep_stale()
    if args.target == "container":
        with Container(lab_tempdir("ct") / "ct") as box:
            print(f"container {box.name} (init pid {box.leader}); exit the shell to stop it", file=sys.stderr)
            argv = ["nsenter", "-t", str(box.leader), "-a", "env", "-i", "TERM=" + os.environ.get("TERM", "xterm"),
                    "HOME=/root", "LANG=C.UTF-8", "bash", "-l"]  # fmt: skip
            return subprocess.run(argv, check=False).returncode
    if shutil.which("socat") is None:
        print("the VM shell needs socat: apt-get install socat", file=sys.stderr)
        return 1
    with Vm(lab_tempdir("vm")) as vm:
        print(
            f"VM booted in {vm.boot_seconds:.0f}s; serial console follows: press Enter, log in as root (no password). "
            "Ctrl-] leaves and stops the VM.",
            file=sys.stderr,
        )
        local = "-,raw,echo=0,escape=0x1d" if sys.stdin.isatty() else "-"
        argv = ["socat", local, f"UNIX-CONNECT:{vm.serial_socket}"]
        return subprocess.run(argv, check=False).returncode


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.harness", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build").set_defaults(func=cmd_build)
    sub.add_parser("status").set_defaults(func=cmd_status)
    sub.add_parser("clean").set_defaults(func=cmd_clean)
    shell = sub.add_parser("shell")
    shell.add_argument("target", choices=["container", "vm"])
    shell.set_defaults(func=cmd_shell)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if os.geteuid() != 0:
        print("the lab needs root", file=sys.stderr)
        return 1
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
