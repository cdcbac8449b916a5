"""``python -m actors``: the ``troupe`` command."""

import sys

from ._cli import main

sys.exit(main())
