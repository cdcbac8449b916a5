"""What a viewer page's catch-up costs the board: the tokens it takes from the live
runs' buffers go to the ring as one message per run (as while no page watches), and
the looks again while it holds runs read only what the buffers took since."""

from __future__ import annotations

import json
from collections import deque

import trio

from actors.serve._board import MESSAGE_TEXT, _Source
from tests.test_review43 import _unwatched


async def test_a_page_catching_up_a_long_stream_is_given_its_text_in_few_messages() -> None:
    # A page came while a run had streamed 2,000 tokens the board did not take (no page
    # watched): its catch-up made a message of each (100,000 tokens of 50 runs took the
    # server's thread 2 s). Its text must be whole, in a message per 8 KiB of it.
    case = await _unwatched(2_000)
    board = case.board
    board.watchers += 1
    await board.fit()
    before = board.seq
    board.catch_up(deque([case.start, *case.tokens]))
    missed, messages = board.after(before)
    assert missed == 0
    text = "".join(case.words)
    assert case.text == text
    assert len(messages) <= len(text) // MESSAGE_TEXT + 2, len(messages)
    shown = "".join(str(m["text"]) for m in map(_json, messages) if m["k"] == "tok")
    assert shown == text[len(case.words[0]) :]  # (its first token the board had)


def _json(message: tuple[int, str | None, bytes]) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(message[2])
    return loaded


def test_a_buffer_is_looked_at_again_from_the_last_event_seen() -> None:
    # The board looks at the buffers again 20 times a second while it holds runs: each
    # look takes only what the buffer took since the last (a bounded deque drops its
    # oldest as it takes new ones; a look after it dropped the last seen takes it all).
    events = [object() for _ in range(10)]
    buffer: deque[object] = deque(maxlen=4)
    source = _Source(buffer)  # type: ignore[arg-type]  # any objects do
    assert source.fresh() == []
    buffer.extend(events[:3])
    assert source.fresh() == events[:3]
    assert source.fresh() == []
    buffer.append(events[3])
    assert source.fresh() == [events[3]]
    buffer.extend(events[4:9])  # more than it keeps: the last seen was dropped
    assert source.fresh() == events[5:9]


async def test_buffered_tokens_of_a_run_whose_start_comes_later_are_taken_at_a_later_look(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A page came: the live buffers hold tokens of a run whose start is still on its way
    # to the board (its subscription lags). While the board holds another run's tokens
    # it looks at the buffers again: once the start has come, those tokens are taken.
    held, late = await _unwatched(10), await _unwatched(6)
    board = held.board
    board.watchers += 1
    await board.fit()
    board.catch_up(deque([held.start, *held.tokens[:3]]))
    board.catch_up(deque([late.start, *late.tokens[:5]]))  # a run the board does not know
    assert board.apply(held.tokens[6]) is None  # held: the 4th to 6th are not read yet
    board.apply(late.start)  # its start, and its first token, come at last
    board.apply(late.tokens[0])
    await trio.sleep(board.wake_interval)
    board.seq  # noqa: B018  # (a page's look: the board looks at the buffers again)
    assert "".join(board.runs[late.start.run_id].text) == "".join(late.words[:5])
