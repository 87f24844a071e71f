"""`python -m hfwatchd` is the `hfwatchd` command."""

import sys

from .cli import main

sys.exit(main())
