"""The webcam streamer programs octobrix can run for a camera. Imports nothing: status and the
camera health check use it without loading the config's validation."""

from __future__ import annotations

from enum import StrEnum


class Streamer(StrEnum):
    USTREAMER = "ustreamer"
    MJPG_STREAMER = "mjpg-streamer"
