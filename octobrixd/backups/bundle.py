"""A whole farm in one root-only file: the config, every printer's backup and the generated secrets.

`backup --bundle FILE` writes it; `restore --bundle FILE` on another computer (a fresh install)
puts the config in place, keeps each printer's admin password and API key, applies (the same
printers, bound to the same boards by the same serial or USB port), and restores every printer.
A tar of files that are already compressed (OctoPrint's zips): nothing is gained by compressing it.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from octobrixd import __version__
from octobrixd.apply.plan import apply_now
from octobrixd.backups import archive, engine
from octobrixd.config.model import Config, parse_config, with_machine_defaults
from octobrixd.errors import OctobrixError
from octobrixd.instances.credentials import SECRETS_DIR, credentials_path
from octobrixd.system.fsutil import fsync_dir, write_atomic
from octobrixd.system.paths import Layout

MANIFEST = "octobrix-bundle.json"
CONFIG = "octobrix.toml"
BUNDLE_VERSION = 1


@dataclass(frozen=True)
class Bundle:
    config_text: str
    printers: tuple[str, ...]
    created: str


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = int(datetime.datetime.now().timestamp())
    tar.addfile(info, io.BytesIO(data))


def write_bundle(config: Config, config_path: Path, layout: Layout, target: Path, say: Callable[[str], None]) -> None:
    """Every printer's backup, the config and the secrets into target (0600), or nothing at all."""
    folder = target.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise OctobrixError(f"cannot write {target}: {folder} is not a folder root can write", hint="pick another FILE")
    scratch_root = layout.path(archive.BACKUP_ROOT)
    scratch_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bundle-", dir=scratch_root) as scratch:
        made = []
        for name in sorted(config.printers):
            one = engine.make_backup(config, layout, name, target=Path(scratch))
            say(f"{name}: {one.size / 1e6:.1f} MB in {one.seconds:.0f} s")
            made.append(one)
        fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
        os.fchmod(fd, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle, tarfile.open(fileobj=handle, mode="w") as tar:
                manifest = {
                    "version": BUNDLE_VERSION,
                    "octobrix": __version__,
                    "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                    "printers": [one.name for one in made],
                }
                _add(tar, MANIFEST, json.dumps(manifest, indent=2).encode())
                _add(tar, CONFIG, config_path.read_bytes())
                for one in made:
                    tar.add(one.zip_path, f"printers/{one.name}.zip")
                    tar.add(archive.side_path(one.zip_path), f"printers/{one.name}{archive.SIDE_SUFFIX}")
                    secret = layout.path(credentials_path(one.name))
                    if secret.exists():
                        _add(tar, f"secrets/{one.name}.json", secret.read_bytes())
                handle.flush()
                os.fsync(handle.fileno())
            Path(temp_name).replace(target)
            fsync_dir(folder)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def _open(path: Path) -> Iterator[tarfile.TarFile]:
    try:
        with tarfile.open(path, mode="r:") as tar:
            yield tar
    except FileNotFoundError:
        raise OctobrixError(f"{path}: no such file", hint="the file `octobrixctl backup --bundle` wrote") from None
    except tarfile.TarError as exc:
        raise OctobrixError(f"{path} is not an octobrix bundle ({exc})", hint="is the file complete?") from None


def _member(tar: tarfile.TarFile, name: str, path: Path) -> bytes:
    # Only members by their known names are read, never extracted by the names inside: no path tricks.
    try:
        handle = tar.extractfile(name)
    except KeyError:
        handle = None
    if handle is None:
        raise OctobrixError(f"{path} has no {name}: not an octobrix bundle", hint="the file `backup --bundle` wrote")
    return handle.read()


def read_bundle(path: Path, config_path: Path) -> Bundle:
    with _open(path) as tar:
        manifest = json.loads(_member(tar, MANIFEST, path))
        text = _member(tar, CONFIG, path).decode("utf-8")
    # The bundle's config is checked like any config before anything is changed.
    config = parse_config(text, str(config_path))
    printers = manifest.get("printers") if isinstance(manifest, dict) else None
    if not isinstance(printers, list) or any(not isinstance(n, str) or n not in config.printers for n in printers):
        # Its names become file names (the secrets, the backup folders): only the config's own.
        raise OctobrixError(
            f"{path}: its list of printers is not the printers of its config", hint="the file `backup --bundle` wrote"
        )
    return Bundle(text, tuple(printers), str(manifest.get("created", "?")))


def restore_bundle(
    path: Path, config_path: Path, layout: Layout, *, force: bool, say: Callable[[str], None], host_name: str
) -> Config:
    bundle = read_bundle(path, config_path)
    config = with_machine_defaults(parse_config(bundle.config_text, str(config_path)), host_name)
    if config_path.exists() and config_path.read_text(encoding="utf-8") != bundle.config_text:
        kept = config_path.with_name(config_path.name + ".before-restore")
        shutil.copy2(config_path, kept)
        say(f"kept the config this computer had as {kept}")
    with _open(path) as tar:
        secrets_dir = layout.path(SECRETS_DIR)
        secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in bundle.printers:
            with contextlib.suppress(OctobrixError):
                # The same admin password and API key as on the old computer.
                secret = _member(tar, f"secrets/{name}.json", path).decode("utf-8")
                write_atomic(layout.path(credentials_path(name)), secret, mode=0o600)
        write_atomic(config_path, bundle.config_text, mode=0o644)
        say(f"wrote {config_path} from the bundle of {bundle.created}; applying it (this installs every OctoPrint)")
        apply_now(config, layout, force=force)
        for name in bundle.printers:
            folder = archive.printer_folder(layout, name)
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            stamp = datetime.datetime.now().astimezone()
            zip_path = folder / archive.zip_name(name, stamp)
            zip_path.write_bytes(b"")
            zip_path.chmod(0o600)
            zip_path.write_bytes(_member(tar, f"printers/{name}.zip", path))
            with contextlib.suppress(OctobrixError):
                side = _member(tar, f"printers/{name}{archive.SIDE_SUFFIX}", path).decode("utf-8")
                write_atomic(archive.side_path(zip_path), side, mode=0o600)
            engine.restore(config, layout, name, zip_path, force=force)
            say(f"{name}: restored")
    return config
