"""Making and restoring one printer's backup: OctoPrint's own backup CLI, run as the instance's user.

OctoPrint writes the zip into a folder of the instance's own (it runs unprivileged and cannot
write /var/backups); octobrix then moves it into the root-only backup folder and writes its side
file. A restore stops the instance, lets OctoPrint's own restore put the basedir back, puts
octobrix's keys back on top (serial port, port, its API key and admin login), and starts it.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from octobrixd.apply.plan import config_yaml_path, current_and_merged_config_yaml, printing_now
from octobrixd.backups import archive
from octobrixd.config.model import Config
from octobrixd.errors import CommandError, OctobrixError
from octobrixd.instances.credentials import Credentials, read_credentials, seed_basedir
from octobrixd.names import instance_user, octoprint_unit
from octobrixd.system import systemd
from octobrixd.system.command import run
from octobrixd.system.fsutil import exclusive_lock, write_atomic
from octobrixd.system.paths import Layout

log = logging.getLogger(__name__)

# Under the state directory: octobrix-backup.service may write there (ProtectSystem=strict).
LOCK_FILE = PurePosixPath("var/lib/octobrix/.backup.lock")
# Where the instance's user may write: OctoPrint's zip is made here, a zip to restore is put here.
WORK_DIR = ".backup-work"
# Lowest CPU and disk priority: a print running on this computer must not notice.
GENTLY = ("nice", "-n", "19", "ionice", "-c", "3")
CLI_TIMEOUT = 6 * 3600.0
WAIT_POLL = 30.0
EXCLUDABLE = ("uploads", "timelapse")


@dataclass(frozen=True)
class Made:
    name: str
    zip_path: Path
    size: int
    seconds: float
    pruned: tuple[Path, ...] = ()


@contextlib.contextmanager
def backup_lock(layout: Layout) -> Iterator[None]:
    """One backup or restore at a time (the timer and a user may both start one)."""
    with exclusive_lock(layout.path(LOCK_FILE), "another backup or restore"):
        yield


def instance_ids(name: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(instance_user(name))
    except KeyError:
        raise OctobrixError(
            f"printer {name} is not set up on this computer (no user {instance_user(name)})",
            hint="run `sudo octobrixctl apply` first",
        ) from None
    return entry.pw_uid, entry.pw_gid


def _octoprint(layout: Layout, name: str) -> Path:
    program = layout.state_dir(name) / "venv" / "bin" / "octoprint"
    if not program.exists():
        raise OctobrixError(
            f"printer {name} has no OctoPrint installed yet ({program} is missing)",
            hint="run `sudo octobrixctl apply` first",
        )
    return program


def _work_dir(layout: Layout, name: str, uid: int, gid: int) -> Path:
    work = layout.state_dir(name) / WORK_DIR
    work.mkdir(mode=0o700, exist_ok=True)
    os.chown(work, uid, gid)
    work.chmod(0o700)
    return work


def _octoprint_cli(layout: Layout, name: str, args: list[str], uid: int, gid: int) -> subprocess.CompletedProcess[str]:
    """Run OctoPrint's CLI on the instance's basedir as its user, gently."""
    basedir = layout.state_dir(name) / "basedir"
    argv = [*GENTLY, str(_octoprint(layout, name)), "--basedir", str(basedir), *args]
    env = {"HOME": str(layout.state_dir(name)), "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
    return run(argv, env=env, as_user=(uid, gid), timeout=CLI_TIMEOUT)


def wait_until_idle(layout: Layout, name: str, say: Callable[[str], None]) -> None:
    busy = printing_now(layout)
    if busy(name):
        say(f"{name} is printing: waiting for the print to end (checking every {WAIT_POLL:.0f} s)")
        while busy(name):
            time.sleep(WAIT_POLL)


def make_backup(
    config: Config,
    layout: Layout,
    name: str,
    *,
    target: Path | None = None,
    excludes: tuple[str, ...] = (),
    keep: int | None = None,
    now: datetime.datetime | None = None,
) -> Made:
    uid, gid = instance_ids(name)
    _octoprint(layout, name)
    folder = archive.printer_folder(layout, name, target)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise OctobrixError(
            f"cannot make the backup folder {folder}: {exc.strerror}",
            hint="pick a folder root can write with --to DIR",
        ) from None
    if not os.access(folder, os.W_OK):
        raise OctobrixError(f"cannot write to {folder}", hint="pick a folder root can write with --to DIR")
    started = time.monotonic()
    when = now or datetime.datetime.now().astimezone()
    work = _work_dir(layout, name, uid, gid)
    made = work / archive.zip_name(name, when)
    args = ["plugins", "backup:backup", "--path", str(made)]
    for exclude in excludes:
        args += ["--exclude", exclude]
    try:
        _octoprint_cli(layout, name, args, uid, gid)
        if not made.is_file():
            raise OctobrixError(f"OctoPrint of {name} said it made a backup, but {made} is not there")
        final = folder / made.name
        # Same filesystem: a rename. Another one (--to a USB disk): a copy, then the work file goes.
        shutil.move(made, final)
    except CommandError as error:
        said = error.stderr.strip().splitlines()
        raise OctobrixError(
            f"OctoPrint's backup of {name} failed: {said[-1] if said else error}",
            hint=f"see the output of `octobrixctl --debug backup {name}`",
        ) from None
    finally:
        made.unlink(missing_ok=True)
    os.chown(final, 0, 0)
    final.chmod(0o600)
    credentials = read_credentials(layout, name)
    fingerprint = archive.key_fingerprint(credentials.api_key) if credentials else None
    write_atomic(
        archive.side_path(final),
        archive.side_file(config, name, archive.read_zip(final), when, fingerprint),
        mode=0o600,
    )
    pruned: list[Path] = []
    if keep is not None:
        for old in archive.to_prune(archive.backups_of(folder, name), keep):
            old.unlink(missing_ok=True)
            archive.side_path(old).unlink(missing_ok=True)
            pruned.append(old)
    return Made(name, final, final.stat().st_size, time.monotonic() - started, tuple(pruned))


def check_restorable(layout: Layout, name: str, facts: archive.ZipFacts) -> str:
    """The instance's OctoPrint version, if it can take this backup; else why not, with the pin."""
    installed = archive.installed_octoprint(layout, name)
    if installed is None:
        raise OctobrixError(
            f"printer {name} has no OctoPrint installed yet", hint="run `sudo octobrixctl apply` first, then restore"
        )
    if archive.version_key(facts.version) > archive.version_key(installed):
        raise OctobrixError(
            f"this backup is from OctoPrint {facts.version}, newer than the {installed} printer {name} runs; "
            "OctoPrint cannot go back to an older version's settings",
            hint=f'set octoprint = "octoprint=={facts.version}" in [printers.{name}] of /etc/octobrix.toml, '
            "run `sudo octobrixctl apply`, then restore again",
        )
    return installed


