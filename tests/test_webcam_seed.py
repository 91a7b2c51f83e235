"""A printer without a camera gets no empty "Webcam stream not loaded" panel in OctoPrint; giving it a
camera turns its webcam on again (the settings OctoPrint 1.11's Control tab reads: webcam.webcamEnabled)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.test_apply import TWO_PRINTERS, apply_text


def webcam_settings(root: Path, name: str) -> dict[str, object]:
    settings = yaml.safe_load((root / f"var/lib/octobrix/{name}/basedir/config.yaml").read_text())
    webcam: dict[str, object] = settings["webcam"]
    return webcam


def test_the_webcam_is_off_without_a_camera_and_on_once_one_is_set(tmp_path: Path) -> None:
    apply_text(TWO_PRINTERS, tmp_path)
    assert webcam_settings(tmp_path, "printer1")["webcamEnabled"] is False
    with_camera = TWO_PRINTERS.replace("port = 5001\n", 'port = 5001\ncamera = "cam1"\n')
    apply_text(with_camera, tmp_path)
    assert webcam_settings(tmp_path, "printer1")["webcamEnabled"] is True
    assert webcam_settings(tmp_path, "printer2")["webcamEnabled"] is False
    apply_text(TWO_PRINTERS, tmp_path)
    assert webcam_settings(tmp_path, "printer1")["webcamEnabled"] is False, "camera taken away: off again"
