"""One printer's OctoPrint on this computer: where its state lives, spelled once, and its CLI, run as
its own user.

The state directory is root's (root:octobrix-NAME 0750): the `venv` link and venvs/ in it too. What
the printer's user writes is its basedir (uploads, plugins, logs), its home and its venv's folders:
root reads there without following links, and runs nothing from there. The OctoPrint CLI runs as the
printer's user, with no supplementary groups, in a scrubbed environment.
"""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from octobrixd.errors import CommandError, CommandTimeoutError, OctobrixError
from octobrixd.names import instance_user, octoprint_unit
from octobrixd.system import paths
from octobrixd.system.command import run
from octobrixd.system.paths import Layout

BASEDIR = "basedir"
VENV = "venv"  # the link to the venv it runs, one of VENVS
VENVS = "venvs"
HOME = "home"  # the user's HOME and working directory: pip's and uv's caches
CONFIG_YAML = "config.yaml"
USERS_YAML = "users.yaml"
# basedir/plugins: octobrix's online-check plugin, and the single-file plugins OctoPrint's Plugin
# Manager installs.
PLUGINS = "plugins"
APP_KEYS = PurePosixPath("data/appkeys/keys.yaml")

# The one timeout policy: a short command (a user, a password) gets five minutes, which a busy small
# computer starting OctoPrint's CLI needs at most; long work (a backup, a restore) passes its own.
CLI_TIMEOUT = 300.0
# Lowest CPU and disk priority: long work beside a print must not slow the print.
GENTLY = ("nice", "-n", "19", "ionice", "-c", "3")
SEARCH_PATH = "/usr/bin:/bin"
# What a command in a printer's venv gets besides its HOME: the system's programs, output as it comes,
# and pip neither asking nor checking for a newer pip.
VENV_ENVIRONMENT = {
    "PATH": SEARCH_PATH,
    "PYTHONUNBUFFERED": "1",
    "PIP_NO_INPUT": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}


def venv_python(venv: Path) -> Path:
    """The python of any venv: the printer's, one being built, or another tool's."""
    return venv / "bin" / "python"


def venv_octoprint(venv: Path) -> Path:
    return venv / "bin" / "octoprint"


def tree_state_dir(name: str) -> PurePosixPath:
    """Printer NAME's state directory relative to the root: for renderers, plans and the manifest."""
    return paths.STATE_DIR / name


def tree_basedir(name: str) -> PurePosixPath:
    return tree_state_dir(name) / BASEDIR


def tree_config_yaml(name: str) -> PurePosixPath:
    return tree_basedir(name) / CONFIG_YAML


@dataclass(frozen=True)
class Instance:
    """Printer NAME's OctoPrint in the tree layout describes."""

    name: str
    layout: Layout

    @property
    def user(self) -> str:
        return instance_user(self.name)

    @property
    def unit(self) -> str:
        return octoprint_unit(self.name)

    @property
    def state_dir(self) -> Path:
        return self.layout.path(tree_state_dir(self.name))

    @property
    def basedir(self) -> Path:
        return self.layout.path(tree_basedir(self.name))

    @property
    def home(self) -> Path:
        """Its user's HOME and working directory (the state directory itself is root's)."""
        return self.state_dir / HOME

    @property
    def config_yaml(self) -> Path:
        return self.layout.path(tree_config_yaml(self.name))

    @property
    def users_yaml(self) -> Path:
        return self.basedir / USERS_YAML

    @property
    def app_keys(self) -> Path:
        return self.basedir / APP_KEYS

    @property
    def plugins(self) -> Path:
        return self.basedir / PLUGINS

    @property
    def venv(self) -> Path:
        """The link to the venv it runs (built under venvs/, swapped in whole)."""
        return self.state_dir / VENV

    @property
    def venvs(self) -> Path:
        return self.state_dir / VENVS

    @property
    def python(self) -> Path:
        return venv_python(self.venv)

    @property
    def octoprint(self) -> Path:
        return venv_octoprint(self.venv)

    def ids(self) -> tuple[int, int]:
        """Its user's uid and gid."""
        try:
            entry = pwd.getpwnam(self.user)
        except KeyError:
            raise OctobrixError(
                f"printer {self.name} is not set up on this computer (no user {self.user})",
                hint="run `sudo octobrixctl apply` first",
            ) from None
        return entry.pw_uid, entry.pw_gid

    def run_octoprint(
        self,
        args: Sequence[str],
        *,
        ids: tuple[int, int],
        doing: str,
        input_text: str | None = None,
        timeout: float = CLI_TIMEOUT,
        gently: bool = False,
        hint: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`octoprint --basedir BASEDIR ARGS` as the printer's user (ids), in a session of its own (a
        password is read from input_text, never from a terminal). A failure is an OctobrixError that
        says the printer could not DOING and why, in one line; hint replaces the general one."""
        program = self.octoprint
        if not program.exists():
            raise OctobrixError(
                f"printer {self.name} has no OctoPrint installed yet ({program} is missing)",
                hint="run `sudo octobrixctl apply` first",
            )
        argv = [*(GENTLY if gently else ()), str(program), "--basedir", str(self.basedir), *args]
        # Nothing of root's environment: its own home, the system's programs, output as it comes.
        env = {"HOME": str(self.home), "PATH": SEARCH_PATH, "PYTHONUNBUFFERED": "1"}
        try:
            return run(argv, input_text=input_text, env=env, timeout=timeout, as_user=ids)
        except CommandError as error:
            raise OctobrixError(
                f"OctoPrint of {self.name} could not {doing}: {_why(error)}",
                hint=hint or self._cli_hint(),
            ) from error

    def run_in_venv(
        self,
        args: Sequence[str],
        *,
        ids: tuple[int, int],
        doing: str,
        timeout: float = CLI_TIMEOUT,
        check: bool = True,
        hint: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`python -I -m ARGS` of its venv as the printer's user (ids): no PYTHON* variable, user site or
        current folder reaches it, and root never runs the venv's code. A failure (check) or a timeout is
        an OctobrixError that says the venv could not DOING and why, in one line."""
        python = self.python
        if not os.path.lexists(python):  # the venv's python is a link: never followed by root
            raise OctobrixError(
                f"printer {self.name} has no OctoPrint installed yet ({python} is missing)",
                hint="run `sudo octobrixctl apply` first",
            )
        env = {"HOME": str(self.home), **VENV_ENVIRONMENT}
        started = shlex.join(["sudo", "-u", self.user, str(python), "-I", "-c", "pass"])
        try:
            return run([str(python), "-I", "-m", *args], env=env, timeout=timeout, check=check, as_user=ids)
        except CommandError as error:
            why = _why(error)
        except PermissionError as error:  # its user cannot reach or run it
            why = f"{self.user} may not run {python} ({error.strerror})"
        raise OctobrixError(
            f"the venv of {self.name} could not {doing}: {why}",
            hint=hint or f"see whether its Python starts at all: `{started}`",
        )

    def _cli_hint(self) -> str:
        listing = shlex.join(["sudo", "-u", self.user, str(self.octoprint), "--basedir", str(self.basedir)])
        listing += " user list"
        return f"see whether its CLI starts at all: `{listing}`, and `journalctl -u {self.unit}`"


def _why(error: CommandError) -> str:
    if isinstance(error, CommandTimeoutError):
        return f"it did not finish within {error.seconds:g} s and was stopped"
    lines = [line.strip() for line in error.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"it exited with {error.returncode} and said nothing"
