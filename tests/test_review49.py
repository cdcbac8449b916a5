"""A hostile review of stop 45's changes (same_json, a run's start and end by plain
calls, pooled run ids, chunk runs numbered seq to next, fast_new's bare twin): stop 46."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any, Final

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from protocol import CompactDecoder, EventData, RunInfo, StreamEvent, matches_known, same_json
from runtime import JournalError, Performer, Run, RunPaused, open_runtime
from runtime._event_channel import ChunkEvents
from runtime._journal import journal_encoder
from runtime._replay import read_journal

from .test_json_text import as_stored
from .test_replay import Pauser
from .test_review48 import _root_records, replays_apart


class Level(enum.IntEnum):
    ONE = 1


class Colour(enum.StrEnum):
    RED = "red"


# -- what a replay and a delta encoder take for the same JSON --------------------------


@pytest.mark.parametrize(
    ("journaled", "asked"),
    [({"x": 0.0}, {"x": -0.0}), ({"x": [-0.0]}, {"x": [0.0]}), ({"x": True}, {"x": Level.ONE})],
)
def test_a_replay_tells_apart_what_json_writes_apart(journaled: Any, asked: Any) -> None:
    # JSON writes -0.0 and 0.0 apart ("-0.0", "0.0") and reads them back apart; an
    # IntEnum's 1 is written 1, not true. The walk (matches_known) took them for the
    # same with Python's == (-0.0 == 0.0, Level.ONE == True): a tool asked otherwise
    # than before was answered from the journal, a chunk streamed otherwise dropped as
    # if streamed before, where each is a divergence.
    replays_apart(journaled, asked)


def test_a_delta_encoder_writes_an_item_whose_zero_changed_sign() -> None:
    # An item of a tool's input list the same as the last call's is not written again
    # (its reader takes the last call's): -0.0 was taken for the 0.0 before it, and the
    # journal read back 0.0 where the run was given -0.0.
    inputs = [{"items": [0.0, 1]}, {"items": [-0.0, 1, 2]}]
    steps = read_journal("root", _root_records(*inputs)).replay.steps
    assert [json.dumps(s.input) for s in steps] == [json.dumps(i) for i in inputs]


_ROOT: Final = RunInfo(run_id="root", name="Agent", kind="chain")


@pytest.mark.parametrize(
    ("before", "after"), [(1, True), (0.0, -0.0), (True, Level.ONE), ("red", Colour.RED)]
)
def test_a_run_end_whose_input_changed_in_place_reads_back_as_it_ended(
    before: Any, after: Any
) -> None:
    # A run's end gives its input as its start's (0: not written again) when it still
    # has the JSON the start wrote; that was asked with Python's == (as the delta
    # encoder's items were, before same_json): an input changed in place from 1 to
    # True between the start and the end read back 1 in the end's event.
    given = {"x": before, "items": [1, 2]}
    start = StreamEvent(event="on_chain_start", run=_ROOT, seq=0, data=EventData(input=given))
    encoder, records = journal_encoder(), list[Any]()
    encoder.encode(start, records)
    given["x"] = after
    ended = EventData(input=given, output="done", ended=True)
    end = StreamEvent(event="on_chain_end", run=_ROOT, seq=1, data=ended, status="ok", end_time=1.0)
    encoder.encode(end, records)
    decoder = CompactDecoder()
    read = [decoder.decode(r) for r in as_stored(records)]
    events = [e for e in read if e is not None]
    assert [e.event for e in events] == ["on_chain_start", "on_chain_end"]
    assert json.dumps(events[0].data.input) == json.dumps({"x": before, "items": [1, 2]})
    assert json.dumps(events[1].data.input) == json.dumps(given)


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from([Level.ONE, Colour.RED, "red", 0.0, -0.0, 1.0, float("nan"), 2**53 + 1])
    | st.integers(2**63, 2**64)
    | st.floats(allow_nan=True)
    | st.sampled_from(["", "1", "true"])
)
_json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.sampled_from(["a", "b", "1", "red", Colour.RED]), inner, max_size=3)
    ),
    max_leaves=8,
)
_TWINS: Final[list[list[Any]]] = [
    [0.0, -0.0],
    [0, 0.0, -0.0, False],
    [1, 1.0, True, Level.ONE],
    [2**53 + 1, float(2**53 + 1)],
    ["red", Colour.RED],
]
"""Values Python's ``==`` takes for one another (of each list), which JSON writes apart
(but a StrEnum, written as its string)."""


def _twin(value: Any, data: st.DataObject) -> Any:
    """``value`` with some of its scalars (and keys) swapped for ones ``==`` to them."""
    if isinstance(value, dict):
        return {_twin(k, data): _twin(v, data) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_twin(v, data) for v in value)
    for twins in _TWINS:
        if any(type(value) is type(t) and _text(value) == _text(t) for t in twins):
            others = [t for t in twins if type(t) is not type(value) or _text(t) != _text(value)]
            return data.draw(st.sampled_from(others))
    return value


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@given(_json_values, _json_values, st.data())
def test_the_same_json_is_what_json_writes_alike_with_signs_and_enums(
    value: Any, unlike: Any, data: st.DataObject
) -> None:
    # The reference: the same iff written alike (and so read back alike); -0.0,
    # enums (an IntEnum is its number, a StrEnum its string) and NaN included.
    for other in (unlike, _twin(value, data)):
        assert same_json(value, other) == (_text(value) == _text(other)), (value, other)
        read = json.loads(_text(other))
        if matches_known(value, read, {}):
            assert _text(value) == _text(other), (value, other)
        if _text(value) == _text(other):
            assert same_json(value, read)
    assert same_json(value, value)


# -- a run of chunks handed to a watcher that is full ------------------------------------


class _Burst(Performer[str, str]):
    """Streams ``size`` chunks at once (``emit_many``: one message to the tracer)."""

    name = "burst"
    tags = ()
    metadata: dict[str, Any] = {}  # noqa: RUF012

    def __init__(self, size: int) -> None:
        self.size = size

    def coerce_input(self, value: Any) -> str:
        return str(value)

    async def perform(self, message: str, run: Run) -> str:
        await run.emit_many([str(n) for n in range(self.size)])
        return "done"


@pytest.mark.parametrize("size", [1, 63, 64, 65, 3_000])
async def test_a_run_of_chunks_a_full_watcher_takes_bit_by_bit_is_copied_once(
    size: int, troupe_watchdog: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A runtime-wide watcher that is full is handed a run of chunks (one emit_many) an
    # event at a time as it makes room, then offered the rest again: a part of a run
    # is a copy of its chunks since stop 45 (ChunkEvents.part), and the rest was
    # copied whole at each of those waits: a run of n chunks cost the tracer about
    # n * n / capacity chunks copied (3,000 chunks to a watcher of 4: 1.1 M where
    # 3,000 will do; 160,000 chunks to one of 16: 7.2 s of the tracer's time against
    # 1.2). Every chunk still reaches it once, in order.
    copied = [0]
    part = ChunkEvents.part

    def counted(self: ChunkEvents, begin: int, end: int) -> ChunkEvents:
        copied[0] += end - begin
        return part(self, begin, end)

    monkeypatch.setattr(ChunkEvents, "part", counted)
    async with open_runtime() as rt, rt.watch(capacity=4) as events:
        seqs: list[int] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rt.ainvoke, _Burst(size), "go")
            async for event in events:
                if event.event == "on_chain_stream":
                    assert event.chunk == str(len(seqs))
                    seqs.append(event.seq)
                if event.event == "on_chain_end":
                    break
    assert seqs == list(range(1, size + 1))
    assert copied[0] <= 12 * size  # (each part at most twice what is taken, and 8)


# -- a request nested past Python's recursion limit, replayed -------------------------


class _Echo(Performer[Any, str]):
    """Counts what it is asked (a nested run's performer: its input taken as it is)."""

    name = "echo"
    tags = ()
    metadata: dict[str, Any] = {}  # noqa: RUF012

    def __init__(self) -> None:
        self.asked = 0

    def coerce_input(self, value: Any) -> Any:
        return value

    async def perform(self, message: Any, run: Run) -> str:
        self.asked += 1
        return "echoed"


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [600, 1_200])
async def test_a_request_nested_too_deeply_for_json_is_replayed(
    depth: int, tmp_path: Path, troupe_watchdog: None
) -> None:
    # A request whose input nests past what Python's stack can turn into JSON is
    # journaled as its repr (an odd input must not break the run), and a replay
    # compares the request asked again by its repr too: but the replay's walk
    # (unstructure_known) let the RecursionError out, where unstructure_any says
    # SerializationError: the resume of a run that had asked for it failed with a
    # RecursionError, and so would its recovery after a crash.
    echo = _Echo()

    class Asking(Pauser):
        async def perform(self, message: str, run: Run) -> str:
            await run.request(echo, _nested(depth))
            return await self.ask(run)

    asking = Asking()
    async with open_runtime(store=f"sqlite:///{tmp_path}/runs.db") as rt:
        with pytest.raises(RunPaused) as paused:
            await rt.ainvoke(asking, "go", run_id="first")
        (request,) = paused.value.pending
        assert await rt.resume(asking, "first", {request.id: "yes"}) == "yes"
    assert echo.asked == 1  # answered from the journal, not asked again


