"""``python -m singer_core.demo``: see singer_core/demo/cli.py."""

import sys

from .cli import main

sys.exit(main())
