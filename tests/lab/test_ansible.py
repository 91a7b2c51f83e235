"""Two farm computers set up by Ansible over SSH (issue 18), for real.

Two systemd containers are two farm PCs, each with Debian's sshd on a loopback port (2220, 2221) and
a user `maker` who may sudo, as a maker's Debian PC has. ansible-core (PyPI, pinned in the test
extras) runs packaging/ansible/site.yml against them with a key this test makes and the PCs' own
host keys: the role puts each PC's /etc/octobrix.toml (from the inventory) and octobrix's .deb
(packaging/build-deb.sh) there, the printers come up (OctoPrint's virtual printers: ports 5720-5721
on PC one, 5730-5731 on PC two; front doors on 8720 and 8721), and each PC's FDM Monster file lands
on the control machine. A second run reports changed=0 and restarts no OctoPrint. Both PCs'
printers go into one real FDM Monster (5738) with the collected files, and one real Prometheus
(5739) scrapes both front doors.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab.harness.container import Container, booted
from tests.lab.harness.fdm_monster import FdmMonster, fdm_monster
from tests.lab.harness.installs import USER, add_sudo_user, built_deb, holding_printer_ports, unit_identity
from tests.lab.harness.procs import lab_tempdir
from tests.lab.harness.project import REPO
from tests.lab.harness.prometheus import Scrape, prometheus, query
from tests.lab.harness.waiting import wait_until

pytestmark = pytest.mark.lab


@dataclass(frozen=True)
class FarmPc:
    ssh_port: int
    front_door: int
    printers: dict[str, int]


PCS = {
    "farm-pc-1": FarmPc(2220, 8720, {"alpha": 5720, "beta": 5721}),
    "farm-pc-2": FarmPc(2221, 8721, {"gamma": 5730, "delta": 5731}),
}
FDM_PORT = 5738
PROMETHEUS = 5739
HELD_PORTS = [2220, 2221, *range(5720, 5730), *range(5730, 5738), FDM_PORT, PROMETHEUS, 8720, 8721]
PLAYBOOK = REPO / "packaging/ansible/site.yml"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Run:
    result: subprocess.CompletedProcess[str]
    seconds: float

    def recap(self) -> dict[str, dict[str, int]]:
        return {
            host: {"ok": int(ok), "changed": int(changed), "unreachable": int(unreachable), "failed": int(failed)}
            for host, ok, changed, unreachable, failed in RECAP.findall(self.result.stdout)
        }

    def output(self) -> str:
        return f"{self.result.stdout[-6000:]}\n{self.result.stderr[-3000:]}"


@dataclass(frozen=True)
class Fleet:
    boxes: dict[str, Container]
    control: Path  # the control machine's folder: key, inventory, known_hosts, exports
    first: Run

    def playbook(self, inventory: str = "inventory.json", *extra: str) -> Run:
        return run_playbook(self.control, inventory, *extra)


def host_config(pc: FarmPc) -> dict[str, Any]:
    """What the maker writes in the inventory for one farm PC."""
    return {
        # What FDM Monster and Prometheus, on this machine, reach the PC by.
        "octobrix": {"public_host": "127.0.0.1"},
        "frontdoor": {"port": pc.front_door, "metrics": True},
        "printers": {name: {"virtual": True, "port": port} for name, port in pc.printers.items()},
    }


def prepare_pc(box: Container, pc: FarmPc, public_key: str) -> str:
    """A Debian PC with sshd on its port (never 22: the network is this machine's) and a user who may
    sudo and logs in with the control machine's key; returns its known_hosts line."""
    box.write_file("/etc/ssh/sshd_config.d/lab.conf", f"Port {pc.ssh_port}\nListenAddress 127.0.0.1\n")
    # nspawn names the container's host; sudo wants to resolve it.
    box.write_file("/etc/hosts", f"127.0.0.1\tlocalhost {box.name}\n::1\tlocalhost\n")
    add_sudo_user(box, "openssh-server")
    box.write_file(f"/home/{USER}/.ssh/authorized_keys", public_key, mode=0o600)
    box.run(["chown", "-R", f"{USER}:{USER}", f"/home/{USER}/.ssh"])
    box.run(["chmod", "700", f"/home/{USER}/.ssh"])
    box.systemctl("restart", "ssh.service")
    host_key = box.read_file("/etc/ssh/ssh_host_ed25519_key.pub").split()[:2]
    return f"[127.0.0.1]:{pc.ssh_port} {' '.join(host_key)}\n"


def write_inventory(control: Path, deb: Path) -> None:
    hosts = {
        name: {
            "ansible_host": "127.0.0.1",
            "ansible_port": pc.ssh_port,
            "ansible_user": USER,
            "ansible_ssh_private_key_file": str(control / "id_ed25519"),
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={control / 'known_hosts'}",
            "ansible_python_interpreter": "/usr/bin/python3",
            "octobrix_config": host_config(pc),
        }
        for name, pc in PCS.items()
    }
    inventory = {
        "farm": {"hosts": hosts, "vars": {"octobrix_deb": str(deb), "octobrix_export_dir": str(control / "exports")}}
    }
    (control / "inventory.json").write_text(json.dumps(inventory, indent=2))


def run_playbook(control: Path, inventory: str = "inventory.json", *extra: str) -> Run:
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(control),
        "ANSIBLE_HOME": str(control / "ansible"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PIPELINING": "1",
        "LANG": "C.UTF-8",
    }
    argv = [
        str(Path(sys.executable).with_name("ansible-playbook")),
        "-i",
        str(control / inventory),
        *extra,
        str(PLAYBOOK),
    ]
    started = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1500, check=False)
    return Run(result, time.monotonic() - started)


