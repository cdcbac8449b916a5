"""``python -m actors``: the ``troupe`` command."""

import sys

from .cli import main

sys.exit(main())
