"""Cameras: streamer URLs and states, stream health, the USB bandwidth advisor."""
