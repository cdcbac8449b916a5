"""Troupe on a Ray cluster (the optional extra ``ray``): runtimes hosted by Ray actors,
their runs' events streamed back to a trio program as they happen.

``async with open_ray_runtime(registry="pkg.agents:performers") as rt:`` then
``async with rt.astream_events("cat", input) as events: async for event in events``
reads as the local API does, with the same events, ordering promises and exceptions.
Importing this needs ``pip install 'trio-troupe[ray]'``.
"""

from .._extras import require_extra

require_extra("ray", "ray", "actors.ray")

from typing import Any

from runtime import HostedChunkStream, HostedStream

from .._demo import make_cat_agent
from ._driver import DEFAULT_LEASE as DEFAULT_LEASE
from ._driver import DEFAULT_WINDOW as DEFAULT_WINDOW
from ._driver import DEMO_REGISTRY as DEMO_REGISTRY
from ._driver import RayRuntime as RayRuntime
from ._driver import host_class as host_class
from ._driver import open_ray_runtime as open_ray_runtime
from ._errors import HostDiedError as HostDiedError
from ._errors import RemoteRunError as RemoteRunError
from ._host import TroupeHost as TroupeHost

RemoteEventStream = HostedStream
"""A run's events from a host: the runtime's :class:`~runtime.HostedStream`."""
RemoteChunkStream = HostedChunkStream
"""A run's own chunks from a host: the runtime's :class:`~runtime.HostedChunkStream`."""


def demo_performers() -> dict[str, Any]:
    """The demo's registry: the cat agent on the scripted model, as ``"cat"``."""
    return {"cat": make_cat_agent()}


__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_WINDOW",
    "DEMO_REGISTRY",
    "HostDiedError",
    "RayRuntime",
    "RemoteChunkStream",
    "RemoteEventStream",
    "RemoteRunError",
    "TroupeHost",
    "demo_performers",
    "host_class",
    "open_ray_runtime",
]
