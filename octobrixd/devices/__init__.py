"""Devices plugged in: sysfs and udev records, V4L2 formats, hotplug, suggested entries, USB arithmetic."""
