"""`octobrixctl upgrade` and `octobrixctl rollback`: a printer's OctoPrint moved to another version
with its settings, users, uploads and plugins, never during a print, checked afterwards and put back
by itself when the check fails.

versions.py and health.py are pure (what to move to, whether the instance is healthy, the messages);
rollback_point.py keeps what a rollback needs; engine.py is the thin layer that acts.
"""
