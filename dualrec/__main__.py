"""`python -m dualrec` runs the same command as `dualrec`."""

import sys

from dualrec.cli import main

sys.exit(main())
