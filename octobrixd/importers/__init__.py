"""`octobrixctl import`: moving a farm in from octoprint_deploy, KIAUH or a plain OctoPrint.

One module per source reads what that tool left on the computer into `sources` (read-only, with a
message for every line it cannot use); `plan` turns that into config entries, renames and copies
(pure); `move` carries it out (the config edit, apply, the copies, the old units stopped);
the command is cli/import_.py.
"""
