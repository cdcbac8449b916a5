"""``troupe serve``: the app under hypercorn's trio worker, drained on SIGTERM."""

from __future__ import annotations

import functools
import gc
import ipaddress
import signal
from typing import Any, Final

import trio

from runtime import Runnable, open_runtime

from .._targets import load_target as load_target
from ._app import Server, asgi_app
from ._auth import log
from ._guard import default_max_requests

SHUTDOWN_GRACE: Final = 5.0
"""Seconds connections get, after the drain, to write what is left before they are
closed."""
KEEP_ALIVE_TIMEOUT: Final = 5.0
"""Seconds an idle connection (or one whose request's headers are still coming) is
kept open."""
SERVER_GC_THRESHOLDS: Final = (30_000, 20)
"""The young generations' collection thresholds of a server process (Python's are 700
and 10)."""


def tune_collector() -> None:
    """Freeze what exists now (modules, the app: it lives as long as the process) out
    of the garbage collector's sight, so that no collection scans it again; and collect
    the young generations less often.

    With a thousand streams open, each token's objects (its event, its frame, the
    server's write) live for a few scheduler passes. At Python's thresholds enough of
    them are alive at each young collection to be promoted, and a full collection
    followed every few hundred milliseconds, stopping every stream for 60-80 ms. Less
    frequent young collections find those objects already freed.
    """
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, SERVER_GC_THRESHOLDS[0]), max(middle, SERVER_GC_THRESHOLDS[1]), old)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def serve(
    performers: Runnable[Any] | dict[str, Runnable[Any]],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    tune_gc: bool = True,
    max_connections: int | None = None,
    fd: int | None = None,
    **app_options: Any,
) -> None:
    """Serve ``performers`` until SIGTERM or SIGINT, then drain: every run in progress
    is cancelled and its clients get its ``cancelled`` terminal event before the
    connections close (within a bounded grace).

    This runs a server process, so by default it tunes the garbage collector as servers
    that preload do (``tune_gc=False`` leaves the collector alone): it freezes what
    start-up made (modules, the app) out of the collector's sight, and raises the young
    generations' thresholds (:data:`SERVER_GC_THRESHOLDS`). With a thousand streams
    open, collections took a fifth of the server's time, and each full one stopped
    every stream for 60-80 ms.

    Timeouts: a request's body must arrive within the app's ``body_timeout`` (30 s by
    default; 408 after), and a connection idle or still sending its request's headers is
    closed after :data:`KEEP_ALIVE_TIMEOUT`. Hypercorn's ``read_timeout`` stays off: it
    bounds every read of a connection, and a client reading a long stream sends nothing,
    so the app would be told that client had gone (measured: ``http.disconnect`` 2 s
    into a stream with ``read_timeout=2``), and its run cancelled.

    At most ``max_connections`` connections are open at once (by default 4,096, or
    fewer if the process may open fewer files); more wait in the listen backlog. One
    connection's failure closes that connection, never the server (see
    ``_hypercorn.py``).

    A run that raises an exit (``KeyboardInterrupt``, ``SystemExit``, ...) ends with
    that error for its client, and the server then stops as on SIGINT (it drains) and
    raises that exit itself: errors stay themselves.

    Binding an address other than loopback without a token or an auth hook is logged
    as a warning: every machine that reaches it may then run the performers.

    With ``store`` (a ``runtime.Store`` or its URL), the runtime is opened on it before
    the server listens: one that cannot be opened raises ``runtime.StoreError`` (one
    line naming the store and the cause). ``retention`` (seconds) then bounds it.

    ``fd``: serve on this listening socket (a descriptor inherited from a supervisor, as
    ``troupe serve --workers N`` gives its workers) instead of binding ``host:port``.
    """
    from hypercorn.config import Config

    from ._hypercorn import serve_app

    store = app_options.pop("store", None)
    if store is not None:
        # Opened before the server listens: a store that cannot be opened stops the
        # start (StoreError, one line naming it and the cause), not the first request.
        if app_options.get("runtime") is not None:
            raise ValueError("give a store or a runtime (opened with its store), not both")
        async with open_runtime(store=store) as opened:
            await serve(
                performers,
                host=host,
                port=port,
                task_status=task_status,
                tune_gc=tune_gc,
                max_connections=max_connections,
                fd=fd,
                runtime=opened,
                **app_options,
            )
        return
    if max_connections is None:
        max_connections = default_max_requests()
    app = asgi_app(performers, max_requests=max_connections, **app_options)
    server: Server = app.state.troupe
    if tune_gc:
        tune_collector()
    config = Config()
    config.bind = [f"fd://{fd}" if fd is not None else f"{host}:{port}"]
    # The drain (up to DRAIN_GRACE) has already run when hypercorn's shutdown begins:
    # what is left is writing the runs' last frames.
    config.graceful_timeout = SHUTDOWN_GRACE
    config.backlog = 4096  # many clients connecting at once (the default, 100, resets them)
    config.accesslog = None
    config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
    config.read_timeout = None  # see the docstring: it would cut streams
    if not is_loopback(host) and not app_options.get("token") and not app_options.get("auth"):
        log.warning(
            "serving on %s without a token or an auth hook: anyone who reaches this "
            "address can run the performers (give it TROUPE_TOKEN or --auth)",
            host,
        )

    async def until_signalled() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as either:

                async def on_signal() -> None:
                    async for _ in signals:
                        break
                    either.cancel_scope.cancel()

                async def on_exit() -> None:
                    await server.stopping.wait()
                    either.cancel_scope.cancel()

                either.start_soon(on_signal)
                either.start_soon(on_exit)
        await server.drain()

    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            functools.partial(
                serve_app,
                app,
                config,
                max_connections=max_connections,
                shutdown_trigger=until_signalled,
            )
        )
        task_status.started(urls)
    if server.exit is not None:  # a run raised it: the server stopped, as on Ctrl-C
        raise server.exit
