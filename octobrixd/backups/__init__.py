"""Backups and restores of each printer's OctoPrint, made by OctoPrint's own backup plugin.

Here: archive (backup folders, side files, retention, versions: pure or read-only), engine (the side
effects: running OctoPrint's CLI as the instance's user, stopping and starting) and bundle (one
printer moved whole). Elsewhere: the schedule's keys (config/schedule.py) and the timer's drop-in
(render/backup_timer.py), the last run for status and doctor (farm/backup_state.py), and the two
commands (cli/backup.py, cli/restore.py).
"""
