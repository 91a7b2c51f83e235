"""Adding a plugged-in device to the farm without typing config: what octobrixd found, the narrow
request the web service may send about it, and `octobrixctl add`."""
