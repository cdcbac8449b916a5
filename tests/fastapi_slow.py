"""examples/fastapi_sse.py's app, its agent swapped for one that never ends and says
when it is cancelled (``tests/slow_model.py``)."""

from __future__ import annotations

import fastapi_sse  # type: ignore[import-not-found]  # examples/, on PYTHONPATH when served

from tests.slow_model import slow_agent

fastapi_sse.agent = slow_agent()
app = fastapi_sse.app