def _users(basedir: Path) -> dict[str, object]:
    try:
        users = yaml.safe_load((basedir / "users.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return users if isinstance(users, dict) else {}


def reapply_octobrix_keys(
    config: Config, layout: Layout, name: str, ids: tuple[int, int], *, credentials: Credentials | None, same_farm: bool
) -> None:
    """What octobrix owns in the basedir, back on top of the restored one."""
    uid, gid = ids
    basedir = layout.state_dir(name) / "basedir"
    merged = current_and_merged_config_yaml(layout, config, name)
    if merged is not None:
        write_atomic(layout.path(config_yaml_path(name)), merged[1], mode=0o600, uid=uid, gid=gid)
    if credentials is not None and credentials.username in _users(basedir) and not same_farm:
        # Another farm's admin: give it this farm's password, so `octobrixctl credentials` stays true.
        password_twice = f"{credentials.password}\n{credentials.password}\n"
        try:
            run(
                [str(_octoprint(layout, name)), "--basedir", str(basedir), "user", "password", credentials.username],
                input_text=password_twice,
                env={"HOME": str(layout.state_dir(name)), "PATH": "/usr/bin:/bin"},
                as_user=(uid, gid),
                timeout=300,
            )
        except CommandError as error:
            raise OctobrixError(f"could not set the admin password of {name}: {error}") from error
    if credentials is not None and credentials.username not in _users(basedir):
        # A backup without octobrix's admin (a plain OctoPrint's): add it, keep every other account.
        run(
            [str(_octoprint(layout, name)), "--basedir", str(basedir), "user", "add", credentials.username, "--admin"],
            input_text=f"{credentials.password}\n{credentials.password}\n",
            env={"HOME": str(layout.state_dir(name)), "PATH": "/usr/bin:/bin"},
            as_user=(uid, gid),
            timeout=300,
        )
    seed_basedir(layout, name, uid, gid)


def restore(config: Config, layout: Layout, name: str, zip_path: Path, *, force: bool = False) -> str:
    """Put backup zip_path into printer name; the version of OctoPrint it now runs."""
    facts = archive.read_zip(zip_path)
    if not facts.has_users:
        raise OctobrixError(f"{zip_path} has no users.yaml: OctoPrint's restore refuses it", hint="use another backup")
    installed = check_restorable(layout, name, facts)
    uid, gid = instance_ids(name)
    if not force and printing_now(layout)(name):
        raise OctobrixError(
            f"{name} is printing: a restore would stop the print",
            hint=f"restore after the print, or `octobrixctl restore --force {name} {zip_path}` to end it",
        )
    credentials = read_credentials(layout, name)
    side = archive.read_side_file(zip_path) or {}
    same_farm = credentials is not None and side.get("api_key_fingerprint") == archive.key_fingerprint(
        credentials.api_key
    )
    work = _work_dir(layout, name, uid, gid)
    staged = work / "restore.zip"
    shutil.copyfile(zip_path, staged)
    os.chown(staged, uid, gid)
    staged.chmod(0o600)
    unit = octoprint_unit(name)
    systemd.stop([unit], wait=True)
    basedir = layout.state_dir(name) / "basedir"
    basedir.mkdir(mode=0o700, exist_ok=True)
    os.chown(basedir, uid, gid)
    try:
        result = _octoprint_cli(layout, name, ["plugins", "backup:restore", str(staged)], uid, gid)
    except CommandError as error:
        raise OctobrixError(
            f"OctoPrint's restore of {name} failed: {error}",
            hint=f"{name} is stopped; see `octobrixctl --debug restore {name} {zip_path}`, "
            f"or `sudo systemctl start {unit}` to start it as it is",
        ) from None
    finally:
        staged.unlink(missing_ok=True)
    if "Restored from" not in result.stdout:
        # OctoPrint's restore command reports a refusal on stderr but still exits 0.
        said = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(" ")]
        raise OctobrixError(
            f"OctoPrint's restore of {name} did not restore: {said[0] if said else 'no output'}",
            hint=f"{name} is stopped with its settings as they were; `sudo systemctl start {unit}` starts it",
        )
    # OctoPrint's restore moves an unpacked folder in place: make it as private as apply makes it.
    basedir.chmod(0o700)
    reapply_octobrix_keys(config, layout, name, (uid, gid), credentials=credentials, same_farm=same_farm)
    systemd.start([unit], wait=True)
    return installed
