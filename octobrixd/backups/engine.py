"""Making and restoring one printer's backup: OctoPrint's own backup CLI, run as the instance's user.

OctoPrint writes the zip into a folder of the instance's own (it runs unprivileged and cannot
write /var/backups); octobrix then moves it into the root-only backup folder and writes its side
file. A restore stops the instance, lets OctoPrint's own restore put the basedir back, puts
octobrix's keys back on top (serial port, port, its API key and admin login), and starts it.

The work folder and the basedir are the printer's user's to write: root reaches them from the
root-owned state directory by descriptor, never following a link (system/nofollow.py). What it takes
from the work folder is a regular file of that user's, opened without following a link, handed to
root before it is moved; what it puts there for a restore is a new file (O_EXCL|O_NOFOLLOW).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from octobrixd.apply.plan import current_and_merged_config_yaml
from octobrixd.backups import archive
from octobrixd.config.model import Config
from octobrixd.errors import OctobrixError
from octobrixd.instances.credentials import Credentials, read_credentials
from octobrixd.instances.instance import BASEDIR, CONFIG_YAML, USERS_YAML, Instance
from octobrixd.instances.running import printing_now
from octobrixd.instances.seeding import seed_basedir
from octobrixd.system import nofollow, systemd
from octobrixd.system.fsutil import exclusive_lock, fsync_dir, write_atomic
from octobrixd.system.nofollow import UnsafePathError
from octobrixd.system.paths import Layout

log = logging.getLogger(__name__)

# Under the state directory: octobrix-backup.service may write there (ProtectSystem=strict).
LOCK_FILE = PurePosixPath("var/lib/octobrix/.backup.lock")
# Where the instance's user may write: OctoPrint's zip is made here, a zip to restore is put here.
WORK_DIR = ".backup-work"
# OctoPrint's backup and restore of a basedir with years of uploads and timelapses, run gently.
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


def _installed(instance: Instance) -> None:
    if not instance.octoprint.exists():
        raise OctobrixError(
            f"printer {instance.name} has no OctoPrint installed yet ({instance.octoprint} is missing)",
            hint="run `sudo octobrixctl apply` first",
        )


def _work_dir(instance: Instance, uid: int, gid: int) -> Path:
    """The printer's own work folder in its (root's) state directory: a link or a file there is refused."""
    nofollow.make_dir(instance.state_dir, WORK_DIR, mode=0o700, uid=uid, gid=gid)
    return instance.state_dir / WORK_DIR


_READ_FLAGS = nofollow.READ_FLAGS
_NEW_FLAGS = nofollow.NEW_FILE_FLAGS


def _copy_fd(source: int, target: int) -> None:
    while chunk := os.read(source, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(target, view) :]


def _take_zip(instance: Instance, made: str, folder: Path, uid: int) -> Path:
    """OctoPrint's zip, made by the printer's user in its work folder, into root's backup folder as
    root's 0600 file: only a regular file of that user's (a link, a FIFO, another's file is refused),
    handed to root before it moves, moved by descriptor (a name swapped on the way is caught)."""
    shown = instance.state_dir / WORK_DIR / made
    with nofollow.open_dir(instance.state_dir, WORK_DIR) as work:
        try:
            fd = os.open(made, _READ_FLAGS, dir_fd=work)
        except FileNotFoundError:
            said = f"OctoPrint of {instance.name} said it made a backup, but {shown} is not there"
            raise OctobrixError(said) from None
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise UnsafePathError(shown, "it is a link") from None
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != uid or info.st_nlink != 1:
                raise UnsafePathError(shown, "it is not a regular file of the printer's own")
            os.set_blocking(fd, True)
            os.fchown(fd, 0, 0)
            os.fchmod(fd, 0o600)
            folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                try:
                    os.rename(made, made, src_dir_fd=work, dst_dir_fd=folder_fd)
                except OSError as error:
                    if error.errno != errno.EXDEV:
                        raise
                    # Another filesystem (--to a USB disk): a copy from the descriptor checked above.
                    temp = f".{made}.{secrets.token_hex(4)}.tmp"
                    out = os.open(temp, _NEW_FLAGS, 0o600, dir_fd=folder_fd)
                    try:
                        _copy_fd(fd, out)
                        os.fsync(out)
                    finally:
                        os.close(out)
                    os.rename(temp, made, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
                else:
                    moved = os.stat(made, dir_fd=folder_fd, follow_symlinks=False)
                    if (moved.st_dev, moved.st_ino) != (info.st_dev, info.st_ino):
                        os.unlink(made, dir_fd=folder_fd)
                        raise UnsafePathError(shown, "it was swapped for something else while it was moved")
            finally:
                os.close(folder_fd)
        finally:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(made, dir_fd=work)
    fsync_dir(folder)
    return folder / made


def _stage(instance: Instance, zip_path: Path, uid: int, gid: int) -> str:
    """A copy of the zip to restore, as a new file of the printer's user in its work folder (a name
    the user planted there is never written through); its name."""
    name = f"restore-{secrets.token_hex(4)}.zip"
    with nofollow.open_dir(instance.state_dir, WORK_DIR) as work, zip_path.open("rb") as source:
        fd = os.open(name, _NEW_FLAGS, 0o600, dir_fd=work)
        try:
            _copy_fd(source.fileno(), fd)
            os.fchown(fd, uid, gid)
            os.fsync(fd)
        finally:
            os.close(fd)
    return name


def _unstage(instance: Instance, name: str) -> None:
    with contextlib.suppress(OSError), nofollow.open_dir(instance.state_dir, WORK_DIR) as work:
        os.unlink(name, dir_fd=work)


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
    instance = Instance(name, layout)
    uid, gid = instance.ids()
    _installed(instance)
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
    work = _work_dir(instance, uid, gid)
    made = archive.free_zip_name(folder, name, when)
    args = ["plugins", "backup:backup", "--path", str(work / made)]
    for exclude in excludes:
        args += ["--exclude", exclude]
    try:
        instance.run_octoprint(
            args,
            ids=(uid, gid),
            doing="make its backup",
            timeout=CLI_TIMEOUT,
            gently=True,
            hint=f"see the output of `octobrixctl --debug backup {name}`",
        )
    except BaseException:
        _unstage(instance, made)
        raise
    # Same filesystem: a rename. Another one (--to a USB disk): a copy, then the work file goes.
    final = _take_zip(instance, made, folder, uid)
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


def _users(instance: Instance) -> dict[str, object]:
    try:
        users = yaml.safe_load(nofollow.read_text(instance.state_dir, f"{BASEDIR}/{USERS_YAML}")) or {}
    except (OSError, UnicodeDecodeError, UnsafePathError, yaml.YAMLError):
        return {}
    return users if isinstance(users, dict) else {}


def reapply_octobrix_keys(
    config: Config, layout: Layout, name: str, ids: tuple[int, int], *, credentials: Credentials | None, same_farm: bool
) -> None:
    """What octobrix owns in the basedir, back on top of the restored one."""
    uid, gid = ids
    instance = Instance(name, layout)
    merged = current_and_merged_config_yaml(layout, config, name)
    if merged is not None:
        nofollow.write_atomic(instance.state_dir, f"{BASEDIR}/{CONFIG_YAML}", merged[1], mode=0o600, uid=uid, gid=gid)
    if credentials is None:
        seed_basedir(layout, name, uid, gid)
        return
    password_twice = f"{credentials.password}\n{credentials.password}\n"
    if credentials.username in _users(instance) and not same_farm:
        # Another farm's admin: give it this farm's password, so `octobrixctl credentials` stays true.
        instance.run_octoprint(
            ["user", "password", credentials.username],
            ids=ids,
            doing=f"set the password of its user {credentials.username}",
            input_text=password_twice,
        )
    if credentials.username not in _users(instance):
        # A backup without octobrix's admin (a plain OctoPrint's): add it, keep every other account.
        instance.run_octoprint(
            ["user", "add", credentials.username, "--admin"],
            ids=ids,
            doing=f"create its user {credentials.username}",
            input_text=password_twice,
        )
    seed_basedir(layout, name, uid, gid)


def restore(config: Config, layout: Layout, name: str, zip_path: Path, *, force: bool = False) -> str:
    """Put backup zip_path into printer name; the version of OctoPrint it now runs."""
    facts = archive.read_zip(zip_path)
    if not facts.has_users:
        raise OctobrixError(f"{zip_path} has no users.yaml: OctoPrint's restore refuses it", hint="use another backup")
    installed = check_restorable(layout, name, facts)
    instance = Instance(name, layout)
    uid, gid = instance.ids()
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
    work = _work_dir(instance, uid, gid)
    staged = _stage(instance, zip_path, uid, gid)
    unit = instance.unit
    systemd.stop([unit], wait=True)
    nofollow.make_dir(instance.state_dir, BASEDIR, mode=0o700, uid=uid, gid=gid)
    try:
        result = instance.run_octoprint(
            ["plugins", "backup:restore", str(work / staged)],
            ids=(uid, gid),
            doing="restore the backup",
            timeout=CLI_TIMEOUT,
            gently=True,
            hint=f"{name} is stopped; see `octobrixctl --debug restore {name} {zip_path}`, "
            f"or `sudo systemctl start {unit}` to start it as it is",
        )
    finally:
        _unstage(instance, staged)
    if "Restored from" not in result.stdout:
        # OctoPrint's restore command reports a refusal on stderr but still exits 0.
        said = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(" ")]
        raise OctobrixError(
            f"OctoPrint's restore of {name} did not restore: {said[0] if said else 'no output'}",
            hint=f"{name} is stopped with its settings as they were; `sudo systemctl start {unit}` starts it",
        )
    # OctoPrint's restore moves an unpacked folder in place: make it as private as apply makes it.
    nofollow.make_dir(instance.state_dir, BASEDIR, mode=0o700, uid=uid, gid=gid)
    reapply_octobrix_keys(config, layout, name, (uid, gid), credentials=credentials, same_farm=same_farm)
    systemd.start([unit], wait=True)
    return installed
