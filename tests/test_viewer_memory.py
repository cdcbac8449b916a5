"""What the run viewer costs a long-lived server: the board within its byte budget (large
values cut, with a marker and their full size), nothing of a finished run left for the
collector once the run leaves the board, a thousand runs with a megabyte of input each
through the app, and a browser that reads slowly, or not at all."""

from __future__ import annotations

import gc
import json
import tracemalloc
import types
import uuid
from collections.abc import Iterator, MutableMapping
from typing import Any

import trio

from actors import Agent, ScriptedChatModel, ScriptedTurn, tool
from actors._demo import make_cat_agent
from actors.serve import asgi_app
from actors.serve._board import (
    CUSTOMS_KEPT,
    MESSAGE_TEXT,
    TEXT_LIMIT,
    VALUE_LIMIT,
    RunBoard,
)
from actors.serve._runs import FINISHED_KEPT
from actors.serve._viewer import WRITE_BYTES
from protocol import StreamEvent
from runtime import adispatch_custom_event

from .sse_client import asgi_scope, serving

MB = 1 << 20


@tool
async def measure(text: str) -> int:
    """How long the text is."""
    return len(text)


@tool
async def echo(text: str, customs: int = 1) -> str:
    """The text back, after telling of it in custom events."""
    for n in range(customs):
        await adispatch_custom_event("progress", {"n": n, "seen": text if n < 2 else "..."})
    return text


@tool
async def refuse(text: str) -> int:
    """Fails, having read the text."""
    raise ValueError(f"no, not {len(text):,} characters")


async def _events(target: Any, payload: Any) -> list[StreamEvent]:
    """Every event of a run (whose error, if it fails, is in its last event)."""
    events: list[StreamEvent] = []
    try:
        async with target.astream_events(payload) as stream:
            async for event in stream:
                events.append(event)  # noqa: PERF401  # kept up to the error
    except Exception:
        assert events[-1].status == "error"
    return events


def _strings(root: Any, skip: tuple[Any, ...] = ()) -> Iterator[Any]:
    """Every object reachable from ``root`` (not through ``skip``)."""
    seen = {id(root)} | {id(s) for s in skip}
    pending = [root]
    while pending:
        obj = pending.pop()
        yield obj
        for ref in gc.get_referents(obj):
            if id(ref) not in seen and not isinstance(ref, type | types.ModuleType):
                seen.add(id(ref))
                pending.append(ref)


def _held_by_board(board: RunBoard) -> list[Any]:
    """What the board holds (not its subscription, nor the trio event it wakes readers
    with)."""
    skip = (board.attachment, board._changed)
    return [obj for obj in _strings(board, skip) if obj is not board]


def _holders(marker: str, length: int) -> dict[int, list[Any]]:
    """The strings of ``length`` that start with ``marker`` (by id), each with the objects
    the collector knows that hold it (directly, or through dicts and tuples it does not
    track)."""
    found: dict[int, list[Any]] = {}
    for obj in gc.get_objects():
        pending = [obj]
        while pending:
            for ref in gc.get_referents(pending.pop()):
                if type(ref) is str:
                    if len(ref) == length and ref.startswith(marker):
                        found.setdefault(id(ref), []).append(obj)
                elif type(ref) in (dict, tuple) and not gc.is_tracked(ref):
                    pending.append(ref)
    return found


def _describe(found: dict[int, list[Any]]) -> list[str]:
    """What holds these strings, and what holds those (for a failure's message)."""
    out = []
    for holders in list(found.values())[:3]:
        for obj in holders[:4]:
            up = [type(r).__name__ for r in gc.get_referrers(obj) if r is not holders]
            out.append(f"{type(obj).__name__} <- {up[:6]}")
    return out


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# -- the budget ---------------------------------------------------------------------------


