"""A hostile review of stop 44's changes: stop 45."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from protocol import EventData, RunInfo, StreamEvent, matches_known, same_json
from runtime import ReplayDivergenceError, open_runtime
from runtime._core import Supervisor
from runtime._errors import RuntimeClosedError
from runtime._event_channel import HEAD_KEEPS, EventChannel
from runtime._replay import read_journal
from runtime._sqlite_store import SQLiteStore

from .test_replay import _read_back
from .test_review46 import once_ended
from .test_review47 import dead_claim


def _opened(store: SQLiteStore) -> SQLiteStore:
    again = SQLiteStore(store.url)
    again.open()
    return again


async def test_a_dead_claim_whose_start_fails_ends_once_with_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The unconfirmed suspicion of review 47, confirmed: recovery took "second" over
    # (its journal empty: it goes on from record 0, as a claim's run does) and its
    # start failed after the journal was told of it (here the runtime closing as it
    # is called). The journal took it for this process's own claim never started and
    # ended it "cancelled" with the next write, and recovery ended it with the error
    # too: two ends, the last written standing (often "the run never started").
    store, agent = await dead_claim(tmp_path)
    start = Supervisor.start

    async def closing(self: Supervisor, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("recovered") is not None:
            raise RuntimeClosedError("the runtime is closed")
        return await start(self, *args, **kwargs)

    monkeypatch.setattr(Supervisor, "start", closing)
    async with open_runtime(store=store, resume=[agent]) as rt:
        await once_ended(rt, "second")
        await trio.sleep(0.3)
    record = _opened(store).get_run("second")
    assert store.ended.count("second") == 1, store.ended
    assert record is not None and record.status == "error"
    assert "could not be resumed: RuntimeClosedError" in (record.error or "")


# -- what a replay and a delta encoder take for the same JSON --------------------------


_ROOT: Final = RunInfo(run_id="root", name="Agent", kind="chain")


def _root_records(*calls: Any, streamed: Any = "said") -> list[Any]:
    """The records (written and read back) of a root run that streamed ``streamed``
    and asked the tool "look" with each of ``calls`` in turn."""
    events = [
        StreamEvent(event="on_chain_start", run=_ROOT, seq=0, data=EventData(input="go")),
        StreamEvent(event="on_chain_stream", run=_ROOT, seq=1, chunk=streamed),
    ]
    for n, call in enumerate(calls):
        tool = RunInfo(run_id=f"t{n}", name="look", kind="tool", parent_ids=("root",))
        ended = EventData(input=call, output="looked", ended=True)
        events += [
            StreamEvent(event="on_tool_start", run=tool, seq=0, data=EventData(input=call)),
            StreamEvent(
                event="on_tool_end", run=tool, seq=1, data=ended, status="ok", end_time=1.0
            ),
        ]
    return _read_back(events)


@pytest.mark.parametrize(
    ("journaled", "asked"),
    [({"x": 1}, {"x": True}), ({"x": False}, {"x": 0}), ({"x": [1]}, {"x": [1.0]})],
)
def test_a_replay_tells_a_boolean_from_a_number(journaled: Any, asked: Any) -> None:
    # A tool asked with {"x": true} where the journal's call had {"x": 1}: its arguments
    # differ (JSON reads them back apart), and the replay answered it from the journal
    # (a tool call not made again): the walk told them apart, and the JSON made then
    # was compared with Python's ==, for which True == 1 == 1.0. Likewise a chunk
    # streamed again.
    replays_apart(journaled, asked)


def replays_apart(journaled: Any, asked: Any) -> None:
    """Check that a replay whose journal's tool call was asked with, and whose run
    streamed, ``journaled`` answers neither ``asked`` (a divergence), and both
    ``journaled``."""
    replay = read_journal("root", _root_records(journaled, streamed=journaled)).replay
    with pytest.raises(ReplayDivergenceError):
        replay.replays_emit("chunk", asked)
    assert replay.take("tool", "look", asked) is None
    replay = read_journal("root", _root_records(journaled, streamed=journaled)).replay
    assert replay.replays_emit("chunk", journaled)
    assert replay.take("tool", "look", journaled) is not None


def test_a_replay_finds_nan_where_the_journal_wrote_nan() -> None:
    # NaN is written and read back as NaN; Python's == says NaN is not NaN: a tool
    # asked again with a NaN argument was never found in the journal (run again, or
    # a divergence), nor a chunk streamed again with one.
    nan = {"x": [float("nan"), float("inf")]}
    replay = read_journal("root", _root_records(nan, streamed=nan)).replay
    assert replay.replays_emit("chunk", {"x": [float("nan"), float("inf")]})
    assert replay.take("tool", "look", {"x": (float("nan"), float("inf"))}) is not None


def test_a_delta_encoder_writes_an_item_whose_number_became_a_boolean() -> None:
    # A tool's input lists are written as what they add to the last call's: an item
    # equal to the one before is not written again. {"x": True} was taken for the
    # {"x": 1} before it (==): the journal read back 1 where the run was given true.
    inputs = [{"items": [{"x": 1}, {"y": 0.0}]}, {"items": [{"x": True}, {"y": 0}, {"z": 3}]}]
    steps = read_journal("root", _root_records(*inputs)).replay.steps
    assert [json.dumps(s.input) for s in steps] == [json.dumps(i) for i in inputs]


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.integers(2**63, 2**64)
    | st.floats(allow_nan=True)  # (-0.0 too: told apart since review 49)
    | st.sampled_from(["", "1", "true", "\\ud800"])
)
_json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.sampled_from(["a", "b", "1"]), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(_json_values, _json_values)
def test_the_same_json_is_what_json_writes_alike(value: Any, other: Any) -> None:
    def text(v: Any) -> str:
        return json.dumps(v, sort_keys=True)

    assert same_json(value, other) == (text(value) == text(other))
    assert same_json(value, value)
    if matches_known(value, json.loads(text(other)), {}):
        assert text(value) == text(other)


# -- a reader letting go of a run of chunks it read (HEAD_KEEPS) -----------------------

_INFO = RunInfo(run_id="r", name="run", kind="chain")
_OTHER = RunInfo(run_id="o", name="other", kind="chain")
_ops = st.lists(
    st.sampled_from(["chunk", "chunk", "chunk", "gap", "other", "event", "take", "take"])
    | st.tuples(st.just("takes"), st.integers(HEAD_KEEPS - 2, HEAD_KEEPS + 3))
    | st.tuples(st.just("chunks"), st.integers(HEAD_KEEPS - 2, 2 * HEAD_KEEPS + 3)),
    max_size=40,
)


@given(_ops, st.sampled_from([1, 2, HEAD_KEEPS, HEAD_KEEPS + 1, 10_000]))
def test_a_run_of_chunks_read_past_what_a_reader_keeps_loses_nothing(
    ops: list[Any], capacity: int
) -> None:
    # Chunks of a run joining the head its reader is at, read in steps that cross 64
    # (and twice 64) however they fall, among other runs' chunks, whole events and
    # gaps in a run's numbers, at capacities that refuse some: every chunk queued is
    # read once, in order, as the event it stands for; the head never keeps more than
    # 64 read; a quiet channel holds nothing.
    channel = EventChannel(capacity)
    name = "on_chain_stream"
    seqs = {"r": 0, "o": 0}
    queued: list[tuple[str, int, object]] = []
    read: list[tuple[str, int, object]] = []

    def bare(info: RunInfo, step: int = 1) -> None:
        seqs[info.run_id] += step
        seq = seqs[info.run_id]
        if channel.put_chunk_now(name, info, seq, (info.run_id, seq)):
            queued.append((info.run_id, seq, (info.run_id, seq)))
        else:
            seqs[info.run_id] -= step  # (refused: its number is not used)

    def take(times: int) -> None:
        for _ in range(times):
            got = channel.take()
            if got is None:
                return
            read.append((got.run_id, got.seq, got.chunk))
            at = channel._at
            assert at is None or channel._at_read <= HEAD_KEEPS + 1

    for op in ops:
        match op:
            case "chunk":
                bare(_INFO)
            case "gap":
                bare(_INFO, 2)
            case "other":
                bare(_OTHER)
            case "event":
                seqs["r"] += 1
                whole = StreamEvent(name, _INFO, seqs["r"], chunk=("r", seqs["r"]))
                if channel.put_now(whole):
                    queued.append(("r", seqs["r"], ("r", seqs["r"])))
                else:
                    seqs["r"] -= 1
            case "take":
                take(1)
            case ("takes", n):
                take(n)
            case ("chunks", n):
                for _ in range(n):
                    bare(_INFO)
                    take(1)  # (a reader that keeps up: the head it reads grows)
        assert len(channel) == len(queued) - len(read)
    take(len(queued))
    assert read == queued
    assert len(channel) == 0 and channel._entries == []
