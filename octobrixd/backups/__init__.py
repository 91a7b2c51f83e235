"""Backups and restores of each printer's OctoPrint, made by OctoPrint's own backup plugin.

Layout: schedule (the timer's config keys and drop-in, pure), archive (backup folders, side files,
retention, versions: pure or read-only), engine (the side effects: running OctoPrint's CLI as the
instance's user, stopping and starting), state (the last run, for status and doctor), and the two
commands, backup_cli and restore_cli.
"""
