"""``troupe serve``: the app under hypercorn's trio worker, drained on SIGTERM."""

from __future__ import annotations

import functools
import importlib
import signal
import sys
from typing import Any

import trio

from runtime import Runnable

from ._app import DRAIN_GRACE, Server, asgi_app


def load_target(spec: str) -> Runnable[Any] | dict[str, Runnable[Any]]:
    """``module:attr`` (a performer or a dict of them), imported.

    Raises:
        ValueError: the spec is not ``module:attr``, or names nothing servable.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"name what to serve as MODULE:ATTR, got {spec!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")  # the current directory, as `python -m` has it
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from None
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"{module_name!r} has no {attr!r}") from None
    if isinstance(target, Runnable | dict):
        return target
    raise ValueError(f"{spec} is a {type(target).__name__}, not a performer or a dict of them")


async def serve(
    performers: Runnable[Any] | dict[str, Runnable[Any]],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    **app_options: Any,
) -> None:
    """Serve ``performers`` until SIGTERM or SIGINT, then drain: every run in progress
    is cancelled and its clients get its ``cancelled`` terminal event before the
    connections close (within a bounded grace)."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    app = asgi_app(performers, **app_options)
    server: Server = app.state.troupe
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = DRAIN_GRACE + 5
    config.backlog = 4096  # many clients connecting at once (the default, 100, resets them)
    config.accesslog = None

    async def until_signalled() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                break
        await server.drain()

    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            # Starlette is an ASGI app; hypercorn's type for one is narrower than its own.
            functools.partial(hypercorn_serve, app, config, shutdown_trigger=until_signalled)  # type: ignore[arg-type]
        )
        task_status.started(urls)