@pytest.fixture(scope="module")
def fleet(lab_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = Path(tmp_path_factory.mktemp("ansible", numbered=True))
    # Short: ssh's control sockets live under it.
    control = lab_tempdir("ansible")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(control / "id_ed25519")], check=True)
    public_key = (control / "id_ed25519.pub").read_text()
    with holding_printer_ports(HELD_PORTS, front_door_port=None), contextlib.ExitStack() as stack:
        with ThreadPoolExecutor(max_workers=3) as pool:
            # The package builds (~80 s) while the PCs boot and get their sshd.
            deb = pool.submit(built_deb)
            boxes = {name: stack.enter_context(booted(workdir / name, boot_timeout=120)) for name in PCS}
            known = pool.map(lambda n: prepare_pc(boxes[n], PCS[n], public_key), PCS)
            (control / "known_hosts").write_text("".join(known))
            write_inventory(control, deb.result())
        first = run_playbook(control)
        yield Fleet(boxes, control, first)


@pytest.fixture(scope="module")
def fdm(fleet: Fleet) -> Iterator[FdmMonster]:
    with fdm_monster(FDM_PORT) as server:
        yield server


def test_one_run_brings_both_pcs_up_with_their_printers(fleet: Fleet) -> None:
    recap = fleet.first.recap()
    assert recap.keys() == PCS.keys(), fleet.first.output()
    assert fleet.first.result.returncode == 0, fleet.first.output()
    for name, box in fleet.boxes.items():
        assert recap[name]["failed"] == 0 and recap[name]["unreachable"] == 0, fleet.first.output()
        rows = {row["name"]: row for row in json.loads(box.run(["octobrixctl", "status", "--json"]).stdout)["printers"]}
        assert sorted(rows) == sorted(PCS[name].printers), f"{name} runs other printers: {sorted(rows)}"
        for printer, row in rows.items():
            assert row["printer_state"] == "Operational", f"{name}/{printer}: {row}"
        # The inventory's values, as octobrix read them: each PC its own ports and front door.
        assert f"port = {PCS[name].front_door}" in box.read_file("/etc/octobrix.toml")
    print(f"first run: {fleet.first.seconds:.0f} s")


