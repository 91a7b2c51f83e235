"""Old farms as the other tools leave them on disk, built in a scratch tree (an --root), for the
import's unit tests and benchmarks/import_farm.py. The files are what those tools' scripts write:
octoprint_deploy's instance.sh, cameras.sh and prepare.sh; KIAUH's scripts/octoprint.sh and
kiauh/extensions/octoprint/ (see octobrixd/importers/kiauh.py); OctoPi."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

OCTOPRINT_VERSION = "1.11.8"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def fake_venv(venv: Path, version: str = OCTOPRINT_VERSION, plugins: Mapping[str, str] | None = None) -> None:
    """A venv's dist-info as pip leaves it: OctoPrint, and plugins installed by its Plugin Manager."""
    site = venv / "lib" / "python3.11" / "site-packages"
    write(venv / "bin" / "octoprint", "#!/bin/sh\n")
    dists = {"OctoPrint": (version, ""), **{n: (v, "[octoprint.plugin]\nx = x\n") for n, v in (plugins or {}).items()}}
    for name, (dist_version, entry_points) in dists.items():
        info = site / f"{name.replace('-', '_')}-{dist_version}.dist-info"
        write(info / "METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {dist_version}\n\n")
        write(info / "INSTALLER", "pip\n")
        write(info / "REQUESTED", "")
        if entry_points:
            write(info / "entry_points.txt", entry_points)


def basedir(
    path: Path, name: str, *, uploads: Mapping[str, bytes] | None = None, users: Sequence[str] = ("maker",)
) -> None:
    """An OctoPrint basedir with settings, users, uploads, a timelapse, logs and an old backup."""
    write(path / "config.yaml", f"appearance:\n  name: {name}\n  color: red\nserial:\n  port: /dev/octo_{name}\n")
    write(path / "users.yaml", "".join(f"{u}:\n  active: true\n  password: x\n" for u in users))
    write(path / "data" / "appkeys" / "keys.yaml", f"{users[0]}:\n- api_key: KEY{name.upper()}\n  app_id: slicer\n")
    for upload, data in (uploads or {f"{name}.gcode": b"G28\n"}).items():
        write(path / "uploads" / upload, data)
    write(path / "timelapse" / f"{name}.mp4", b"\0" * 64)
    write(path / "logs" / "octoprint.log", "old log\n")
    write(path / "data" / "backup" / "old.zip", b"PK")


def deploy_unit(user: str, name: str, port: int) -> str:
    """octoprint_generic.service as instance.sh fills it in."""
    return (
        "[Unit]\nDescription=The snappy web interface for your 3D printer\n\n[Service]\n"
        f'Environment="PORT={port}"\nEnvironment="BASEDIR=/home/{user}/.{name}"\n'
        f'Environment="CONFIGFILE=/home/{user}/.{name}/config.yaml"\nUser={user}\n'
        f"ExecStart=/home/{user}/OctoPrint/bin/octoprint serve --config=${{CONFIGFILE}} --basedir=${{BASEDIR}} "
        "--port=${PORT}\n\n[Install]\nWantedBy=multi-user.target\n"
    )


def octoprint_deploy_farm(
    root: Path,
    printers: Mapping[str, tuple[int, str]],
    *,
    user: str = "pi",
    cameras: Mapping[str, tuple[int, str]] | None = None,
    version: str = OCTOPRINT_VERSION,
    plugins: Mapping[str, str] | None = None,
    uploads: Mapping[str, bytes] | None = None,
) -> None:
    """printers: name -> (port, udev match as instance.sh writes it: 'serial:X' or 'usb:1-1.2' or '');
    cameras: instance -> (port, 'serial:X' / 'usb:1-2')."""
    home = root / "home" / user
    fake_venv(home / "OctoPrint", version, plugins)
    write(root / "etc/octoprint_deploy", f"octoexec: /home/{user}/OctoPrint/bin/octoprint\n"
          f"octopip: /home/{user}/OctoPrint/bin/pip\nhaproxy: true\nstreamer: ustreamer\n")  # fmt: skip
    instances = []
    rules = []
    for name, (port, match) in printers.items():
        udev = bool(match)
        instances.append(f"instance:{name} port:{port} udev:{str(udev).lower()}\n")
        if match.startswith("serial:"):
            rules.append(f'SUBSYSTEM=="tty", ATTRS{{serial}}=="{match[7:]}", SYMLINK+="octo_{name}"\n')
        elif match.startswith("usb:"):
            rules.append(f'KERNELS=="{match[4:]}",SUBSYSTEM=="tty",SYMLINK+="octo_{name}"\n')
        write(root / f"etc/systemd/system/{name}.service", deploy_unit(user, name, port))
        basedir(home / f".{name}", name, uploads=uploads)
    camera_lines = []
    for instance, (port, match) in (cameras or {}).items():
        camera = f"cam_{instance}"
        camera_lines.append(f"camera:{camera} port:{port} udev:true\n")
        write(root / f"etc/{camera}.env", f"DEVICE=/dev/{camera}\nRES=1280x720\nFRAMERATE=15\nPORT={port}\n"
              "WIDTH=1280\nHEIGHT=720\n")  # fmt: skip
        write(root / f"etc/systemd/system/{camera}.service", f"[Service]\nEnvironmentFile=/etc/{camera}.env\n")
        if match.startswith("serial:"):
            rules.append(f'SUBSYSTEM=="video4linux", ATTRS{{serial}}=="{match[7:]}", ATTR{{index}}=="0", '
                         f'SYMLINK+="{camera}"\n')  # fmt: skip
        else:
            rules.append(f'SUBSYSTEM=="video4linux",KERNELS=="{match[4:]}", SUBSYSTEMS=="usb", ATTR{{index}}=="0", '
                         f'DRIVERS=="uvcvideo", SYMLINK+="{camera}"\n')  # fmt: skip
    write(root / "etc/octoprint_instances", "".join(instances))
    write(root / "etc/udev/rules.d/99-octoprint.rules", "".join(rules))
    if camera_lines:
        write(root / "etc/octoprint_cameras", "".join(camera_lines))