async def test_the_board_cuts_large_values_and_says_where() -> None:
    board = RunBoard()
    text = "a" + "m" * MB
    for event in await _events(echo, {"text": text, "customs": 2}):
        await board.on_event(event)
    root = next(iter(board.roots))
    record = board.record(root)
    assert record is not None
    marker = f"... [cut: {len(text):,} characters in all]"
    start_text = record["start"]["data"]["input"]["text"]
    assert start_text.startswith("am") and start_text.endswith(marker)
    assert len(start_text) <= VALUE_LIMIT + 100
    assert record["end"]["data"]["output"].endswith(marker)
    assert record["end"]["status"] == "ok" and record["end"]["name"] == "echo"
    assert all(c["data"]["seen"].endswith(marker) for c in record["custom_events"])
    # the record says what it cut, and how big it was
    cut = {c["at"]: c for c in record["cut"]}
    for at in (
        "start.data.input.text",
        "end.data.input.text",
        "end.data.output",
        "custom_events[0].data.seen",
        "custom_events[1].data.seen",
    ):
        assert cut[at]["chars"] == len(text), at
    # the summary's preview is cut too, and the tree's answer
    tree = board.tree(root)
    assert tree is not None and tree[0]["input"]["text"].endswith(marker)
    assert len(json.dumps(tree)) < 20_000
    assert max(len(data) for _, _, data in board.ring) < 12_000
    assert not [s for s in _held_by_board(board) if type(s) is str and len(s) > VALUE_LIMIT + 100]


async def test_a_small_answer_is_not_hidden_by_a_large_input() -> None:
    # An item of a value gets its share of the room: the answer after a long input shows.
    board = RunBoard()
    agent = Agent(ScriptedChatModel([ScriptedTurn("the cat is on the shelf")]))
    for event in await _events(agent, "x" * MB):
        await board.on_event(event)
    tree = board.tree(next(iter(board.roots)))
    assert tree is not None
    assert tree[0]["output"]["output"] == "the cat is on the shelf"


async def test_the_board_keeps_within_its_byte_budget() -> None:
    board = RunBoard(history=100, budget=2 * MB)
    model = ScriptedChatModel([ScriptedTurn("w" * MB)], name="Whole")  # one 1 MB chunk
    for i in range(12):
        events = await _events(echo, {"text": f"{i}:" + "m" * MB, "customs": CUSTOMS_KEPT + 5})
        events += await _events(model, "q")
        for event in events:
            await board.on_event(event)
            assert board.size <= board.records_budget
            assert board.ring_size <= board.ring_budget
        assert sum(r.size for r in board.runs.values()) == board.size
    assert len(board.roots) < 24  # the budget, not the history, said how many
    last = next(reversed(board.roots.values()))
    assert last.kind == "chat_model" and len("".join(last.text)) <= TEXT_LIMIT
    assert last.text_chars == MB
    echoed = next(r for r in reversed(board.roots.values()) if r.name == "echo")
    record = board.record(echoed.run_id)
    assert record is not None
    assert len(record["custom_events"]) == CUSTOMS_KEPT
    assert record["custom_events_not_kept"] == 5
    # one message carries at most MESSAGE_TEXT characters of a chunk, and its length
    messages = [json.loads(data) for _, _, data in board.ring]
    token = next(m for m in reversed(messages) if m["k"] == "tok")
    assert len(token["text"]) == MESSAGE_TEXT and token["n"] == MB


async def test_what_the_board_counts_is_what_it_holds() -> None:
    # The budget is in bytes of memory: what the board counts must be what it takes.
    big = [await _events(make_cat_agent(nested=True), f"{i}" + "x" * MB) for i in range(40)]
    small = [await _events(make_cat_agent(nested=True), f"where? {i}") for i in range(40)]
    words = ScriptedChatModel([ScriptedTurn(" ".join(f"w{i % 7}" for i in range(30_000)))])
    tokens = [await _events(words, "q") for _ in range(3)]  # a string per token, joined
    for runs in (big, small, tokens):
        board = RunBoard()
        gc.collect()
        tracemalloc.start()
        try:
            for events in runs:
                for event in events:
                    await board.on_event(event)
            gc.collect()
            held = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        counted = board.size + board.ring_size
        assert 0.75 < held / counted < 1.25, (held, counted)


async def test_the_board_keeps_no_event_and_no_exception() -> None:
    # An error's traceback holds the frames of the run that raised it, and with them its
    # input: the board keeps JSON only.
    board = RunBoard()
    broken = Agent(ScriptedChatModel([ScriptedTurn("half", error="the model fell over")]))
    for target, payload in ((broken, "q"), (refuse, {"text": "x" * 1000}), (echo, {"text": "y"})):
        for event in await _events(target, payload):
            await board.on_event(event)
    kept = _held_by_board(board)
    odd = [
        type(o).__name__
        for o in kept
        if isinstance(o, StreamEvent | BaseException | types.TracebackType | types.FrameType)
    ]
    assert odd == []
    record = board.record(next(r.run_id for r in board.runs.values() if r.name == "refuse"))
    assert record is not None and record["end"]["data"]["error"].startswith("ValueError")


# -- nothing left for the collector -------------------------------------------------------