def test_a_second_run_changes_nothing(fleet: Fleet) -> None:
    units = {name: [f"octoprint@{p}.service" for p in pc.printers] for name, pc in PCS.items()}
    before = {name: unit_identity(box, units[name]) for name, box in fleet.boxes.items()}
    exports = {path.name: path.read_bytes() for path in (fleet.control / "exports").iterdir()}
    second = fleet.playbook()
    print(f"second run: {second.seconds:.0f} s")
    assert second.result.returncode == 0, second.output()
    recap = second.recap()
    assert {host: counts["changed"] for host, counts in recap.items()} == dict.fromkeys(PCS, 0), second.output()
    assert {name: unit_identity(box, units[name]) for name, box in fleet.boxes.items()} == before, (
        "an OctoPrint restarted"
    )
    assert {path.name: path.read_bytes() for path in (fleet.control / "exports").iterdir()} == exports


def test_a_value_octobrix_refuses_stops_the_run_and_changes_nothing(fleet: Fleet) -> None:
    """A serial number with a quote in it: valid TOML once the role has quoted it, refused by
    `octobrixctl check` before the file is replaced, with the key path."""
    inventory = json.loads((fleet.control / "inventory.json").read_text())
    config = inventory["farm"]["hosts"]["farm-pc-1"]["octobrix_config"]
    config["printers"]["bad"] = {"serial": 'AB"CD', "port": 5722}
    (fleet.control / "inventory-bad.json").write_text(json.dumps(inventory))
    box = fleet.boxes["farm-pc-1"]
    units = [f"octoprint@{p}.service" for p in PCS["farm-pc-1"].printers]
    before = (box.read_file("/etc/octobrix.toml"), unit_identity(box, units))
    refused = fleet.playbook("inventory-bad.json", "--limit", "farm-pc-1")
    assert refused.result.returncode != 0, refused.output()
    assert "printers.bad.serial" in refused.result.stdout, refused.output()
    assert refused.recap()["farm-pc-1"]["failed"] == 1, refused.output()
    assert (box.read_file("/etc/octobrix.toml"), unit_identity(box, units)) == before


def test_both_pcs_printers_go_into_one_fdm_monster(fleet: Fleet, fdm: FdmMonster) -> None:
    exports = sorted((fleet.control / "exports").iterdir())
    assert [path.name for path in exports] == [f"{name}-fdm-monster.yaml" for name in sorted(PCS)]
    assert all(path.stat().st_mode & 0o077 == 0 for path in exports), "the files hold keys: owner only"
    for path in exports:
        answer = fdm.upload("/api/server/yaml-import", [("file", path.read_text(), path.name)])
        assert answer["success"] is True, answer
    printers = {printer["name"]: printer for printer in fdm.get("/api/printer")}
    ports = {name: port for pc in PCS.values() for name, port in pc.printers.items()}
    assert {name: p["printerURL"] for name, p in printers.items()} == {
        name: f"http://127.0.0.1:{port}" for name, port in ports.items()
    }

    def states() -> dict[str, str | None]:
        found = {}
        for name, printer in printers.items():
            current = (fdm.get(f"/api/printer/{printer['id']}/socket").get("current") or {}).get("payload") or {}
            found[name] = (current.get("state") or {}).get("text")
        return found

    try:
        wait_until("FDM Monster to see every printer Operational",
                   lambda: set(states().values()) == {"Operational"}, timeout=120, every=2)  # fmt: skip
    except AssertionError as error:
        raise AssertionError(f"{error}\nFDM Monster's log:\n{fdm.log_tail()}") from None


def test_one_prometheus_scrapes_both_pcs(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> None:
    work = Path(tmp_path_factory.mktemp("prometheus", numbered=True))
    jobs = {
        name: Scrape(
            f"127.0.0.1:{PCS[name].front_door}", box.read_file("/var/lib/octobrix/.secrets/metrics-token").strip()
        )
        for name, box in fleet.boxes.items()
    }
    with prometheus(work, PROMETHEUS, jobs) as base:
        for name, pc in PCS.items():
            wait_until(f"Prometheus to see {name}'s printers up",
                       lambda: query(base, f'sum(octobrix_printer_up{{job="{name}"}})') == len(pc.printers),  # noqa: B023
                       timeout=60, every=1)  # fmt: skip
        assert query(base, "sum(octobrix_printer_up)") == sum(len(pc.printers) for pc in PCS.values())
