"""Troupe from asyncio programs (FastAPI on uvicorn, ``asyncio.run``, a notebook's
default loop): ``async with open_asyncio_runtime() as rt:`` gives the runtime's streams
and calls with the same ``async with`` / ``async for`` shape, cancellation flowing both
ways and backpressure kept. Trio runs beside the loop, in a thread of its own or as a
guest on it. No extra is needed.
"""

from ._host import MODES as MODES
from ._host import Mode as Mode
from ._host import TrioHost as TrioHost
from ._runtime import AsyncioRuntime as AsyncioRuntime
from ._runtime import lifespan as lifespan
from ._runtime import open_asyncio_runtime as open_asyncio_runtime
from ._streams import DEFAULT_WINDOW as DEFAULT_WINDOW
from ._streams import YIELD_EVERY as YIELD_EVERY
from ._streams import AsyncioStream as AsyncioStream

__all__ = [
    "DEFAULT_WINDOW",
    "MODES",
    "YIELD_EVERY",
    "AsyncioRuntime",
    "AsyncioStream",
    "Mode",
    "TrioHost",
    "lifespan",
    "open_asyncio_runtime",
]