async def _left_with_the_collector_off(target: str) -> list[str]:
    """Serve a run of ``target`` on a 1 MB text with the collector off, then enough runs
    to push it out of the board's history and out of the server's recently finished
    runs: what still holds its input (while it was on the board, the board held nothing
    of it over VALUE_LIMIT)."""
    marker = f"input-{uuid.uuid4()}-"
    text = marker + "x" * MB
    body = json.dumps({"performer": target, "input": {"text": text}}).encode()
    length = len(text)
    del text
    async with serving({"measure": measure, "refuse": refuse}, history=2, max_body=2 * MB) as on:
        board = on.app.state.troupe.board
        small = {"performer": "measure", "input": {"text": "short"}}
        gc.collect()
        gc.disable()
        try:
            sent = await on.client.post(
                "/runs/wait", content=body, headers={"content-type": "application/json"}
            )
            assert sent.status_code == 200, sent.text
            await trio.sleep(3 * board.wake_interval)
            assert board.runs, "the board saw no run"
            held = _held_by_board(board)
            assert not [s for s in held if type(s) is str and len(s) > VALUE_LIMIT + 100]
            del held
            for _ in range(FINISHED_KEPT + 2):
                assert (await on.client.post("/runs/wait", json=small)).status_code == 200
            await trio.sleep(3 * board.wake_interval)
            assert board.size <= board.records_budget and board.ring_size <= board.ring_budget
            return _describe(_holders(marker, length))
        finally:
            gc.enable()


async def test_a_finished_runs_input_is_freed_by_reference_counting() -> None:
    left = await _left_with_the_collector_off("measure")
    assert left == [], f"the input outlived its run, in reference cycles: {left}"


# A failed run's error and its traceback's frames hold each other (the frames hold the
# run's reply, stream or LiveRun, which hold the error): the server clears the traceback
# of a finished run it lets go (actors/serve/_runs.py).
async def test_a_failed_runs_input_is_freed_by_reference_counting() -> None:
    left = await _left_with_the_collector_off("refuse")
    assert left == [], f"the input outlived its run, in reference cycles: {left}"


async def test_a_thousand_runs_with_a_megabyte_input_stay_bounded() -> None:
    marker = f"thousand-{uuid.uuid4()}-"
    length = len(marker) + 6 + MB
    rss: dict[int, float] = {}
    async with serving({"measure": measure}, max_body=2 * MB) as on:
        board = on.app.state.troupe.board
        headers = {"content-type": "application/json"}
        for i in range(1, 1001):
            body = b'{"input": {"text": "%s%06d%s"}}' % (marker.encode(), i, b"x" * MB)
            assert (await on.client.post("/runs/wait", content=body, headers=headers)).is_success
            if i in (400, 1000):
                await trio.sleep(3 * board.wake_interval)
                gc.collect()
                rss[i] = _rss_mb()
        kept = _holders(marker, length)
        assert board.size <= board.records_budget and board.ring_size <= board.ring_budget
    print(f"\nRSS after 400 runs {rss[400]:.0f} MB, after 1,000: {rss[1000]:.0f} MB")
    # What still holds a whole input: the server's last finished runs (their replay
    # buffers, for late readers), not the viewer.
    assert len(kept) <= FINISHED_KEPT + 2
    assert rss[1000] - rss[400] < 48


# -- a browser far behind -----------------------------------------------------------------


async def test_a_browser_far_behind_costs_one_bounded_write() -> None:
    """The viewer's stream to a browser that stopped reading: each write holds at most
    WRITE_BYTES of messages (and one message more), however far behind it is."""
    app = asgi_app(measure)
    board: RunBoard = app.state.troupe.board
    for i in range(400):
        for event in await _events(echo, {"text": f"{i} " + "p" * 3000}):
            await board.on_event(event)
    assert len(board.ring) > 1000
    largest = max(len(data) for _, _, data in board.ring)
    writes: list[int] = []
    scope = asgi_scope(
        "GET", "/viewer/events", [(b"host", b"127.0.0.1:8000"), (b"last-event-id", b"0")]
    )

    async def receive() -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body":
            writes.append(len(message["body"]))
            if len(writes) >= 6:  # the browser stops reading: this write waits for ever
                await trio.sleep_forever()

    with trio.move_on_after(2):
        await app(scope, receive, send)
    assert len(writes) == 6
    print(f"\nthe writes to a browser far behind: {writes} bytes (ring: {len(board.ring)})")
    assert max(writes) <= WRITE_BYTES + largest + 200
