"""Which /dev links udev rules would give the devices of umockdev recordings.

Bookworm's udev has no offline rule checker (`udevadm verify` and `udevadm test-builtin` need a
newer systemd or a real device), so the tests judge the generated rules with this: the
recordings' sysfs tree and udev's documented matching. A device key (KERNEL, SUBSYSTEM, ATTR,
DRIVER, ENV) must hold on the device; every parent key (KERNELS, SUBSYSTEMS, ATTRS, DRIVERS)
of a rule must hold on one and the same device of its parent chain. Patterns are shell globs
with '|' alternatives. A key this module does not know fails the test instead of passing.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path

from tests.umockbed import blocks, recording_text


@dataclass
class SysDevice:
    path: str  # "/devices/..."
    node: str | None = None
    attrs: dict[str, str] = field(default_factory=dict)
    props: dict[str, str] = field(default_factory=dict)

    @property
    def kernel(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def subsystem(self) -> str:
        return self.props.get("SUBSYSTEM", "")

    @property
    def driver(self) -> str:
        return self.props.get("DRIVER", "")


def load_recordings(paths: list[Path]) -> dict[str, SysDevice]:
    devices: dict[str, SysDevice] = {}
    for path in paths:
        for block in blocks(recording_text(path)):
            device = SysDevice(path="")
            for line in block.splitlines():
                kind, _, rest = line.partition(": ")
                if kind == "P":
                    device.path = rest
                elif kind == "N":
                    device.node = "/dev/" + rest.split("=", 1)[0]
                elif kind == "E":
                    key, _, value = rest.partition("=")
                    device.props[key] = value
                elif kind == "A":
                    key, _, value = rest.partition("=")
                    device.attrs[key] = value
            devices.setdefault(device.path, device)
    return devices


def parents(devices: dict[str, SysDevice], device: SysDevice) -> list[SysDevice]:
    """The device itself, then each ancestor present in the recordings, nearest first."""
    chain = [device]
    path = device.path
    while "/" in path.strip("/"):
        path = path.rsplit("/", 1)[0]
        if path in devices:
            chain.append(devices[path])
    return chain


_KEY = re.compile(r'\s*(?P<key>[A-Z_]+)(?:\{(?P<arg>[^}]*)\})?\s*(?P<op>==|!=|\+=|:=|=)\s*"(?P<value>[^"]*)"\s*,?')


def _glob(value: str, pattern: str) -> bool:
    return any(fnmatch.fnmatchcase(value, alternative) for alternative in pattern.split("|"))


def _own_value(device: SysDevice, key: str, arg: str | None) -> str | None:
    if key == "KERNEL":
        return device.kernel
    if key == "SUBSYSTEM":
        return device.subsystem
    if key == "DRIVER":
        return device.driver
    if key == "ATTR":
        return device.attrs.get(arg or "")
    if key == "ENV":
        return device.props.get(arg or "")
    raise ValueError(f"udevmatch does not know the match key {key}")


_PARENT_KEYS = {"KERNELS": "KERNEL", "SUBSYSTEMS": "SUBSYSTEM", "DRIVERS": "DRIVER", "ATTRS": "ATTR"}
_ASSIGN_ONLY = {"SYMLINK", "OWNER", "GROUP", "MODE", "ENV", "TAG", "RUN", "NAME", "OPTIONS"}
_LINK_PRIORITY = re.compile(r"^link_priority=(-?\d+)$")


def links_for(rules: str, devices: dict[str, SysDevice]) -> dict[str, list[str]]:
    """Device node -> the SYMLINK+= values of every rule that matches it."""
    result: dict[str, list[str]] = {}
    for raw in rules.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        items = [m.groupdict() for m in _KEY.finditer(line)]
        if sum(len(m.group(0)) for m in _KEY.finditer(line)) != len(line):
            raise ValueError(f"udevmatch cannot parse this rule: {line}")
        for device in devices.values():
            if device.node is None or not _rule_matches(items, device, devices):
                continue
            for item in items:
                if item["key"] == "SYMLINK" and item["op"] in ("+=", "="):
                    result.setdefault(device.node, []).extend(item["value"].split())
    return result


def link_owners(rules: str, devices: dict[str, SysDevice]) -> dict[str, list[str]]:
    """Link -> the device nodes that end up holding it, as udev resolves a link several devices
    claim: the highest `OPTIONS+="link_priority=N"` (default 0) wins. More than one node left is a
    link that goes to whichever device udev handled last."""
    claims: dict[str, dict[str, int]] = {}
    for raw in rules.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        items = [m.groupdict() for m in _KEY.finditer(line)]
        priority = 0
        for item in items:
            if item["key"] == "OPTIONS":
                found = _LINK_PRIORITY.match(item["value"])
                if found is None:
                    raise ValueError(f"udevmatch does not know the option {item['value']}")
                priority = int(found[1])
        for device in devices.values():
            if device.node is None or not _rule_matches(items, device, devices):
                continue
            for item in items:
                if item["key"] == "SYMLINK" and item["op"] in ("+=", "="):
                    for link in item["value"].split():
                        held = claims.setdefault(link, {})
                        held[device.node] = max(held.get(device.node, priority), priority)
    owners = {}
    for link, held in claims.items():
        top = max(held.values())
        owners[link] = sorted(node for node, priority in held.items() if priority == top)
    return owners


def _rule_matches(items: list[dict[str, str]], device: SysDevice, devices: dict[str, SysDevice]) -> bool:
    parent_items = []
    for item in items:
        key, op = item["key"], item["op"]
        if op not in ("==", "!="):
            if key not in _ASSIGN_ONLY:
                raise ValueError(f"udevmatch does not know the assignment {key}")
            continue
        if key in _PARENT_KEYS:
            parent_items.append(item)
            continue
        value = _own_value(device, key, item["arg"])
        hit = value is not None and _glob(value, item["value"])
        if hit != (op == "=="):
            return False
    if not parent_items:
        return True
    for candidate in parents(devices, device):
        if all(
            (
                (value := _own_value(candidate, _PARENT_KEYS[item["key"]], item["arg"])) is not None
                and _glob(value, item["value"])
            )
            == (item["op"] == "==")
            for item in parent_items
        ):
            return True
    return False