# -- a record no thread can write ------------------------------------------------------


async def test_a_run_asking_with_an_int_json_cannot_write_fails_alone_at_once(
    tmp_path: Path, troupe_watchdog: None, caplog: pytest.LogCaptureFixture
) -> None:
    # An integer of more than 4,300 digits (a factorial tool's answer) is a JSON value
    # to the encoder, but Python refuses to write it (ValueError, in any thread). The
    # journal kept such a record for the store's write to fail on: the whole batch's
    # write failed and was tried again (0.25, 1 and 2 s: "journal write failed ...
    # trying again"), so every run of the runtime waited 3.5 s for its end, before the
    # batch was written a tree at a time and the run failed. Now the run's journal
    # fails at once, as for an event the encoder cannot write, and no write fails.
    huge = 10**5_000
    results: dict[str, Any] = {}
    async with open_runtime(store=f"sqlite:///{tmp_path}/runs.db") as rt:

        async def one(name: str, value: Any) -> None:
            try:
                results[name] = await rt.ainvoke(_Echo(), value, run_id=name)
            except JournalError as exc:
                results[name] = exc

        async with trio.open_nursery() as nursery:
            for n in range(4):
                nursery.start_soon(one, f"fine{n}", n)
            nursery.start_soon(one, "huge", {"x": huge})
        assert rt.journal is not None and rt.journal.failures == 0
    assert all(results[f"fine{n}"] == "echoed" for n in range(4))
    assert isinstance(results["huge"], JournalError)
    assert "cannot encode" in str(results["huge"]) and "digits" in str(results["huge"])
    assert not [r for r in caplog.records if "trying again" in r.getMessage()]
