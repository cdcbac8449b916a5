"""The limit: raw trio pipelines with as many channel hops as a Troupe token takes.

A token crosses two hops in Troupe (model actor -> tracer -> the user's stream). The
pipeline moves one item per token through two memory channels with the best
discipline: ``send_nowait`` with ``await send`` as the fallback, receivers taking what
is there with ``receive_nowait`` before they wait.
"""

from __future__ import annotations

from typing import Any, Final

import trio

HOPS: Final = 2
CHECKPOINT_EVERY: Final = 64  # the scripted model lets the scheduler in this often, too


class _Chunk:
    """What the raw pipeline moves: a small object per token, as a chunk is."""

    __slots__ = ("content",)

    def __init__(self, content: str) -> None:
        self.content = content


async def raw_shaped(
    tokens: int, *, yield_every: int, fresh: bool, read: bool, cancel_points: bool = False
) -> int:
    """The limit: ``tokens`` items through :data:`HOPS` channels, a scheduler pass every
    ``yield_every`` items, a new object per item if ``fresh``, the consumer reading an
    attribute of each if ``read``. With ``cancel_points``, every read is a cancel point
    (``trio.lowlevel.checkpoint_if_cancelled``), as trio's rule asks of Troupe's
    streams and as a reader that must stop when its scope is cancelled would need;
    without, a read that finds an item waiting is no checkpoint at all."""
    channels = [trio.open_memory_channel[Any](4096) for _ in range(HOPS)]
    shared = _Chunk("token")

    async def produce(send: trio.MemorySendChannel[Any]) -> None:
        checkpoint = trio.lowlevel.checkpoint
        for index in range(tokens):
            if index % yield_every == 0:
                await checkpoint()
            item = _Chunk("token") if fresh else shared
            try:
                send.send_nowait(item)
            except trio.WouldBlock:
                await send.send(item)
        send.close()

    cancel_point = trio.lowlevel.checkpoint_if_cancelled

    async def take(receive: trio.MemoryReceiveChannel[Any]) -> Any:
        # the best discipline: what is there without a scheduler pass, else wait
        if cancel_points:
            await cancel_point()
        try:
            return receive.receive_nowait()
        except trio.WouldBlock:
            return await receive.receive()

    async def forward(
        receive: trio.MemoryReceiveChannel[Any], send: trio.MemorySendChannel[Any]
    ) -> None:
        try:
            while True:
                value = await take(receive)
                try:
                    send.send_nowait(value)
                except trio.WouldBlock:
                    await send.send(value)
        except trio.EndOfChannel:
            send.close()

    total = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce, channels[0][0])
        for index in range(HOPS - 1):
            nursery.start_soon(forward, channels[index][1], channels[index + 1][0])
        try:
            while True:
                item = await take(channels[-1][1])
                total += len(item.content) if read else 1
        except trio.EndOfChannel:
            pass
    return total


async def raw_pipeline(tokens: int) -> int:
    """The scripted model's shape: one shared item per token, a scheduler pass every
    :data:`CHECKPOINT_EVERY` tokens, a consumer that counts."""
    return await raw_shaped(tokens, yield_every=CHECKPOINT_EVERY, fresh=False, read=False)
