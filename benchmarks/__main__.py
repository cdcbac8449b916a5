"""``python -m benchmarks``: run every benchmark, print a table, write JSON."""

import sys

from ._run import main

sys.exit(main())
