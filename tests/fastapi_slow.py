"""examples/fastapi_sse.py's app, its agent swapped for one whose model streams slowly
for ever and, when its run is cancelled, writes ``SLOW_MARKER``'s file: how a test in
another process sees that a client's disconnect cancelled the run."""

from __future__ import annotations

import os
from pathlib import Path

import fastapi_sse  # type: ignore[import-not-found]  # examples/, on PYTHONPATH when served
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


fastapi_sse.agent = Agent(MarkingModel([ScriptedTurn("tok " * 100_000)], token_delay=0.002), [])
app = fastapi_sse.app
