"""What ``troupe serve tests.slow_start:performers`` serves: the cat agent, from a module
that a worker of ``--workers N`` (given ``--listen-fd``) imports slowly: it writes the
file ``SLOW_START_MARKER`` names, then sleeps ``SLOW_START`` seconds (a worker slow to
start, as one opening a large store is)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from actors._demo import make_cat_agent
from runtime import Runnable

if "--listen-fd" in sys.argv and os.environ.get("SLOW_START_MARKER"):
    Path(os.environ["SLOW_START_MARKER"]).write_text(str(os.getpid()))
    time.sleep(float(os.environ.get("SLOW_START", "0")))

performers: dict[str, Runnable[Any]] = {"cat": make_cat_agent()}
