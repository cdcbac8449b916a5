"""``python -m actors.cli``: the ``troupe`` command."""

import sys

from . import main

sys.exit(main())
