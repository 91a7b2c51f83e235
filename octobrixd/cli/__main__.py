"""`python -m octobrixd.cli`: octobrixctl."""

import sys

from octobrixd.cli.main import main

sys.exit(main())
