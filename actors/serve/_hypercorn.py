"""Hypercorn's trio worker, hardened: one connection's failure never stops the server,
and the connections open at once are bounded.

``hypercorn.trio.serve`` runs every connection in the server's own nursery, and its
connection handler lets through any error but ``OSError``. A client that closes its
connection while the server ends a response on it (a half-sent body answered with a
408 or a 413, say) makes hypercorn's h11 layer send an error response while the
response's end is closing the socket, and trio's ``BusyResourceError`` then ended the
whole server: measured, 50 such clients took ``troupe serve`` down in their first round
(hypercorn issue #203 is the same class of failure, from a security scanner). Here each
connection runs hypercorn's own ``TCPServer`` in a task that logs such an error and
closes that connection only.

Connections are accepted only while fewer than ``max_connections`` are open; the rest
wait in the listen backlog, holding no file descriptor of the process.

Hypercorn writes to a socket with cancellation shielded, so a client that stops reading
held its connection for ever: no timeout, no drain and no Ctrl-C ended that write
(measured: eight such clients kept ``/health`` unanswered for 40 s at eight
connections; one stalled stream kept ``troupe serve`` running 42 s after SIGTERM and
SIGINT). Here a write that has waited ``send_timeout`` seconds for its client closes
its connection (a watcher closes the socket from outside, which wakes the shielded
write), and once the shutdown's grace is over every connection still open is closed.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, LifespanState
from hypercorn.utils import ShutdownError, raise_shutdown, repr_socket_addr, wrap_app

log = logging.getLogger("troupe.serve")

ACCEPT_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
"""What ``accept`` says when the machine is out of room for a connection (as trio's
``serve_listeners`` knows them): the loop waits and tries again."""
ACCEPT_RETRY: Final = 0.1
DEFAULT_SEND_TIMEOUT: Final = 30.0
"""Seconds a write to a client may wait for the client to read, before its connection
is closed."""


class _Connection(trio.abc.HalfCloseableStream):
    """A client's socket as hypercorn's ``TCPServer`` uses it: it says since when a
    write has waited (for :func:`_close_stalled`), and it can be closed from outside
    (:meth:`abort`)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.socket = stream.socket  # hypercorn reads the peer's address from it
        self._stream = stream
        self.sending_since: float | None = None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        # A time stamp, not a cancel scope per write: a scope cost each write 6.2 us
        # (measured), and a server writes once per token of every stream.
        self.sending_since = trio.current_time()
        try:
            await self._stream.send_all(data)
        finally:
            self.sending_since = None

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()

    def abort(self) -> None:
        """Close the socket now: a task blocked writing or reading it is woken with
        ``ClosedResourceError``, which hypercorn takes as the connection's end."""
        self._stream.socket.close()


async def _close_stalled(connections: set[_Connection], send_timeout: float) -> None:
    """Close every connection whose write has waited ``send_timeout`` seconds for its
    client to read (its blocked write is woken with ``ClosedResourceError``)."""
    while True:
        await trio.sleep(max(send_timeout / 4, 0.01))
        now = trio.current_time()
        for connection in list(connections):
            since = connection.sending_since
            if since is not None and now - since >= send_timeout:
                log.warning(
                    "a client read nothing for %g s: its connection is closed", send_timeout
                )
                connection.abort()


async def serve_app(
    app: Any,
    config: Config,
    *,
    max_connections: int,
    send_timeout: float = DEFAULT_SEND_TIMEOUT,
    shutdown_trigger: Callable[[], Awaitable[object]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI ``app`` on ``config.bind`` (plain HTTP) until ``shutdown_trigger``
    returns, then shut down as hypercorn does (connections get
    ``config.graceful_timeout`` to finish, and are then closed; then the app's lifespan
    ends).

    ``task_status.started`` is given the URLs served.
    """
    config.set_statsd_logger_class(StatsdLogger)
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, state)
    context = WorkerContext(None)
    open_connections: set[_Connection] = set()
    closer = trio.CancelScope()

    async def close_left_open(deadline: float) -> None:
        # At the deadline, or at once if the shutdown is cancelled (a second Ctrl-C):
        # a write hypercorn shielded would otherwise wait for its send timeout.
        try:
            with closer:
                await trio.sleep_until(deadline)
        finally:
            for connection in list(open_connections):
                connection.abort()

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as connections:
            sockets = config.create_sockets()
            listeners = []
            urls = []
            for sock in sockets.insecure_sockets:
                sock.listen(config.backlog)
                listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
                urls.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            slots = trio.Semaphore(max_connections)

            async def handle(stream: trio.SocketStream) -> None:
                connection = _Connection(stream)
                open_connections.add(connection)
                own = ConnectionState(state.copy())
                try:
                    # hypercorn types the stream as an SSL one; it takes a plain one too
                    await TCPServer(wrapped, config, context, own, connection)  # type: ignore[arg-type]
                except Exception as exc:  # this connection's alone: see the module's docs
                    log.warning("a connection failed and was closed: %r", exc)
                finally:
                    # Always closed (as trio's serve_listeners closes its streams): a
                    # connection cancelled while hypercorn's closing awaited its EOF
                    # was left open, and only the collector closed it.
                    connection.abort()
                    open_connections.discard(connection)
                    slots.release()

            task_status.started(urls)
            try:
                async with trio.open_nursery(strict_exception_groups=True) as nursery:
                    nursery.start_soon(raise_shutdown, shutdown_trigger)
                    nursery.start_soon(raise_shutdown, context.terminate.wait)
                    nursery.start_soon(_close_stalled, open_connections, send_timeout)
                    for listener in listeners:
                        nursery.start_soon(_accept, listener, slots, connections, handle)
            except BaseExceptionGroup as error:
                _, other = error.split((ShutdownError, KeyboardInterrupt))
                if other is not None:
                    raise other from None
            finally:
                await context.terminated.set()
                deadline = trio.current_time() + config.graceful_timeout
                connections.cancel_scope.deadline = deadline
                lifespan_nursery.start_soon(close_left_open, deadline)
        closer.cancel()
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


async def _accept(
    listener: trio.SocketListener,
    slots: trio.Semaphore,
    connections: trio.Nursery,
    handle: Callable[[trio.SocketStream], Awaitable[None]],
) -> None:
    async with listener:
        while True:
            await slots.acquire()
            try:
                stream = await listener.accept()
            except OSError as exc:
                slots.release()
                if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                log.error(
                    "accept returned %s (%s); retrying in %s s",
                    errno.errorcode.get(exc.errno or 0, exc.errno),
                    os.strerror(exc.errno or 0),
                    ACCEPT_RETRY,
                )
                await trio.sleep(ACCEPT_RETRY)
                continue
            except BaseException:
                slots.release()
                raise
            connections.start_soon(handle, stream)
