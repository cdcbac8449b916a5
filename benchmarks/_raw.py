"""The limit: raw trio pipelines with as many channel hops as a Troupe token takes.

A token crosses two hops in Troupe (model actor -> tracer -> the user's stream). The
pipeline moves one item per token through two memory channels with the best
discipline: ``send_nowait`` with ``await send`` as the fallback, receivers taking what
is there with ``receive_nowait`` before they wait.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

HOPS: Final = 2
CHECKPOINT_EVERY: Final = 64  # the scripted model lets the scheduler in this often, too


class _Chunk:
    """What the raw pipeline moves: a small object per token, as a chunk is."""

    __slots__ = ("content",)

    def __init__(self, content: str) -> None:
        self.content = content


_cancel_point: Final = trio.lowlevel.checkpoint_if_cancelled


async def _take(receive: trio.MemoryReceiveChannel[Any], cancel_point: bool) -> Any:
    """The best discipline: what is there without a scheduler pass, else wait; first a
    cancel point if asked (trio's rule for a read)."""
    if cancel_point:
        await _cancel_point()
    try:
        return receive.receive_nowait()
    except trio.WouldBlock:
        return await receive.receive()


async def _produce(
    send: trio.MemorySendChannel[Any],
    tokens: int,
    *,
    yield_every: int,
    fresh: bool,
    chunk: Callable[[str], Any] = _Chunk,
) -> None:
    """A model's side: ``tokens`` items (a new ``chunk("token")`` each if ``fresh``), a
    scheduler pass every ``yield_every``, then the channel closed."""
    checkpoint = trio.lowlevel.checkpoint
    shared = chunk("token")
    for index in range(tokens):
        if index % yield_every == 0:
            await checkpoint()
        item = chunk("token") if fresh else shared
        try:
            send.send_nowait(item)
        except trio.WouldBlock:
            await send.send(item)
    send.close()


async def _pass_on(
    receive: trio.MemoryReceiveChannel[Any], send: trio.MemorySendChannel[Any], cancel_point: bool
) -> None:
    """A hop: every item of ``receive`` sent on, until ``receive`` ends."""
    try:
        while True:
            value = await _take(receive, cancel_point)
            try:
                send.send_nowait(value)
            except trio.WouldBlock:
                await send.send(value)
    except trio.EndOfChannel:
        pass


async def _consume(receive: trio.MemoryReceiveChannel[Any], cancel_point: bool, read: bool) -> int:
    """The consumer: every item taken (and an attribute of each read, if ``read``)."""
    total = 0
    try:
        while True:
            item = await _take(receive, cancel_point)
            total += len(item.content) if read else 1
    except trio.EndOfChannel:
        return total


async def raw_shaped(
    tokens: int,
    *,
    yield_every: int,
    fresh: bool,
    read: bool,
    cancel_points: bool = False,
    chunk: Callable[[str], Any] = _Chunk,
    consume: Callable[[trio.MemoryReceiveChannel[Any]], Awaitable[int]] | None = None,
) -> int:
    """The limit: ``tokens`` items through :data:`HOPS` channels, a scheduler pass every
    ``yield_every`` items, a new object per item if ``fresh``, the consumer reading an
    attribute of each if ``read``. With ``cancel_points``, every read is a cancel point
    (``trio.lowlevel.checkpoint_if_cancelled``), as trio's rule asks of Troupe's
    streams and as a reader that must stop when its scope is cancelled would need;
    without, a read that finds an item waiting is no checkpoint at all. ``chunk``
    makes each item; ``consume``, if given, is the consumer instead."""
    channels = [trio.open_memory_channel[Any](4096) for _ in range(HOPS)]

    async def forward(
        receive: trio.MemoryReceiveChannel[Any], send: trio.MemorySendChannel[Any]
    ) -> None:
        await _pass_on(receive, send, cancel_points)
        send.close()

    async with trio.open_nursery() as nursery:
        produce = functools.partial(_produce, yield_every=yield_every, fresh=fresh, chunk=chunk)
        nursery.start_soon(produce, channels[0][0], tokens)
        for index in range(HOPS - 1):
            nursery.start_soon(forward, channels[index][1], channels[index + 1][0])
        if consume is not None:
            return await consume(channels[-1][1])
        return await _consume(channels[-1][1], cancel_points, read)


async def raw_pipeline(tokens: int) -> int:
    """The scripted model's shape: one shared item per token, a scheduler pass every
    :data:`CHECKPOINT_EVERY` tokens, a consumer that counts."""
    return await raw_shaped(tokens, yield_every=CHECKPOINT_EVERY, fresh=False, read=False)


TOOL_TURNS: Final = 2  # the cat agent's: where_cat_is_hiding, then get_items


async def raw_agent_shaped(tokens: int, *, yield_every: int) -> int:
    """The floor of Troupe's design under one cat agent run, in raw trio: the same tasks
    Troupe starts for it (the run's own, one per model turn, one per tool call: each
    performer is a task of its own, as DESIGN.md's architecture says), every item
    crossing the same hops (model -> agent -> the reader), every read a cancel point
    (trio's rule, which Troupe's streams keep), a new object per token and a scheduler
    pass every ``yield_every`` tokens. It does nothing else: no events, no run tree, no
    messages, no ids. What Troupe spends above it is the runtime's own work."""

    async def call_tool(send: trio.MemorySendChannel[Any]) -> None:
        await trio.lowlevel.checkpoint()
        send.send_nowait(_Chunk("result"))

    async def agent(out: trio.MemorySendChannel[Any]) -> None:
        async with trio.open_nursery() as nursery:
            for turn in range(TOOL_TURNS + 1):
                send, receive = trio.open_memory_channel[Any](4096)
                count = 1 if turn < TOOL_TURNS else tokens
                nursery.start_soon(
                    functools.partial(_produce, yield_every=yield_every, fresh=True), send, count
                )
                await _pass_on(receive, out, True)
                if turn < TOOL_TURNS:
                    send, receive = trio.open_memory_channel[Any](1)
                    nursery.start_soon(call_tool, send)
                    await _take(receive, True)
        out.close()

    send, receive = trio.open_memory_channel[Any](4096)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent, send)
        return await _consume(receive, True, True)
