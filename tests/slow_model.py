"""A model that streams slowly for ever and, when its run is cancelled, writes the file
``SLOW_MARKER`` names: how a test sees, from another process, that a run it served
was cancelled."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from actors import Agent, ChunkSink, ScriptedChatModel, ScriptedTurn
from protocol import ChatRequest


class MarkingModel(ScriptedChatModel):
    async def generate(self, request: ChatRequest, sink: ChunkSink) -> None:
        try:
            await super().generate(request, sink)
        except trio.Cancelled:
            with trio.CancelScope(shield=True):  # said, before the cancellation goes on
                marker = Path(os.environ["SLOW_MARKER"])
                await trio.to_thread.run_sync(marker.write_text, "cancelled")
            raise


def slow_agent() -> Agent:
    """An agent whose answer never ends (a token every 2 ms)."""
    return Agent(MarkingModel([ScriptedTurn("tok " * 100_000)], token_delay=0.002), [], name="slow")
