"""An instance set up before the front door gets the overview's read-only user from apply, from its
running OctoPrint, without a restart (#15). A loopback HTTP server plays OctoPrint's users and
appkeys APIs here, answering as OctoPrint 1.11.8 does (tried by hand against it); the real one is in
tests/lab/test_frontdoor.py::test_a_printer_added_by_apply_answers_and_open_sessions_survive."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from octobrixd.instances import credentials as instances
from octobrixd.instances.credentials import WEB_USER, read_web_key
from octobrixd.instances.seeding import load_or_create_credentials, needs_seeding, seed_basedir
from octobrixd.system.paths import Layout
from tests.httpstub import QuietHandler, serving

USERS_YAML = "admin:\n  active: true\n  groups: [admins]\n"


class UsersApi(QuietHandler):
    calls: ClassVar[list[tuple[str, str, str, Any]]] = []
    existing: ClassVar[set[str]] = set()

    def _body(self) -> Any:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def do_POST(self) -> None:
        body = self._body()
        self.calls.append(("POST", self.path, self.headers["X-Api-Key"], body))
        if self.path == "/api/access/users":
            if body["name"] in self.existing:
                self.reply(409, b"{}")
                return
            self.existing.add(body["name"])
            self.reply(200, b'{"users": []}')
        elif self.path == "/api/plugin/appkeys":
            self.reply(
                200, json.dumps({"user_id": body["user"], "app_id": body["app"], "api_key": "MADEBYOCTOPRINT"}).encode()
            )
        else:
            self.reply(404, b"{}")

    def do_PUT(self) -> None:
        self.calls.append(("PUT", self.path, self.headers["X-Api-Key"], self._body()))
        self.reply(200, b"{}")


@pytest.fixture
def octoprint() -> Iterator[int]:
    UsersApi.calls = []
    UsersApi.existing = set()
    with serving(UsersApi) as port:
        yield port


def set_up_before_the_front_door(tmp_path: Path) -> tuple[Layout, str]:
    """An instance octobrix seeded before the overview's user existed: admin, octobrixd's key, no web key."""
    layout = Layout(tmp_path)
    credentials = load_or_create_credentials(layout, "voron")
    basedir = layout.state_dir("voron") / "basedir"
    (basedir / "data" / "appkeys").mkdir(parents=True)
    (basedir / "users.yaml").write_text(USERS_YAML, encoding="utf-8")
    keys = f"admin:\n- api_key: {credentials.api_key}\n  app_id: octobrix\n"
    (basedir / "data" / "appkeys" / "keys.yaml").write_text(keys, encoding="utf-8")
    return layout, credentials.api_key


def test_apply_sees_the_missing_overview_user(tmp_path: Path) -> None:
    layout, _admin_key = set_up_before_the_front_door(tmp_path)
    assert needs_seeding(layout, "voron")


def test_a_running_instance_makes_it_itself_with_the_status_permission_only(tmp_path: Path, octoprint: int) -> None:
    layout, admin_key = set_up_before_the_front_door(tmp_path)
    users_before = (layout.state_dir("voron") / "basedir" / "users.yaml").read_text(encoding="utf-8")
    seed_basedir(layout, "voron", -1, -1, serving_port=octoprint)

    (method, path, key, body), (_m, key_path, key_key, key_body) = UsersApi.calls
    assert (method, path, key) == ("POST", "/api/access/users", admin_key), (
        "asked as the admin, through octobrixd's key"
    )
    # No groups: OctoPrint would otherwise put it in its default groups, with all their rights.
    assert (body["name"], body["groups"], body["permissions"], body["active"]) == (WEB_USER, [], ["STATUS"], True)
    assert (key_path, key_key, key_body) == (
        "/api/plugin/appkeys", admin_key, {"command": "generate", "app": "octobrix", "user": WEB_USER}
    )  # fmt: skip
    web_key = read_web_key(layout, "voron")
    assert web_key is not None and web_key.api_key == "MADEBYOCTOPRINT", "the overview asks with OctoPrint's key"
    assert web_key.password == body["password"]
    assert (layout.state_dir("voron") / "basedir" / "users.yaml").read_text(encoding="utf-8") == users_before, (
        "the running OctoPrint saves its users itself: octobrix never writes them under it"
    )


def test_a_user_left_by_an_interrupted_apply_gets_the_new_password(tmp_path: Path, octoprint: int) -> None:
    layout, admin_key = set_up_before_the_front_door(tmp_path)
    UsersApi.existing = {WEB_USER}
    seed_basedir(layout, "voron", -1, -1, serving_port=octoprint)
    put = next(call for call in UsersApi.calls if call[0] == "PUT")
    assert put[1:3] == (f"/api/access/users/{WEB_USER}/password", admin_key)
    web_key = read_web_key(layout, "voron")
    assert web_key is not None and web_key.password == put[3]["password"]


def test_an_octoprint_that_does_not_answer_fails_nothing_and_is_asked_next_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    layout, _admin_key = set_up_before_the_front_door(tmp_path)
    with serving(QuietHandler) as port:  # answers 501 to everything
        seed_basedir(layout, "voron", -1, -1, serving_port=port)
    assert read_web_key(layout, "voron") is None
    assert needs_seeding(layout, "voron"), "the next apply (or octobrixd's) tries again"
    assert any("read-only user of voron" in r.getMessage() for r in caplog.records)


def test_once_octoprint_saved_the_key_there_is_nothing_left_to_do(tmp_path: Path, octoprint: int) -> None:
    layout, _admin_key = set_up_before_the_front_door(tmp_path)
    seed_basedir(layout, "voron", -1, -1, serving_port=octoprint)
    # What the running OctoPrint writes to its keys file once it made the key.
    keys = layout.state_dir("voron") / "basedir" / "data" / "appkeys" / "keys.yaml"
    keys.write_text(
        keys.read_text(encoding="utf-8") + f"{WEB_USER}:\n- api_key: MADEBYOCTOPRINT\n  app_id: octobrix\n",
        encoding="utf-8",
    )
    assert not needs_seeding(layout, "voron")
    assert instances.read_credentials(layout, "voron") is not None
