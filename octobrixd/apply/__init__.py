"""The only writer: plan (desired files and units vs the system) and apply; the front door's sync."""
