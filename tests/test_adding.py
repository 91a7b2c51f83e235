"""Adding a found device: the found list built from device records, the narrow request and every
refusal (nothing written), the add interface's peer check on a real socket pair, and the web
service passing a request on."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from octobrixd.adding import channel
from octobrixd.adding.found import FOUND_FILE, Found, build_found, device_id, publish
from octobrixd.adding.requests import AddRequest, RemoveRequest, answer, parse_request, perform
from octobrixd.adding.service import AddService
from octobrixd.cli.add import add_all
from octobrixd.config.model import load_config, parse_config
from octobrixd.devices.inventory import Device, complete
from octobrixd.errors import OctobrixError
from octobrixd.frontdoor import auth
from octobrixd.names import DeviceKind
from octobrixd.system.paths import Layout
from octobrixd.web.context import WebContext
from octobrixd.web.server import FarmServer, session_cookie, unix_listener
from tests.conftest import Ctl, UnixHTTPConnection
from tests.factories import camera, printer

STARTER = Path(__file__).parents[1] / "packaging" / "octobrix.toml"


def scanned(*devices: Device, config_text: str | None = None, tmp_path: Path) -> tuple[Device, ...]:
    config = parse_config(config_text, "test.toml") if config_text is not None else None
    (tmp_path / "proc").mkdir(exist_ok=True)
    return complete(devices, config=config, layout=Layout(tmp_path), query_formats=None).devices


def starter_copy(tmp_path: Path) -> Path:
    path = tmp_path / "octobrix.toml"
    path.write_text(STARTER.read_text(encoding="utf-8"), encoding="utf-8")
    path.chmod(0o644)
    return path


def comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lstrip().startswith("#")]


# ---------------------------------------------------------------------------------------------
# The found list


def test_found_lists_only_unbound_devices_with_next_free_name_and_port(tmp_path: Path) -> None:
    config = '[printers.printer1]\nserial = "OLD"\nport = 5001\n'
    devices = scanned(
        printer("/dev/ttyACM0", "1-1", "OLD"),
        printer("/dev/ttyUSB0", "1-2", "NEW1"),
        camera("/dev/video0", "2-1", "C1"),
        config_text=config,
        tmp_path=tmp_path,
    )
    found = build_found(devices, parse_config(config, "test.toml"))
    assert [(f.node, f.proposed_name, f.proposed_port) for f in found] == [
        ("/dev/ttyUSB0", "printer2", 5002),
        ("/dev/video0", "cam1", 8081),
    ]
    board = found[0].to_json()
    assert (board["vendor"], board["product"], board["serial"], board["driver"]) == ("Acme", "Board", "NEW1", "ch341")
    assert (board["bound_by"], board["match"], board["port_note"]) == ("serial", "NEW1", None)
    assert found[1].camera_mode is not None and found[1].entry(8081)["port"] == 8081


def test_two_boards_with_one_serial_are_both_proposed_by_usb_port_with_the_reason(tmp_path: Path) -> None:
    devices = scanned(printer("/dev/ttyUSB0", "1-1", "SAME"), printer("/dev/ttyUSB1", "1-2", "SAME"), tmp_path=tmp_path)
    found = build_found(devices, None)
    assert [(f.match_key, f.match_value) for f in found] == [("usb_port", "1-1"), ("usb_port", "1-2")]
    assert found[0].why_port is not None and "also reported by /dev/ttyUSB1" in found[0].why_port
    assert found[0].port_note is not None and "follows the cable, not the board" in found[0].port_note
    assert found[0].id != found[1].id


def test_found_file_is_world_readable_json(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    publish(layout, build_found(scanned(printer("/dev/ttyUSB0", "1-1", "S1"), tmp_path=tmp_path), None))
    path = layout.path(FOUND_FILE)
    assert path.stat().st_mode & 0o777 == 0o644
    assert json.loads(path.read_text())["found"][0]["serial"] == "S1"


# ---------------------------------------------------------------------------------------------
# Requests


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"op": "format-disk"}', "op:"),
        (b'{"op": "add", "device": "0123456789abcdef", "name": "ender", "serial": "X"}', "serial: not part"),
        (b'{"op": "add", "device": "../../etc", "name": "ender"}', "device: not a device id"),
        (b'{"op": "add", "device": "0123456789abcdef", "name": "x\\";rm -rf /"}', "is not a valid name"),
        (b'{"op": "add", "device": "0123456789abcdef", "name": "Ender"}', "is not a valid name"),
        (b'{"op": "add", "device": "0123456789abcdef", "name": "ender", "port": 22}', "port: 22"),
        (b'{"op": "add", "device": "0123456789abcdef", "name": "ender", "port": true}', "port: True"),
        (b'{"op": "remove", "kind": "disk", "name": "ender"}', "kind:"),
        (b'{"op": "add", "name": "' + b"a" * 5000 + b'"}', "too long"),
    ],
)
def test_a_malformed_or_hostile_request_is_refused_with_why(body: bytes, said: str) -> None:
    with pytest.raises(OctobrixError) as refused:
        parse_request(body)
    assert said in str(refused.value)
    assert refused.value.hint


def test_a_narrow_add_request_parses() -> None:
    parsed = parse_request(b'{"op": "add", "device": "0123456789abcdef", "name": "ender", "port": 5003}')
    assert parsed == AddRequest("0123456789abcdef", "ender", 5003, None)
    assert parse_request(b'{"op": "remove", "kind": "printer", "name": "ender"}') == RemoveRequest(
        DeviceKind.PRINTER, "ender"
    )


def test_add_writes_the_entry_and_keeps_every_comment_of_the_starter_file(tmp_path: Path) -> None:
    path = starter_copy(tmp_path)
    before = path.read_text()
    devices = scanned(printer("/dev/ttyUSB0", "1-1", "PRN0001"), tmp_path=tmp_path)
    found = build_found(devices, load_config(path))
    message = perform(AddRequest(found[0].id, "ender"), path, found=found, devices=devices)
    assert "added [printers.ender]" in message
    after = path.read_text()
    assert set(comments(before)) <= set(comments(after))
    config = load_config(path)
    assert config.printers["ender"].serial == "PRN0001"
    assert config.printers["ender"].port == found[0].proposed_port == 5001
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_camera_is_added_with_the_printer_that_shows_it_and_removed_from_it(tmp_path: Path) -> None:
    path = starter_copy(tmp_path)
    devices = scanned(camera("/dev/video0", "2-1", "C1"), tmp_path=tmp_path)
    found = build_found(devices, load_config(path))
    perform(AddRequest(found[0].id, "democam", printer="demo"), path, found=found, devices=devices)
    config = load_config(path)
    assert config.printers["demo"].camera == "democam" and config.cameras["democam"].serial == "C1"
    perform(RemoveRequest(DeviceKind.CAMERA, "democam"), path)
    config = load_config(path)
    assert "democam" not in config.cameras and config.printers["demo"].camera is None


def refusal(path: Path, request: AddRequest | RemoveRequest, **kw: object) -> dict[str, object]:
    before = path.read_bytes()
    reply = answer(lambda: perform(request, path, **kw))  # type: ignore[arg-type]
    assert reply["ok"] is False and reply["hint"], reply
    assert path.read_bytes() == before, "nothing was written"
    return reply


def test_every_refusal_says_why_and_what_to_do_and_writes_nothing(tmp_path: Path) -> None:
    path = starter_copy(tmp_path)
    config_text = path.read_text() + '\n[printers.prusa]\nserial = "P1"\nport = 5001\n'
    path.write_text(config_text)
    devices = scanned(
        printer("/dev/ttyUSB0", "1-1", "P1"), printer("/dev/ttyUSB1", "1-2", "NEW"), config_text=config_text,
        tmp_path=tmp_path,
    )  # fmt: skip
    found = build_found(devices, load_config(path))
    (new,) = found
    seen = {"found": found, "devices": devices}
    assert "taken by printers.demo" in str(refusal(path, AddRequest(new.id, "demo"), **seen)["error"])
    port = refusal(path, AddRequest(new.id, "ender", port=5000), **seen)
    assert "printers.ender.port: 5000 is already used by printers.demo" in str(port["error"])
    assert "5002" in str(port["hint"])
    bound = refusal(path, AddRequest(device_id(devices[0]), "ender"), **seen)
    assert "already bound by printers.prusa" in str(bound["error"])
    unseen = refusal(path, AddRequest("0123456789abcdef", "ender"), **seen)
    assert "has not seen that device" in str(unseen["error"])
    busy = refusal(path, RemoveRequest(DeviceKind.PRINTER, "prusa"), busy=lambda name: name == "prusa")
    assert "prusa is printing" in str(busy["error"]) and "once the print has ended" in str(busy["hint"])
    assert "no such entry" in str(refusal(path, RemoveRequest(DeviceKind.PRINTER, "nope"))["error"])
    perform(RemoveRequest(DeviceKind.PRINTER, "prusa"), path)
    assert "prusa" not in load_config(path).printers


# ---------------------------------------------------------------------------------------------
# The add interface


def test_the_peer_check_sees_the_real_uid_of_the_other_end() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        assert channel.peer_uid(ours) == os.getuid()
        channel.check_peer(ours, os.getuid())
        with pytest.raises(OctobrixError, match=f"not uid {os.getuid()}'s"):
            channel.check_peer(ours, os.getuid() + 1)


def test_a_connection_from_another_uid_is_refused_before_its_request_is_read() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    handled: list[bytes] = []

    def handle(data: bytes) -> dict[str, object]:
        handled.append(data)
        return {"ok": True, "message": "done"}

    with theirs:
        theirs.sendall(b'{"op": "remove", "kind": "printer", "name": "demo"}\n')
        channel.serve(ours, os.getuid() + 1, handle)
        reply = json.loads(channel.read_line(theirs))
    assert reply["ok"] is False and "refused" in reply["error"] and "octobrixctl add" in reply["hint"]
    assert handled == []


def test_the_add_socket_is_for_its_group_only_and_carries_one_request_and_answer(tmp_path: Path) -> None:
    path = tmp_path / "run" / "add.sock"
    listener = channel.listen(path, os.getgid())
    assert path.stat().st_mode & 0o777 == 0o660 and path.stat().st_gid == os.getgid()
    got: list[bytes] = []

    def handle(data: bytes) -> dict[str, object]:
        got.append(data)
        return {"ok": True, "message": "fine"}

    def server() -> None:
        conn, _ = listener.accept()
        channel.serve(conn, os.getuid(), handle)

    thread = threading.Thread(target=server)
    thread.start()
    reply = channel.ask(path, {"op": "add", "device": "0123456789abcdef", "name": "ender"})
    thread.join(5)
    listener.close()
    assert reply == {"ok": True, "message": "fine"}
    assert json.loads(got[0]) == {"op": "add", "device": "0123456789abcdef", "name": "ender"}


def test_asking_with_no_octobrixd_says_what_to_check(tmp_path: Path) -> None:
    with pytest.raises(OctobrixError, match="cannot reach octobrixd") as error:
        channel.ask(tmp_path / "none.sock", {"op": "add"})
    assert error.value.hint and "systemctl status octobrixd" in error.value.hint


def test_a_hostile_name_from_the_terminal_is_refused_the_same_way(tmp_path: Path) -> None:
    path = starter_copy(tmp_path)
    devices = scanned(printer("/dev/ttyUSB0", "1-1", "PRN0001"), tmp_path=tmp_path)
    found = build_found(devices, load_config(path))
    reply = refusal(path, AddRequest(found[0].id, 'x"]\n[printers.evil'), found=found, devices=devices)
    assert "is not a valid name" in str(reply["error"])


# ---------------------------------------------------------------------------------------------
# The web service passes requests on


def web_request(web: Path, method: str, path: str, cookie: str, body: object = None, **headers: str) -> tuple[int, Any]:
    conn = UnixHTTPConnection(web, timeout=10)
    data = None if body is None else json.dumps(body).encode()
    sent = {"Cookie": cookie, "Content-Type": "application/json", **headers}
    conn.request(method, path, body=data, headers=sent)
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"null")


def test_the_web_service_shows_the_found_list_and_passes_only_the_narrow_request_on(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    publish(layout, build_found(scanned(printer("/dev/ttyUSB0", "1-1", "S1"), tmp_path=tmp_path), None))
    login = auth.make_login("farm", "pw")
    web_socket = tmp_path / "web.sock"
    context = WebContext(config=parse_config(STARTER.read_text()), login=login, layout=layout)
    server = FarmServer(context, unix_listener(web_socket))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    listener = channel.listen(channel.socket_path(tmp_path), os.getgid())
    got: list[bytes] = []

    def handle(data: bytes) -> dict[str, object]:
        got.append(data)
        return {"ok": False, "error": "no", "hint": "h"}

    def octobrixd() -> None:
        conn, _ = listener.accept()
        channel.serve(conn, os.getuid(), handle)

    thread = threading.Thread(target=octobrixd)
    thread.start()
    try:
        cookie = f"{auth.COOKIE}={session_cookie(context)}"
        status, body = web_request(web_socket, "GET", "/api/found", cookie)
        assert status == 200 and body["found"][0]["serial"] == "S1"
        assert web_request(web_socket, "GET", "/api/found", "")[0] == 401
        assert web_request(web_socket, "POST", "/api/add", "", {"device": "x", "name": "y"})[0] == 401
        other_site = {"Origin": "http://evil.example", "Host": "farm"}
        assert web_request(web_socket, "POST", "/api/add", cookie, {"name": "y"}, **other_site)[0] == 403
        item = body["found"][0]
        posted = {"device": item["id"], "name": "ender", "serial": "FORGED", "virtual": True}
        status, answer_body = web_request(web_socket, "POST", "/api/add", cookie, posted)
        thread.join(5)
        assert status == 409 and answer_body == {"ok": False, "error": "no", "hint": "h"}
        assert json.loads(got[0]) == {"op": "add", "device": item["id"], "name": "ender"}
    finally:
        server.shutdown()
        server.server_close()
        listener.close()


def test_octobrixd_answers_from_its_own_found_list_and_asks_for_an_apply_only_after_a_write(tmp_path: Path) -> None:
    path = starter_copy(tmp_path)
    applied: list[bool] = []
    service = AddService(path, Layout(tmp_path), lambda _name: False, lambda: applied.append(True))
    devices = scanned(printer("/dev/ttyUSB0", "1-1", "PRN0001"), tmp_path=tmp_path)
    service.devices, service.found = devices, build_found(devices, load_config(path))
    request = {"op": "add", "device": service.found[0].id, "name": "ender"}
    refused = service.handle(json.dumps({**request, "name": "demo"}).encode())
    assert refused["ok"] is False and applied == []
    added = service.handle(json.dumps(request).encode())
    assert added["ok"] is True and applied == [True]
    assert load_config(path).printers["ender"].serial == "PRN0001"
    published = json.loads((tmp_path / FOUND_FILE).read_text())
    assert (published["found"], published["setting_up"]) == ([], {"ender": "printer"}), "being set up, not found"
    assert service.handle(json.dumps(request).encode())["ok"] is False, "the same device cannot be added twice"


def test_a_dry_run_shows_the_entry_and_writes_nothing(tmp_path: Path) -> None:
    path = starter_copy(tmp_path)
    before = path.read_bytes()
    devices = scanned(printer("/dev/ttyUSB0", "1-1", None), tmp_path=tmp_path)
    found = build_found(devices, load_config(path))
    shown = perform(AddRequest(found[0].id, "ender"), path, found=found, devices=devices, dry_run=True)
    assert '+[printers.ender]\n+usb_port = "1-1"\n+port = 5001' in shown
    assert "follows the cable" in shown, "the entry says it is bound by port, and what that means"
    assert path.read_bytes() == before


# ---------------------------------------------------------------------------------------------
# `octobrixctl add --all`: everything plugged in, one question


def plugged_beside_the_starter(tmp_path: Path, *plugged: Device) -> tuple[Path, tuple[Device, ...], tuple[Found, ...]]:
    path = starter_copy(tmp_path)
    devices = scanned(*plugged, tmp_path=tmp_path)
    return path, devices, build_found(devices, load_config(path))


def test_add_all_adds_every_found_board_and_camera_after_one_question(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, devices, found = plugged_beside_the_starter(
        tmp_path,
        printer("/dev/ttyUSB0", "1-1", "PRN0001"),
        printer("/dev/ttyUSB1", "1-2", "PRN0002"),
        camera("/dev/video0", "1-3", "CAM0001"),
    )
    asked: list[int] = []

    def yes(count: int) -> bool:
        asked.append(count)
        return True

    said = add_all(found, devices, path, printer="demo", confirm=yes)
    assert asked == [3], "one question for all three"
    assert [line.split(" to ")[0] for line in said] == [
        "added [printers.printer1]", "added [printers.printer2]", "added [cameras.cam1]"
    ]  # fmt: skip
    shown = capsys.readouterr().out
    assert "-> [printers.printer2] on port 5002" in shown and "serial PRN0002" in shown, shown
    text = path.read_text(encoding="utf-8")
    assert set(comments(STARTER.read_text(encoding="utf-8"))) <= set(comments(text)), "the starter's comments kept"
    config = load_config(path)
    assert (config.printers["printer1"].serial, config.printers["printer1"].port) == ("PRN0001", 5001)
    assert (config.printers["printer2"].serial, config.printers["printer2"].port) == ("PRN0002", 5002)
    assert config.cameras["cam1"].serial == "CAM0001" and config.printers["demo"].camera == "cam1"
    with pytest.raises(OctobrixError, match="nothing is plugged in that is not in the farm yet") as nothing:
        add_all(build_found(scanned(*devices, config_text=text, tmp_path=tmp_path), config), devices, path)
    assert nothing.value.hint and "octobrixctl discover" in nothing.value.hint


def test_add_all_answered_no_or_refused_writes_nothing(tmp_path: Path) -> None:
    path, devices, found = plugged_beside_the_starter(
        tmp_path,
        printer("/dev/ttyUSB0", "1-1", "PRN0001"),
        camera("/dev/video0", "1-3", "CAM0001"),
        camera("/dev/video2", "1-4", "CAM0002"),
    )
    before = path.read_bytes()
    assert add_all(found, devices, path, confirm=lambda _n: False) == ["nothing added"]
    with pytest.raises(OctobrixError, match="--printer demo: --all would add 2 cameras") as which:
        add_all(found, devices, path, printer="demo", confirm=lambda _n: True)
    assert which.value.hint and "--device NODE --printer NAME" in which.value.hint
    shown = add_all(found, devices, path, dry_run=True, confirm=lambda _n: pytest.fail("a dry run asks nothing"))
    assert '+[printers.printer1]\n+serial = "PRN0001"\n+port = 5001' in shown[0], shown
    assert path.read_bytes() == before


def test_add_all_with_a_name_says_why_not_and_changes_nothing(tmp_path: Path, ctl: Ctl) -> None:
    path = starter_copy(tmp_path)
    before = path.read_bytes()
    result = ctl("add", "--all", "--name", "ender", "--config", path, "--root", tmp_path / "root")
    assert result.returncode == 1
    assert "--all adds every device with its proposed name and port" in result.stderr, result.stderr
    assert "hint: add one device with its own name" in result.stderr, result.stderr
    assert path.read_bytes() == before
