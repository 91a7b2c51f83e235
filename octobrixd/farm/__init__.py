"""The farm's state as the readers see it: status rows, STATUS= line, the manifest, the last backups."""
