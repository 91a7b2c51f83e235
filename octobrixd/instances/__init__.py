"""One OctoPrint per printer: credentials, its API on loopback, versions, venvs and their plugins, recovery."""
