"""Review of selective journal sync: what a store that lost the writes it was not asked
to sync must not do. PostgreSQL's asynchronous commits are lost when the database
server crashes and restarts (its process, not the machine) while the Troupe process
that made them lives on: its journal's next write must not land after the gap, as if
the lost records were there. The PostgreSQL cases are marked ``postgres`` (see
``tests/test_store_contract.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from runtime import JournalError, open_runtime
from runtime._store import FencedError, RunRecord, Segment, StoreError, WriteBatch

from .test_journal_sync import KINDS, _spy


def _sql(store: Any, text: str) -> str:
    """``text`` with the store's placeholder."""
    return text if "sqlite" in store.url else text.replace("?", "%s")


def _lose_after(store: Any, root_id: str, kept: int) -> None:
    """What a crashed database server does to the commits it had not flushed: the
    journal's records from ``kept`` on are gone, and the run's row says as much."""
    with store._writing() as db:
        db.execute(
            _sql(store, "DELETE FROM troupe_segments WHERE root_id = ? AND first >= ?"),
            (root_id, kept),
        )
        db.execute(
            _sql(store, "UPDATE troupe_runs SET events = ? WHERE run_id = ?"), (kept, root_id)
        )


def _spans(store: Any, root_id: str) -> list[tuple[int, int]]:
    """The journal's segments as ``(first, count)``, in order."""
    with store._reading() as db:
        rows = db.execute(
            _sql(
                store, "SELECT first, count FROM troupe_segments WHERE root_id = ? ORDER BY first"
            ),
            (root_id,),
        ).fetchall()
    return [(int(first), int(count)) for first, count in rows]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_run_whose_unsynced_records_the_store_lost_ends_with_an_error_not_a_gap(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = _spy(kind, request, tmp_path)
    waiting, go = trio.Event(), trio.Event()

    @tool
    async def hold() -> str:
        """Hold."""
        waiting.set()
        await go.wait()
        return "held"

    turns = [
        ScriptedTurn(
            tokens=tuple(f" t{i}" for i in range(20)),
            tool_calls=[ScriptedCall("hold", {}, id="h1")],
        ),
        ScriptedTurn(text="done"),
    ]
    agent = Agent(model=ScriptedChatModel(turns), tools=[hold], name="holder")
    outcome: dict[str, Any] = {}

    async def run(rt: Any) -> None:
        try:
            outcome["value"] = await rt.ainvoke(agent, "go", run_id="run")
        except JournalError as exc:
            outcome["error"] = exc

    async with open_runtime(store=store) as rt, trio.open_nursery() as nursery:
        nursery.start_soon(run, rt)
        await waiting.wait()
        # the model's turn and the tool's start: written, unsynced, after the synced
        # write of the run's record
        with trio.fail_after(10):
            while not store.writes or store.writes[-1][0].sync:  # noqa: ASYNC110
                await trio.sleep(0.02)
        kept = max(s.first + len(s.records) for b, _ in store.writes if b.sync for s in b.segments)
        assert store.journal_length("run") > kept
        _lose_after(store, "run", kept)
        go.set()

    store.open()
    try:
        spans = _spans(store, "run")
        record = store.get_run("run")
    finally:
        store.close()
    ends = [0] + [first + count for first, count in spans]
    assert [first for first, _ in spans] == ends[:-1], f"a gap in the run's journal: {spans}"
    assert "error" in outcome, "the run went on after its lost records"
    assert record is not None and record.status == "error"


@pytest.mark.parametrize("kind", KINDS)
def test_a_fenced_write_past_the_journal_s_end_is_refused_and_one_that_landed_is_a_duplicate(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = _spy(kind, request, tmp_path)
    store.open()
    try:

        def segment(first: int) -> WriteBatch:
            return WriteBatch(segments=[Segment("r", first, [[0, first, "x"]])], owner="o")

        store.write(WriteBatch(runs=[RunRecord("r", "p", "chain", owner="o", created_at=1.0)]))
        store.write(segment(0))
        store.write(segment(1))
        with pytest.raises(StoreError, match="journal") as refused:
            store.write(segment(3))  # records 2 were lost
        assert not isinstance(refused.value, FencedError)  # the run is still its owner's
        assert _spans(store, "r") == [(0, 1), (1, 1)]
        with pytest.raises(StoreError, match=r"UNIQUE|duplicate key"):
            store.write(segment(1))  # an attempt that landed, made again
        store.write(segment(2))
        assert _spans(store, "r") == [(0, 1), (1, 1), (2, 1)]
        # an unfenced write (not the journal's) is taken as it is
        store.write(WriteBatch(segments=[Segment("r", 7, [[0, 7, "x"]])]))
    finally:
        store.close()
