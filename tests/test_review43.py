"""A hostile review of stop 42 (the journal's CPU, the viewer board's hold while a page
catches up, review42's own mends, schema 5 and quick structuring)."""

from __future__ import annotations

from collections import deque
from typing import Literal

import trio
import trio.testing

from actors import ScriptedChatModel, ScriptedTurn
from actors.serve._board import CATCH_UP_SECONDS, RunBoard
from protocol import StreamEvent
from runtime import open_runtime
from tests.test_subscriber_pacing import Recorder


class _Routed:
    """An attachment whose changes take effect at its checkpoint (as the tracer's do),
    or once ``gate`` is set."""

    def __init__(self) -> None:
        self.gate: trio.Event | None = None

    async def stream_events(self, which: Literal["all", "first"]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        await trio.lowlevel.checkpoint()


async def _run(words: tuple[str, ...]) -> tuple[StreamEvent, list[StreamEvent]]:
    """A chat model run's start and stream events (its tokens)."""
    recorder = Recorder()
    async with open_runtime() as rt:
        await rt.subscribe(recorder)
        await ScriptedChatModel([ScriptedTurn(tokens=words)]).ainvoke("q")
    events = [e for _, e in recorder.seen]
    return events[0], [e for e in events if e.phase == "stream"]


async def test_held_tokens_reach_a_waiting_page_though_the_board_hears_nothing_more(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A page came; the board holds a run's tokens that follow a gap, waiting for the
    # run's live buffer (its own client's stream, read behind the model) to fill it.
    # The client reads on and fills it; the model says nothing more for a while (a
    # pause mid-answer; an agent's step before a long tool call). The page, waiting
    # for the board's next message, must be shown the tokens: once the gap is filled,
    # or at the latest once the time to catch up has passed, not at the next event.
    words = tuple(f"w{i} " for i in range(10))
    start, tokens = await _run(words)
    board = RunBoard()
    board.taking = "first"
    board.attachment = _Routed()  # type: ignore[assignment]  # only stream_events is used
    board.apply(start)
    board.apply(tokens[0])  # no page: the run's first token only
    board.watchers += 1  # a page comes (the viewer's events())
    await board.fit()
    buffer = deque([start, *tokens[:2]])  # the run's client has read two tokens
    board.catch_up(buffer)
    shown = trio.Event()

    async def page(seq: int) -> None:  # waits for the board's next message
        await board.wait_for(seq)
        shown.set()

    for early in (True, False):  # the page waits from before the hold, or after it
        async with trio.open_nursery() as nursery:
            if early:
                nursery.start_soon(page, board.seq)
                await trio.testing.wait_all_tasks_blocked()
            # held: the 3rd to 5th (or 8th) wait in the run's stream
            assert board.apply(tokens[5 if early else 8]) is None
            if not early:
                nursery.start_soon(page, board.seq)
            buffer.extend(tokens[2:6] if early else tokens[6:9])  # the client reads on
            with trio.move_on_after(10 * CATCH_UP_SECONDS) as waiting:
                await shown.wait()
            assert not waiting.cancelled_caught, f"the page was shown nothing ({early=})"
            nursery.cancel_scope.cancel()
        shown = trio.Event()
        board.watchers -= 1  # the page leaves, and another comes (the time to catch up)
        await board.fit()
        board.watchers += 1
        await board.fit()
    assert "".join(board.runs[start.run_id].text) == "".join(words[:9])
