"""Every validation rule with a good and a bad case; errors carry the key path and the line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from octobrixd.config.model import load_config, parse_config
from octobrixd.config.streamers import Streamer
from octobrixd.config.values import DEFAULT_OCTOPRINT, PixelFormat
from octobrixd.errors import ConfigError

SRC = "/etc/octobrix.toml"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, SRC)
    return caught.value.problems


def only_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


GOOD_PRINTER = '[printers.p1]\nserial = "CZPX1919X004XC24974"\nport = 5001\n'


def test_full_example_parses_with_defaults() -> None:
    config = parse_config(
        '[octobrix]\nlisten = "127.0.0.1"\n\n'
        '[printers.printer1]\nserial = "CZPX1919X004XC24974"\nport = 5001\nbaudrate = 250000\n'
        'camera = "cam1"\noctoprint = "octoprint==1.10.3"\nplugins = ["OctoPrint-PSUControl==1.0.6"]\n\n'
        "[printers.demo]\nvirtual = true\nport = 5000\n\n"
        '[cameras.cam1]\nusb_port = "1-1.2"\nport = 8081\nformat = "yuyv"\nstreamer = "mjpg-streamer"\n',
        SRC,
    )
    assert config.octobrix.octoprint == DEFAULT_OCTOPRINT
    assert config.octobrix.listen == "127.0.0.1"
    assert config.octoprint_requirement("printer1") == "octoprint==1.10.3"
    assert config.octoprint_requirement("demo") == DEFAULT_OCTOPRINT
    assert config.printers["printer1"].plugins == ("OctoPrint-PSUControl==1.0.6",)
    assert config.cameras["cam1"].format is PixelFormat.YUYV
    assert config.streamer_of("cam1") is Streamer.MJPG_STREAMER
    assert (config.cameras["cam1"].width, config.cameras["cam1"].height) == (1280, 720)


def test_empty_file_is_a_valid_farm_of_nothing() -> None:
    config = parse_config("", SRC)
    assert config.printers == {} and config.cameras == {}


# (case id, good value, bad value, key, expected fragment of the message)
FIELD_CASES = [
    ("serial-quote", '"CZPX1919"', '"CZ\\"PX"', "serial", "bind it by usb_port instead"),
    ("serial-backslash", '"A9M9DV3R"', '"A9\\\\M9"', "serial", "'\\\\'"),
    ("serial-newline", '"2050315E5748"', '"20\\nSUBSYSTEM"', "serial", "'\\n'"),
    ("serial-percent", '"SN-1"', '"SN%k"', "serial", "'%'"),
    ("serial-dollar", '"SN_1"', '"SN$devnode"', "serial", "'$'"),
    ("serial-glob", '"SN:1.2"', '"SN*"', "serial", "'*'"),
    ("serial-root-hub", '"0000:2A"', '"0000:00:14.0"', "serial", "a USB controller's address"),
    ("serial-empty", '"X"', '""', "serial", "must not be empty"),
    # A regex's "$" also matches before a final newline, which would split the udev rule in two.
    ("serial-trailing-newline", '"SN1"', '"SN1\\n"', "serial", "'\\n'"),
    ("usb-port-trailing-newline", '"1-1.2"', '"1-1.2\\n"', "usb_port", "is not a USB port path"),
    ("octoprint-trailing-newline", '"octoprint==1.10.3"', '"octoprint==1.10.3\\n"', "octoprint", "pip options"),
    ("octoprint-trailing-space-newline", '"octoprint"', '"octoprint \\n"', "octoprint", "pip options"),
    ("usb-port-format", '"1-1.2"', '"usb1/1-1"', "usb_port", "is not a USB port path"),
    ("usb-port-quote", '"3-2.4.1"', '"1-1\\""', "usb_port", "is not a USB port path"),
    ("port-range-low", "1024", "80", "port", "outside 1024–65535"),
    ("port-range-high", "65535", "70000", "port", "outside 1024–65535"),
    ("port-type", "5001", '"5001"', "port", "should be a whole number"),
    ("baudrate", "250000", "1234", "baudrate", "not a serial speed"),
    ("memory_limit", '"1G"', '"100M"', "memory_limit", "at least 256M"),
    ("memory_limit-format", '"512M"', '"512MB; rm"', "memory_limit", 'not a size like "512M"'),
    ("cpu_weight", "500", "0", "cpu_weight", "out of range"),
    ("nice", "-5", "20", "nice", "out of range"),
    ("octoprint-pin", '"octoprint==1.10.3"', '"octoprint @ https://x/y.zip"', "octoprint", "URLs, paths"),
    ("octoprint-option", '"OctoPrint>=1.10,<1.12"', '"--index-url=http://evil"', "octoprint", "pip options"),
    (
        "octoprint-other-project",
        '"octoprint~=1.11.0"',
        '"klipper==0.12"',
        "octoprint",
        "does not install OctoPrint",
    ),
    ("plugins", '["OctoPrint-MFATOTP==1.1.1"]', '["ok==1", "-e ./evil"]', "plugins", "is not a plugin"),
    (
        "plugin-url",
        '["https://github.com/kantlivelong/OctoPrint-PSUControl/archive/1.0.6.zip"]',
        '["http://example.com/plain.zip"]',
        "plugins",
        "https:// archive URL",
    ),
    (
        "plugin-url-quote",
        '["PSU @ https://x.example/a.zip"]',
        '["https://x.example/a\'b.zip"]',
        "plugins",
        "is not a plugin",
    ),
    ("plugin-path", '["a==1"]', '["/tmp/evil.whl"]', "plugins", "is not a plugin"),
    ("camera-ref-name", '"cam-1"', '"Cam/1"', "camera", "not a valid name"),
]


@pytest.mark.parametrize(
    ("good", "bad", "key", "fragment"), [c[1:] for c in FIELD_CASES], ids=[c[0] for c in FIELD_CASES]
)
def test_printer_field(good: str, bad: str, key: str, fragment: str) -> None:
    match = "" if key in ("serial", "usb_port") else 'serial = "SN1"\n'
    extra_camera = ""
    if key == "camera":
        extra_camera = '\n[cameras.cam-1]\nusb_port = "1-2"\nport = 8081\n'
    good_text = f"[printers.p1]\n{match}port = 5001\n{key} = {good}\n{extra_camera}"
    if key == "port":
        good_text = f'[printers.p1]\nserial = "SN1"\n{key} = {good}\n'
    parse_config(good_text, SRC)

    bad_text = good_text.replace(f"{key} = {good}", f"{key} = {bad}")
    message = only_problem(bad_text)
    line = bad_text.splitlines().index(f"{key} = {bad}") + 1
    assert message.startswith(f"{SRC}:{line}: printers.p1.{key}"), message
    assert fragment in message, message


CAMERA_CASES = [
    ("resolution", '"1920x1080"', '"big"', 'not a resolution like "1280x720"'),
    ("resolution-huge", '"640x480"', '"99999x99999"', "at most 7680x4320"),
    ("resolution-newline", '"640x480"', '"640x480\\n"', 'not a resolution like "1280x720"'),
    ("fps", "30", "0", "out of range"),
    ("fps-float", "5", "15.0", "should be a whole number"),
    ("format", '"yuyv"', '"h264"', "'h264' is not one of 'mjpeg' or 'yuyv'"),
    ("streamer", '"mjpg-streamer"', '"vlc"', "is not one of 'ustreamer' or 'mjpg-streamer'"),
]


@pytest.mark.parametrize(("good", "bad", "fragment"), [c[1:] for c in CAMERA_CASES], ids=[c[0] for c in CAMERA_CASES])
def test_camera_field(good: str, bad: str, fragment: str, request: pytest.FixtureRequest) -> None:
    key = request.node.callspec.id.split("-")[0]
    text = f'[cameras.cam1]\nserial = "SN0001"\nport = 8081\n{key} = {good}\n'
    parse_config(text, SRC)
    message = only_problem(text.replace(f"{key} = {good}", f"{key} = {bad}"))
    assert message.startswith(f"{SRC}:4: cameras.cam1.{key}"), message
    assert fragment in message


@pytest.mark.parametrize(
    ("good", "bad"),
    [
        ("printer-1", "Printer1"),
        ("a", "printer/1"),
        ("x1", "-x"),
        ("demo", "x" * 24),
        ("p-2", "p_2"),
        ("ok", ".."),
    ],
)
def test_instance_names(good: str, bad: str) -> None:
    parse_config(f'[printers."{good}"]\nvirtual = true\nport = 5000\n', SRC)
    message = only_problem(f'[printers."{bad}"]\nvirtual = true\nport = 5000\n')
    assert message.startswith(f"{SRC}:1: printers.{bad}: "), message
    assert "lowercase letters, digits and dashes" in message


def test_a_printer_is_matched_by_exactly_one_thing() -> None:
    parse_config('[printers.p]\nusb_port = "1-1"\nport = 5000\n', SRC)
    none = only_problem("[printers.p]\nport = 5000\n")
    assert none.startswith(f"{SRC}:1: printers.p: must be matched by exactly one of serial, usb_port or virtual")
    two = only_problem('[printers.p]\nserial = "A"\nusb_port = "1-1"\nport = 5000\n')
    assert "(has serial and usb_port)" in two
    virtual_too = only_problem('[printers.p]\nserial = "A"\nvirtual = true\nport = 5000\n')
    assert "(has serial and virtual)" in virtual_too


def test_virtual_printer_with_baudrate_is_rejected() -> None:
    message = only_problem("[printers.p]\nvirtual = true\nport = 5000\nbaudrate = 115200\n")
    assert "baudrate has no meaning for a virtual printer" in message


def test_camera_needs_exactly_one_match() -> None:
    message = only_problem("[cameras.c]\nport = 8080\n")
    assert message.startswith(f"{SRC}:1: cameras.c: must be matched by exactly one of serial, usb_port or device_name")
    both = only_problem('[cameras.c]\nserial = "SN1"\ndevice_name = "Cam"\nport = 8080\n')
    assert "(has serial and device_name)" in both


def test_every_printer_and_camera_states_its_port() -> None:
    message = only_problem('[cameras.c]\nserial = "X"\n')
    assert message == f"{SRC}:1: cameras.c.port: is required — add it"


def test_unknown_keys_and_sections_are_errors() -> None:
    found = problems(
        '[octobrix]\nlisten = "::"\ncolour = "red"\n\n[printers.p]\nvirtual = true\nport = 5000\nprot = 5001\n\n'
        "[printer.q]\nport = 1\n"
    )
    assert found == [
        f"{SRC}:3: octobrix.colour: unknown key — check the spelling; known keys here: octoprint, wheels, listen, "
        "streamer, public_host, backup_schedule, backup_keep",
        f"{SRC}:8: printers.p.prot: unknown key — check the spelling; known keys here: serial, usb_port, virtual, "
        "port, door_port, baudrate, camera, octoprint, plugins, memory_limit, cpu_weight, nice",
        f"{SRC}:10: printer: unknown section — known sections: octobrix, frontdoor, uvcvideo, printers, cameras",
    ]


def test_listen_must_be_an_address() -> None:
    parse_config('[octobrix]\nlisten = "0.0.0.0"\n', SRC)
    message = only_problem('[octobrix]\nlisten = "0.0.0.0; rm -rf /"\n')
    assert message.startswith(f"{SRC}:2: octobrix.listen: '0.0.0.0; rm -rf /' is not an IP address")


def test_wheels_folder_is_an_absolute_path() -> None:
    assert parse_config('[octobrix]\nwheels = "/srv/wheels"\n', SRC).octobrix.wheels == "/srv/wheels"
    for bad in ("wheels", "/srv/../etc", "/srv/w\\nx"):
        message = only_problem(f'[octobrix]\nwheels = "{bad}"\n')
        assert message.startswith(f"{SRC}:2: octobrix.wheels: ") and "absolute folder path" in message, message


def test_uvcvideo_payload_range() -> None:
    assert parse_config("", SRC).uvcvideo.max_compressed_payload is None
    for good in (0, 128, 1024, 3072):
        parse_config(f"[uvcvideo]\nmax_compressed_payload = {good}\n", SRC)
    for bad in (64, 99999, -1):
        message = only_problem(f"[uvcvideo]\nmax_compressed_payload = {bad}\n")
        assert message.startswith(f"{SRC}:2: uvcvideo.max_compressed_payload: {bad} is not a payload"), message


def test_uvcvideo_uncompressed_bandwidth_fix_is_a_boolean() -> None:
    assert parse_config("", SRC).uvcvideo.uncompressed_bandwidth_fix is None
    assert parse_config("[uvcvideo]\nuncompressed_bandwidth_fix = true\n", SRC).uvcvideo.uncompressed_bandwidth_fix
    message = only_problem('[uvcvideo]\nuncompressed_bandwidth_fix = "yes"\n')
    assert message.startswith(f"{SRC}:2: uvcvideo.uncompressed_bandwidth_fix: "), message


def test_ports_must_not_clash_across_printers_and_cameras() -> None:
    text = GOOD_PRINTER + '\n[cameras.cam1]\nserial = "SN0001"\nport = 5001\n'
    assert only_problem(text) == f"{SRC}:7: cameras.cam1.port: 5001 is also used by printers.p1 — pick another port"
    parse_config(text.replace("port = 5001\n", "port = 8081\n", 1), SRC)


def test_two_printers_cannot_match_the_same_device() -> None:
    text = GOOD_PRINTER + '[printers.p2]\nserial = "CZPX1919X004XC24974"\nport = 5002\n'
    message = only_problem(text)
    assert message.startswith(f"{SRC}:5: printers.p2.serial: 'CZPX1919X004XC24974' already binds printers.p1")
    assert "bind both by usb_port" in message
    ports = '[printers.a]\nusb_port = "1-1.2"\nport = 5001\n[printers.b]\nusb_port = "1-1.2"\nport = 5002\n'
    assert "already binds printers.a" in only_problem(ports)
    parse_config(ports.replace('"1-1.2"\nport = 5002', '"1-1.3"\nport = 5002'), SRC)


def test_printer_and_camera_cannot_share_a_name() -> None:
    text = '[printers.x]\nvirtual = true\nport = 5000\n[cameras.x]\nusb_port = "1-2"\nport = 8080\n'
    assert "both would be /dev/octobrix/x" in only_problem(text)


def test_camera_reference_must_exist() -> None:
    text = GOOD_PRINTER + 'camera = "cam9"\n[cameras.cam1]\nusb_port = "1-2"\nport = 8080\n'
    assert only_problem(text) == (
        f"{SRC}:4: printers.p1.camera: no camera named 'cam9' (cameras: cam1) — add [cameras.cam9] or fix the name"
    )


def test_toml_syntax_error_keeps_the_position() -> None:
    message = only_problem('[printers.p1]\nport = 5001\nserial = "unterminated\n')
    assert message.startswith(f"{SRC}:3: not valid TOML: ")
    assert "(column" in message


def test_all_problems_are_reported_at_once_in_line_order() -> None:
    found = problems(
        '[printers.a]\nserial = "A"\nport = 5001\ncamera = "nope"\n\n'
        '[printers.b]\nserial = "A"\nport = 5001\n\n'
        '[cameras.c]\nusb_port = "x"\nport = 8080\n'
    )
    assert [p.split(": ", 2)[:2] for p in found] == [
        [f"{SRC}:4", "printers.a.camera"],
        [f"{SRC}:7", "printers.b.serial"],
        [f"{SRC}:8", "printers.b.port"],
        [f"{SRC}:11", "cameras.c.usb_port"],
    ]


def test_line_numbers_follow_dotted_and_quoted_keys() -> None:
    text = '# comment\n[printers]\n"p1".serial = "A"\np1.port = 80\n'
    assert only_problem(text).startswith(f"{SRC}:4: printers.p1.port:")
    multiline = '[printers.p1]\nplugins = [\n  "ok==1",\n]\nserial = "A"\nport = 5\n'
    assert only_problem(multiline).startswith(f"{SRC}:6: printers.p1.port:")


# (case id, good value, bad value, expected fragment of the message)
DEVICE_NAME_CASES = [
    ("quote", '"UVC Camera (046d:0825)"', '"Cam\\"era"', "cannot be matched safely in a udev rule"),
    ("backslash", '"Dummy video device (0x0000)"', '"Cam\\\\1"', "'\\\\'"),
    ("glob", '"mmal service 16.1"', '"Cam*"', "'*'"),
    ("bracket", '"unicam-image"', '"Cam[0]"', "'['"),
    ("pipe", '"HD Pro Webcam C920"', '"A|B"', "'|'"),
    ("percent", '"Cam 100"', '"Cam%k"', "'%'"),
    ("dollar", '"Cam-1"', '"Cam$name"', "'$'"),
    ("newline", '"Lab Cam"', '"Lab\\nCam"', "'\\n'"),
    ("edge-space", '"Lab Cam"', '"Lab Cam "', "no spaces at either end"),
    ("too-long", '"' + "x" * 63 + '"', '"' + "x" * 64 + '"', "1–63 characters"),
    ("empty", '"x"', '""', "1–63 characters"),
]


@pytest.mark.parametrize(
    ("good", "bad", "fragment"), [c[1:] for c in DEVICE_NAME_CASES], ids=[c[0] for c in DEVICE_NAME_CASES]
)
def test_camera_device_name(good: str, bad: str, fragment: str) -> None:
    text = f"[cameras.cam1]\nport = 8081\ndevice_name = {good}\n"
    config = parse_config(text, SRC)
    assert config.cameras["cam1"].match_keys() == ["device_name"]
    message = only_problem(text.replace(f"device_name = {good}", f"device_name = {bad}"))
    assert message.startswith(f"{SRC}:3: cameras.cam1.device_name: "), message
    assert fragment in message, message


def test_two_cameras_cannot_bind_the_same_device_name() -> None:
    text = '[cameras.a]\ndevice_name = "Lab Cam"\nport = 8081\n[cameras.b]\ndevice_name = "Lab Cam"\nport = 8082\n'
    assert only_problem(text).startswith(f"{SRC}:5: cameras.b.device_name: 'Lab Cam' already binds cameras.a")


def test_camera_controls_are_v4l2_names_with_whole_numbers_in_order() -> None:
    good = (
        '[cameras.cam1]\nserial = "SN1"\nport = 8081\n\n[cameras.cam1.controls]\n'
        "focus_automatic_continuous = 0\nfocus_absolute = 30\nauto_exposure = 1\nexposure_time_absolute = -5\n"
    )
    controls = parse_config(good, SRC).cameras["cam1"].controls
    assert list(controls.items()) == [
        ("focus_automatic_continuous", 0),
        ("focus_absolute", 30),
        ("auto_exposure", 1),
        ("exposure_time_absolute", -5),
    ], "the order written is the order applied"
    name = only_problem(good.replace("focus_absolute = 30", '"Focus Absolute" = 30'))
    assert name.startswith(f"{SRC}:5: cameras.cam1.controls: 'Focus Absolute': not a V4L2 control name"), name
    assert "v4l2-ctl --list-ctrls" in name
    big = only_problem(good.replace("focus_absolute = 30", "focus_absolute = 4294967296"))
    assert "'focus_absolute': the value does not fit a V4L2 control" in big
    text = only_problem(good.replace("focus_absolute = 30", 'focus_absolute = "30"'))
    assert text.startswith(f"{SRC}:7: cameras.cam1.controls.focus_absolute: '30' should be a whole number"), text


@pytest.mark.parametrize("good", ["farm.local", "octo-farm", "192.168.1.20", "fd00::20", "printers.example.org"])
def test_public_host_accepts_names_and_addresses(good: str) -> None:
    assert parse_config(f'[octobrix]\npublic_host = "{good}"\n', SRC).octobrix.public_host == good


@pytest.mark.parametrize(
    "bad", ["http://farm.local", "farm.local:8080", "farm local", "-farm", "farm_1.local", "", "farm\\n"]
)
def test_public_host_rejects_urls_and_junk(bad: str) -> None:
    message = only_problem(f'[octobrix]\npublic_host = "{bad}"\n')
    assert message.startswith(f"{SRC}:2: octobrix.public_host: "), message
    assert "without http:// or a port" in message


def test_public_host_defaults_to_this_machines_name(tmp_path: Path) -> None:
    path = tmp_path / "octobrix.toml"
    path.write_text("[printers.demo]\nvirtual = true\nport = 5000\n", encoding="utf-8")
    assert parse_config(path.read_text(), SRC).octobrix.public_host is None, "parsing alone stays pure"
    assert load_config(path).octobrix.public_host == socket.gethostname()
    path.write_text('[octobrix]\npublic_host = "farm.local"\n', encoding="utf-8")
    assert load_config(path).octobrix.public_host == "farm.local"


def test_two_cameras_with_the_same_serial_are_refused_with_the_port_hint() -> None:
    text = '[cameras.a]\nserial = "200901010001"\nport = 8081\n\n[cameras.b]\nserial = "200901010001"\nport = 8082\n'
    message = only_problem(text)
    assert message.startswith(f"{SRC}:6: cameras.b.serial: '200901010001' already binds cameras.a; "), message
    assert "several Logitech C270s report 200901010001), bind each by usb_port" in message
    assert "`octobrixctl discover` shows their ports" in message
    printers = text.replace("cameras.", "printers.").replace("808", "500")
    assert "if two boards share a serial number, bind both by usb_port" in only_problem(printers)
