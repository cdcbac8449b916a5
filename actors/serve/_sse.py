"""Responses that are streams of server-sent events, and the header positions they
resume from."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import trio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

PING: Final = b": ping\n\n"
RAW_SEND: Final = "troupe.raw_send"
"""Where the app keeps the server's own ``send`` in the request's scope."""

Write = Callable[[bytes], Awaitable[None]]


def whole_number(text: str) -> int | None:
    """``text`` (a header's value) as a whole number, or ``None``: ASCII digits only (a
    superscript two is a digit to ``str.isdigit`` but not to ``int``), and at most 18 of
    them (``int`` refuses strings of over 4,300 digits, and no position is that far)."""
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    return None


class SSEResponse(Response):
    """A response whose body is written by ``produce(write)`` as server-sent events
    (one write at a time: ``produce`` awaits each before the next).

    A task watches for the client's disconnect and cancels the producer, which leaves
    the run's stream, which cancels the run. A comment line (a heartbeat) is written
    whenever nothing was written for ``heartbeat`` seconds, the first one ``heartbeat``
    seconds after the response started.

    ``close`` is awaited, shielded, if the response ends before ``produce`` was called
    (the client left before the headers could be written): whatever the producer would
    have closed is closed all the same.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        produce: Callable[[Write], Awaitable[None]],
        headers: Mapping[str, str],
        heartbeat: float,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(
            headers={"cache-control": "no-store", "x-accel-buffering": "no", **headers}
        )
        # A stream has no length: Starlette gave the empty body one.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self._produce = produce
        self._heartbeat = heartbeat
        self._close = close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        produced = [False]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await self._stream(scope, receive, send, produced)
        finally:
            if not produced[0] and self._close is not None:
                with trio.CancelScope(shield=True):
                    await self._close()

    async def _stream(
        self, scope: Scope, receive: Receive, send: Send, produced: list[bool]
    ) -> None:
        heartbeat = self._heartbeat
        now = trio.lowlevel.current_clock().current_time  # (trio.current_time, 2 calls less)
        # When the last bytes went out: the next heartbeat is due `heartbeat` after it.
        last_write = [now()]
        # The producer's writes and the heartbeats never overlap: a heartbeat is written
        # only while no write is (one that waits for its client is no silence), and a
        # write waits for a heartbeat being written. Flags, not a trio.Lock: taking and
        # releasing one cost each write about 2 µs (5 % of a stream's own CPU, measured),
        # and it is almost never contended.
        writing = [False]
        pinging: list[trio.Event | None] = [None]
        # The body goes straight to the server's own send: the middleware in between
        # (errors, CORS, headers) acts on the response's start only, and each of its
        # layers costs every token of every stream a few microseconds.
        send_body: Send = scope.get(RAW_SEND, send)

        async def write(data: bytes, more: bool = True) -> None:
            while pinging[0] is not None:  # a heartbeat is being written: wait for it
                await pinging[0].wait()
            writing[0] = True
            try:
                await send_body({"type": "http.response.body", "body": data, "more_body": more})
            finally:
                writing[0] = False
            last_write[0] = now()

        async def watch_client(cancel: trio.CancelScope) -> None:
            # One task a stream both waits for the client to leave and keeps an idle
            # stream open: a second task per stream costs every stream's start and end.
            while True:
                with trio.move_on_at(last_write[0] + heartbeat):
                    if (await receive())["type"] == "http.disconnect":
                        cancel.cancel()
                        return
                    continue
                if trio.current_time() - last_write[0] < heartbeat:
                    continue  # written to meanwhile
                if writing[0]:  # a write waits for its client: look again a heartbeat on
                    last_write[0] = trio.current_time()
                    continue
                done = pinging[0] = trio.Event()
                try:
                    await send_body({"type": "http.response.body", "body": PING, "more_body": True})
                finally:
                    pinging[0] = None
                    done.set()
                last_write[0] = trio.current_time()

        async def body(cancel: trio.CancelScope) -> None:
            await self._produce(write)
            await write(b"", more=False)
            cancel.cancel()

        # The producer runs in a task of its own, not in the request's: it is resumed
        # twice for every event (when the event comes, and when its write has gone),
        # and the request's stack is 16 coroutines deeper (the server's, Starlette's
        # and its middleware's), each resumed every time: callgrind, 50 paced streams,
        # 5.5k instructions per token event less (of about 340k).
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_client, nursery.cancel_scope)
            produced[0] = True  # (a task started runs, even in a cancelled scope)
            nursery.start_soon(body, nursery.cancel_scope)