def kiauh_unit(user: str, suffix: str, port: int, venv: str) -> str:
    """octoprint-SUFFIX.service as KIAUH writes it (the bash scripts/octoprint.sh and KIAUH 6 alike)."""
    base = f"/home/{user}/.octoprint_{suffix}"
    return (
        "[Unit]\nDescription=Starts OctoPrint on startup\nAfter=network-online.target\nWants=network-online.target\n\n"
        '[Service]\nEnvironment="LC_ALL=C.UTF-8"\nEnvironment="LANG=C.UTF-8"\nType=simple\n'
        f"User={user}\nExecStart={venv}/bin/octoprint --basedir {base} --config {base}/config.yaml "
        f"--port={port} serve\n\n[Install]\nWantedBy=multi-user.target\n"
    )


def kiauh_config_yaml(user: str, suffix: str, *, kiauh6: bool = False) -> str:
    """The config.yaml KIAUH writes: the serial port is Klipper's pty of that instance (its data folder
    ~/printer_N_data, the bash KIAUH's ~/NAME_data for a named one)."""
    data = f"printer_{suffix}_data" if kiauh6 or suffix.isdigit() else f"{suffix}_data"
    klippy = f"/home/{user}/{data}/comms/klippy.serial"
    return (
        f"serial:\n    additionalPorts:\n    - {klippy}\n    disconnectOnErrors: false\n    port: {klippy}\n"
        f"server:\n    commands:\n        serverRestartCommand: sudo service octoprint-{suffix} restart\n"
        "        systemRestartCommand: sudo shutdown -r now\n        systemShutdownCommand: sudo shutdown -h now\n"
    )


def kiauh_farm(root: Path, suffixes: Mapping[str, int], user: str = "pi", *, kiauh6: bool = False) -> None:
    """KIAUH's OctoPrints: the bash KIAUH's venvs ~/OctoPrint_SUFFIX/venv, or KIAUH 6's ~/OctoPrint_SUFFIX."""
    home = root / "home" / user
    for suffix, port in suffixes.items():
        venv = f"/home/{user}/OctoPrint_{suffix}" + ("" if kiauh6 else "/venv")
        fake_venv(root / venv.lstrip("/"))
        basedir(home / f".octoprint_{suffix}", suffix)
        write(home / f".octoprint_{suffix}" / "config.yaml", kiauh_config_yaml(user, suffix, kiauh6=kiauh6))
        write(root / f"etc/systemd/system/octoprint-{suffix}.service", kiauh_unit(user, suffix, port, venv))
    write(root / "etc/sudoers.d/octoprint-shutdown", f"{user} ALL=NOPASSWD: /sbin/shutdown\n")


def plain_octoprint(root: Path, user: str = "pi", port: int = 5000) -> None:
    home = root / "home" / user
    fake_venv(home / "oprint", "1.10.3")
    basedir(home / ".octoprint", "octoprint")
    unit = f"[Service]\nUser={user}\nExecStart=/home/{user}/oprint/bin/octoprint serve --host=0.0.0.0 --port={port}\n"
    write(root / "etc/systemd/system/octoprint.service", unit)


def config(root: Path, text: str = "[frontdoor]\nport = 8650\n") -> Path:
    path = write(root / "etc/octobrix.toml", text)
    path.chmod(0o644)
    return path


def tree_state(root: Path, tops: Sequence[str]) -> dict[str, tuple[int, int, bytes]]:
    """Every file under the tops with its mode, mtime and content: the old files, to show them untouched."""
    out = {}
    for top in tops:
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and not path.is_symlink():
                info = path.stat()
                out[str(path)] = (info.st_mode, info.st_mtime_ns, path.read_bytes())
    return out
