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


def _unwatched(start: StreamEvent) -> tuple[RunBoard, _Routed]:
    """A board no page watches (each run's first token only) that has seen ``start``."""
    routed = _Routed()
    board = RunBoard()
    board.taking = "first"
    board.attachment = routed  # type: ignore[assignment]  # only stream_events is used
    board.apply(start)
    return board, routed


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
    board, _ = _unwatched(start)
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


async def test_a_page_that_comes_while_the_last_ones_leaving_is_fitted_catches_up_whole(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A page reloaded: the old one leaves (the board's fit to each run's first token
    # waits at the runtime's checkpoint) and the new one comes meanwhile, finds the
    # fitting under way (it is left to that fit, which then takes every stream event
    # again) and gives the board the live buffers to catch up from. The tokens the
    # tracer gave the run's stream between the two routes must come from the buffer
    # as its client reads them: the page's text whole so far, without a hole.
    words = tuple(f"w{i} " for i in range(12))
    start, tokens = await _run(words)
    board, routed = _unwatched(start)
    board.watchers += 1  # the old page comes
    await board.fit()
    for token in tokens[:3]:
        board.apply(token)
    await trio.sleep(10 * CATCH_UP_SECONDS)  # it watches a while
    routed.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        board.watchers -= 1  # it leaves
        nursery.start_soon(board.fit)
        await trio.testing.wait_all_tasks_blocked()
        board.watchers += 1  # the new page comes (the viewer's events())
        assert str(board.taking) == "first"
        await board.fit()
        buffer = deque([start, *tokens[:3]])  # what the run's client has read
        board.catch_up(buffer)
        routed.gate.set()  # the runtime routes the runs afresh: every stream event
    assert str(board.taking) == "all"
    # the 4th and 5th went to the run's stream while the board took first tokens only
    board.apply(tokens[5])
    buffer.extend(tokens[3:6])  # the client reads them
    for token in tokens[6:]:
        await trio.sleep(board.wake_interval)
        board.apply(token)
        buffer.append(token)
    assert "".join(board.runs[start.run_id].text) == "".join(words)
