"""Subscribers that ask to be woken less often: ``wake_interval`` and ``batch_events``."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio

from actors import ScriptedChatModel, ScriptedTurn
from protocol import StreamEvent
from runtime import open_runtime

TOKENS = 100
DELAY = 0.01  # a token every 10 ms: the run streams for about a second


class Recorder:
    """Notes the (virtual) time each event was handled at."""

    def __init__(self, **attributes: Any) -> None:
        self.seen: list[tuple[float, StreamEvent]] = []
        self.__dict__.update(attributes)

    async def on_event(self, event: StreamEvent) -> None:
        self.seen.append((trio.current_time(), event))

    def times(self) -> list[float]:
        return [at for at, _ in self.seen]

    def events(self) -> list[tuple[str, str, int]]:
        return [(e.event, e.run_id, e.seq) for _, e in self.seen]


def model() -> ScriptedChatModel:
    return ScriptedChatModel([ScriptedTurn(tokens=("t",) * TOKENS)], token_delay=DELAY)


async def test_a_paced_subscriber_takes_every_event_in_a_few_wakes(
    autojump_clock: trio.abc.Clock,
) -> None:
    paced, plain = Recorder(wake_interval=0.25), Recorder()
    async with open_runtime() as rt:
        await rt.subscribe(paced, plain)
        await model().ainvoke("go")
        await trio.sleep(1)  # well past the last wake
    assert paced.events() == plain.events()  # all of them, in order
    assert len(paced.seen) == TOKENS + 3  # start, the tokens, the finishing chunk, end
    # Woken about once per interval over the ~1 s the run streamed, where the plain
    # subscriber was woken for each token.
    assert len(set(paced.times())) <= 1 / 0.25 + 2
    assert len(set(plain.times())) > TOKENS
    # The first event after a quiet spell, and the root run's end, come at once.
    assert paced.seen[0][0] == plain.seen[0][0]
    assert paced.seen[-1][1].phase == "end"
    assert paced.seen[-1][0] == plain.seen[-1][0]


async def test_a_paced_subscriber_sees_a_quiet_spell_end_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    paced = Recorder(wake_interval=5)
    async with open_runtime() as rt:
        await rt.subscribe(paced)
        for _ in range(3):  # each run's start comes after a quiet spell of 10 s
            started = trio.current_time()
            await model().ainvoke("go")
            await trio.sleep(10)
            starts = [at for at, e in paced.seen if e.phase == "start"]
            assert starts[-1] == started
    assert len([e for _, e in paced.seen if e.phase == "end"]) == 3


async def test_closing_the_runtime_ends_a_long_pause_without_calling_it_slow(
    autojump_clock: trio.abc.Clock,
) -> None:
    paced = Recorder(wake_interval=3600)
    async with open_runtime(close_grace=5) as rt:
        attachment = await rt.subscribe(paced)
        async with trio.open_nursery() as nursery:
            # A run left going when the runtime closes: its tokens wait in the channel.
            nursery.start_soon(model().ainvoke, "go")
            await trio.sleep(0.5)
            closing_at = trio.current_time()
            nursery.cancel_scope.cancel()
    assert trio.current_time() - closing_at < 1
    assert not attachment.errors
    last = paced.seen[-1][1]  # the cancelled run's terminal event, handled
    assert (last.phase, last.status) == ("error", "cancelled"), last


@pytest.mark.parametrize("bad", [0, -1, math.inf, math.nan, True, "1", [1]])
async def test_a_bad_wake_interval_is_refused_by_name(bad: object) -> None:
    async with open_runtime() as rt:
        with pytest.raises(ValueError, match=r"\.wake_interval must be a positive"):
            await rt.subscribe(Recorder(wake_interval=bad))


@pytest.mark.parametrize("bad", [0, -3, True, 1.5, "2"])
async def test_a_bad_batch_size_is_refused_by_name(bad: object) -> None:
    async with open_runtime() as rt:
        with pytest.raises(ValueError, match=r"\.batch_events must be a positive"):
            await rt.subscribe(Recorder(batch_events=bad))


async def test_a_batching_subscriber_is_woken_per_batch_and_at_a_root_end(
    autojump_clock: trio.abc.Clock,
) -> None:
    batched, plain = Recorder(batch_events=25), Recorder()
    async with open_runtime() as rt:
        await rt.subscribe(batched, plain)
        await model().ainvoke("go")
        await trio.testing.wait_all_tasks_blocked()
        assert batched.events() == plain.events()
        assert batched.seen[-1][1].phase == "end"
    assert len(set(batched.times())) <= (TOKENS + 3) // 25 + 2


async def test_a_runtime_wide_subscriber_changes_which_stream_events_it_takes(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A live view nobody looks at takes each run's first stream event; switched to
    # "all" mid-run it gets every one from then on (its run's sequence numbers jump
    # once), and back to "first" none more of a run that has streamed.
    switching, plain = Recorder(stream_events="first"), Recorder()
    async with open_runtime() as rt:
        attachment = await rt.subscribe(switching, plain)
        assert [s.first_chunk_only for s in attachment._subscriptions] == [True, False]
        await model().ainvoke("one")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(model().ainvoke, "two")
            await trio.sleep(TOKENS * DELAY / 2)
            await attachment.stream_events("all")
        await model().ainvoke("three")
        await attachment.stream_events("first")
        await model().ainvoke("four")
        await trio.sleep(0.1)
    streamed = [e for _, e in switching.seen if e.phase == "stream"]
    by_run: dict[str, list[int]] = {}
    for event in streamed:
        by_run.setdefault(event.run_id, []).append(event.seq)
    one, two, three, four = by_run.values()
    assert one == [1]  # the first only
    assert two[0] == 1 and two[1] > 2 and two[1:] == list(range(two[1], TOKENS + 2))
    assert three == list(range(1, TOKENS + 2))  # every one (the finishing chunk's too)
    assert four == [1]
    # nothing else was lost: its starts and ends, as the plain subscriber's
    others = [(e.event, e.run_id) for _, e in switching.seen if e.phase != "stream"]
    assert others == [(e.event, e.run_id) for _, e in plain.seen if e.phase != "stream"]


async def test_what_a_subscriber_takes_is_all_or_first_and_of_every_run_only() -> None:
    from runtime import Attachment

    async with open_runtime() as rt:
        attachment = await rt.subscribe(Recorder())
        with pytest.raises(ValueError, match="'all' or 'first', got 'some'"):
            await attachment.stream_events("some")  # type: ignore[arg-type]
        one_run = Attachment()
        one_run.watch(rt, "a-run", [Recorder()])
        with pytest.raises(ValueError, match="only an attachment to every run"):
            await one_run.stream_events("first")
        one_run.close()
