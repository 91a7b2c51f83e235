"""octobrix itself in the lab: render a config with the real CLI and install the result in a guest."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

REPO = Path(__file__).resolve().parents[3]
SYSTEMD_DIR = REPO / "systemd"


class Guest(Protocol):
    """What Container and Vm have in common."""

    def copy_in(self, src: Path, guest_dest: str) -> None: ...

    def run(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]: ...


def render(config_text: str, workdir: Path) -> Path:
    """Run the real `octobrixctl render` for config_text; returns the root of the generated tree."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "octobrix.toml"
    config.write_text(config_text, encoding="utf-8")
    root = workdir / "root"
    result = subprocess.run(
        [sys.executable, "-m", "octobrixd.cli", "render", "--config", str(config), "--root", str(root)],
        capture_output=True, text=True, check=False, cwd=REPO,
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(f"octobrixctl render failed ({result.returncode}):\n{result.stderr}")
    return root


def install_rendered(guest: Guest, root: Path) -> None:
    """Create the instances' users, then copy the rendered tree into the guest's / (merging).

    Users first: udevd resolves OWNER= when it loads rules and may load them the moment they appear.
    """
    sysusers = root / "etc/sysusers.d/octobrix.conf"
    if sysusers.exists():
        guest.copy_in(sysusers, "/etc/sysusers.d/octobrix.conf")
        guest.run(["systemd-sysusers"])
    for top in sorted(p for p in root.iterdir() if p.is_dir()):
        guest.copy_in(top, f"/{top.name}")


def install_templates(guest: Guest, *names: str) -> None:
    """Install static unit templates from the repo's systemd/ folder, as the package would."""
    for name in names:
        guest.copy_in(SYSTEMD_DIR / name, f"/etc/systemd/system/{name}")


class PatientGuest(Protocol):
    """A guest whose commands may take minutes (installs under software emulation)."""

    def copy_in(self, src: Path, guest_dest: str) -> None: ...

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]: ...


WHEELS_IN_GUEST = "/var/lib/octobrix-wheels"


def checkout_files() -> list[str]:
    """The files of this checkout that git knows or would add: what an installer may see."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    )
    return [line for line in listed.stdout.splitlines() if (REPO / line).is_file()]


CHECKOUT_IN_GUEST = "/root/octobrix"


def bring_checkout_and_wheels(guest: PatientGuest, workdir: Path, wheels: Path) -> None:
    """What the owner of an offline farm brings on a stick: this checkout (to CHECKOUT_IN_GUEST)
    and the wheels (tests.lab.harness.wheelhouse, to WHEELS_IN_GUEST)."""
    guest.copy_in(wheels, WHEELS_IN_GUEST)
    staged = workdir / "checkout"
    for rel in checkout_files():
        (staged / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, staged / rel)
    guest.copy_in(staged, CHECKOUT_IN_GUEST)


def install_offline(guest: PatientGuest, workdir: Path, wheels: Path, *, timeout: float = 900.0) -> None:
    """Install this checkout in a guest without network, as an offline farm does: copy the wheels
    (tests.lab.harness.wheelhouse) to WHEELS_IN_GUEST and run `packaging/install.sh --wheels` there.

    Write /etc/octobrix.toml first (with `wheels = WHEELS_IN_GUEST` for instances to install from).
    """
    bring_checkout_and_wheels(guest, workdir, wheels)
    run_offline_install(guest, timeout=timeout)


def run_offline_install(guest: PatientGuest, *, timeout: float) -> None:
    """`packaging/install.sh --wheels` in a guest that has the checkout and the wheels already:
    the first install, or its second run that applies a new config."""
    installed = guest.run(
        [f"{CHECKOUT_IN_GUEST}/packaging/install.sh", "--wheels", WHEELS_IN_GUEST], check=False, timeout=timeout
    )
    if installed.returncode != 0:
        raise AssertionError(f"install.sh failed ({installed.returncode}):\n{installed.stdout}\n{installed.stderr}")
