"""The limit: a raw trio pipeline with as many channel hops as a Troupe token takes.

A token crosses two hops in Troupe (model actor -> tracer -> the user's stream). The
pipeline moves one item per token through two memory channels with the best
discipline: ``send_nowait`` with ``await send`` as the fallback, receivers draining
with ``receive_nowait`` until ``WouldBlock``.
"""

from __future__ import annotations

from typing import Any

import trio

HOPS = 2
CHECKPOINT_EVERY = 64  # the scripted model lets the scheduler in this often, too


async def raw_pipeline(tokens: int, *, hops: int = HOPS, capacity: int = 4096) -> int:
    """Move ``tokens`` items through ``hops`` channels; return how many arrived."""
    channels = [trio.open_memory_channel[Any](capacity) for _ in range(hops)]
    item = ("token",)

    async def produce(send: trio.MemorySendChannel[Any]) -> None:
        for index in range(tokens):
            try:
                send.send_nowait(item)
            except trio.WouldBlock:
                await send.send(item)
            if index % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                await trio.lowlevel.checkpoint()
        send.close()

    async def forward(
        receive: trio.MemoryReceiveChannel[Any], send: trio.MemorySendChannel[Any]
    ) -> None:
        while True:
            try:
                value = receive.receive_nowait()
            except trio.WouldBlock:
                try:
                    value = await receive.receive()
                except trio.EndOfChannel:
                    break
            except trio.EndOfChannel:
                break
            try:
                send.send_nowait(value)
            except trio.WouldBlock:
                await send.send(value)
        send.close()

    arrived = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce, channels[0][0])
        for index in range(hops - 1):
            nursery.start_soon(forward, channels[index][1], channels[index + 1][0])
        receive = channels[-1][1]
        while True:
            try:
                receive.receive_nowait()
            except trio.WouldBlock:
                try:
                    await receive.receive()
                except trio.EndOfChannel:
                    break
            except trio.EndOfChannel:
                break
            arrived += 1
    return arrived
