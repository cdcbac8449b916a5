"""A hostile review of stop 48's changes (the journal's records made as JSON text by
generated writers, a join of a run whose journal failed unwritten, SQLite's rows
inserted by one helper and its close taking the locks, the HTTP edge's JSON
responses), and of the leftover of the last one (a batch of claims failing as one):
stop 49."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final

import pytest

from actors.serve._wire import WireJSONResponse, wire_json
from protocol import AgentOutput, CompactDecoder, EventData, RunInfo, StreamEvent
from runtime import Run, RunRecord, StoreError, UnknownRunError, open_runtime
from runtime._journal import JournalError, journal_encoder
from runtime._sqlite_store import SQLiteStore
from runtime._store import RunEnd, Store, WriteBatch

from .sse_client import serving
from .test_review51 import _Huge
from .test_review52 import _waited_and_streamed
from .test_review_journal4 import _Taking
from .test_store_contract import opened, run
from .test_store_contract import url as url  # (the fixture: each kind of store)

ROOT: Final = Path(__file__).resolve().parent.parent

# -- a claim whose record fails past the store's errors -------------------------------


def _nested(depth: int) -> Any:
    """A JSON value nested ``depth`` deep: ``json.dumps`` raises RecursionError on it."""
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def _claims_at_once(store: Store, claims: list[tuple[str, RunRecord]]) -> dict[str, Any]:
    """``claims`` made from a thread each at once (on SQLite, while the writer is held:
    they wait together, and the thread that takes the writer first makes them all in
    one batch): what each got, its answer or its exception."""
    answers: dict[str, Any] = {}

    def claim(paused: str, by: RunRecord) -> None:
        try:
            answers[by.run_id] = store.mark_resumed(paused, by)
        except BaseException as exc:  # what the thread got, whatever it is
            answers[by.run_id] = exc

    workers = [threading.Thread(target=claim, args=c) for c in claims]
    if isinstance(store, SQLiteStore):
        with store._write_lock:
            for worker in workers:
                worker.start()
            deadline = time.monotonic() + 30
            while len(store._claims) < len(claims):
                assert time.monotonic() < deadline, "the claims did not wait for the writer"
                time.sleep(0.001)
    else:
        for worker in workers:
            worker.start()
    for worker in workers:
        worker.join(30)
        assert not worker.is_alive()
    return answers


def test_a_claim_whose_record_is_nested_too_deeply_fails_alone(url: str) -> None:
    # A resume's claim whose record's JSON is nested past the stack (its config: the
    # state or metadata it was given) raises RecursionError as its record is written,
    # not the store's error. On SQLite the claims waiting together are made in one
    # batch by the thread that takes the writer first: that error went up from it to
    # every claim of the batch (the thread making it raised RecursionError, the
    # others "a claim failed"), the good claims too, whose runs stayed paused. On
    # PostgreSQL the claimant got the bare RecursionError. Each claim is answered as
    # if made alone now: the deep one fails with the store's error, the others win.
    store = opened(url)
    try:
        paused = [f"p{n}" for n in range(6)]
        store.write(WriteBatch(runs=[run(p) for p in [*paused, "p-deep"]]))
        store.write(WriteBatch(ends=[RunEnd(p, "paused", 2.0) for p in [*paused, "p-deep"]]))
        claims = [(p, run(f"{p}-by")) for p in paused]
        claims.insert(3, ("p-deep", run("deep-by", config={"state": _nested(5000)})))
        answers = _claims_at_once(store, claims)
        deep = answers.pop("deep-by")
        assert isinstance(deep, StoreError), repr(deep)
        assert str(deep).startswith("store ") and "RecursionError" in str(deep)
        assert answers == {f"{p}-by": True for p in paused}
        for p in paused:
            got = store.get_run(p)
            assert got is not None and got.resumed_by == f"{p}-by"
        assert store.get_run("deep-by") is None
        left = store.get_run("p-deep")
        assert left is not None and left.status == "paused" and left.resumed_by is None
    finally:
        store.close()


# -- the journal's text writers: objects nested in themselves -------------------------


def _in_child(code: str) -> str:
    """What the Python ``code`` prints, run in a child process given 60 s: a walk that
    never ends holds the GIL, which no watchdog in this process could end."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child did not finish within 60 s:\n{code}")
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def structured(depth: int) -> AgentOutput:
    """An agent's output holding another as its structured answer, ``depth`` deep (an
    ``Any`` field: each object's writer calls the next one's)."""
    value: Any = "innermost"
    for _ in range(depth):
        value = AgentOutput(input="q", output="a", structured=value)
    return value  # type: ignore[no-any-return]


def read_back(depth: int) -> Any:
    """The chunk of a run that streamed :func:`structured` of ``depth``, encoded by a
    journal's encoder, as its JSON text, and read back by the decoder (a store's reader)."""
    run_ = RunInfo(run_id="r", name="deep", kind="chain")
    records: list[Any] = []
    encoder = journal_encoder(0)
    started = StreamEvent(event="on_chain_start", run=run_, seq=0, data=EventData("x"))
    encoder.encode(started, records)
    event = StreamEvent(event="on_chain_stream", run=run_, seq=1, chunk=structured(depth))
    encoder.encode(event, records)
    decoder = CompactDecoder()
    read = [decoder.decode(json.loads(r) if type(r) is str else r) for r in records]
    return read[-1].chunk  # type: ignore[union-attr]


def test_an_object_nested_in_itself_past_the_stack_is_journaled_as_its_repr() -> None:
    # The writers of tagged objects called each other through their ``Any`` fields
    # without the converter's guard: a payload nested past the stack raised
    # RecursionError from the encoder, and the run's journal failed ("cannot encode
    # on_chain_stream: RecursionError"), where the converter's SerializationError had
    # the payload written as its repr, the journal going on (as before stop 48).
    chunk = read_back(600)
    assert type(chunk) is str and "AgentOutput" in chunk  # (its repr, or what stands for it)


def test_an_object_nested_deeply_is_journaled_as_a_reader_reads_it_back() -> None:
    # 400 deep, the writers (two frames a level) wrote it whole, deeper than the
    # converter (four) ever had: a reader's structure function failed on it by
    # RecursionError and made each object again by cattrs' code for its detailed
    # error, at every level (twice the work a level): reading the journal (a join,
    # a recovery, the viewer) never ended. It is written as the converter writes
    # it now (past the converter's depth, its repr), which reads back at once.
    printed = _in_child(
        "from tests.test_review53 import read_back\n"
        "chunk = read_back(400)\n"
        "print(type(chunk).__name__, chunk[:11])\n"
    )
    assert printed == "str AgentOutput\n"


def nested_json(depth: int) -> dict[str, Any]:
    """JSON a client may send (an input, a decision's arguments: 100 levels are let
    in): agents' outputs nested through their structured answers, the innermost not
    one (its iterations not a number)."""
    value: dict[str, Any] = {"$type": "AgentOutput", "input": "q", "output": "a", "iterations": "x"}
    for _ in range(depth):
        value = {"$type": "AgentOutput", "input": "q", "output": "a", "structured": value}
    return value


def test_json_of_objects_nested_that_are_not_their_class_is_refused_at_once() -> None:
    # Each tagged class's fast structure function, failing, made its object again by
    # cattrs' code for the detailed error, which made each inner object again (fast
    # code, then cattrs'): the work doubled at each level, more than quadrupled with
    # the errors' groups. 16 levels took 62 s, 24 would take days: a client's input
    # of 24 such levels (2 KB), journaled, froze each reader of the run (its journal's
    # decoder, a replay's input), the server's included. An object that failed is
    # made by cattrs' code once now, its inner objects not again.
    printed = _in_child(
        "from tests.test_review53 import nested_json\n"
        "from protocol import CompactDecoder, CompactError, structure_any\n"
        "from cattrs.errors import ClassValidationError\n"
        "try:\n"
        "    structure_any(nested_json(24))\n"
        "except ClassValidationError as exc:\n"
        "    print('refused', type(exc).__name__)\n"
        "decoder = CompactDecoder()\n"
        "decoder.decode(['i', 0, 'r', 'p', 'chain', [], [], {}, 1.0])\n"
        "try:\n"
        "    decoder.decode([0, 0, 'on_chain_start', {'input': nested_json(24)}, None, None])\n"
        "except CompactError:\n"
        "    print('malformed')\n"
    )
    assert printed == "refused ClassValidationError\nmalformed\n"


# -- the HTTP edge: a lone surrogate in a dict's key, in a repr ----------------------


class _ShownRaw:
    """An object of no JSON form whose repr shows a file's name as it is (a lone
    surrogate, as os.fsdecode makes of bytes that are not UTF-8)."""

    def __repr__(self) -> str:
        return "File(caf\udce9.txt)"


SIZES: Final = {"caf\udce9.txt": 10, "b.txt": 2}
"""A tool's answer: the sizes of a folder's files, by name (os.listdir's)."""


class Sizes(_Taking[Any]):
    """Answers :data:`SIZES`, and streams an object whose repr shows a raw name."""

    name = "sizes"

    async def perform(self, message: Any, run: Run) -> Any:
        await run.emit({"file": _ShownRaw()})
        return SIZES


def test_a_lone_surrogate_in_a_key_or_a_repr_is_written_as_json_writes_it() -> None:
    # Stop 48 wrote a lone surrogate in a text as json does, but not in a dict's key
    # (orjson refused it again, and the whole value, the event around it, was written
    # as its repr: a JSON string where a client reads an object), nor in the repr of
    # a value of no JSON form, which made wire_json raise (it promises never to).
    event = {"event": "on_tool_end", "data": {"output": SIZES}}
    assert json.loads(wire_json(event)) == event
    assert json.loads(wire_json({"file": _ShownRaw(), "n": 2**70})) == {
        "file": "File(caf\udce9.txt)",
        "n": 2**70,
    }
    assert json.loads(wire_json(_ShownRaw())) == "File(caf\udce9.txt)"
    assert json.loads(bytes(WireJSONResponse({"output": SIZES}).body)) == {"output": SIZES}


async def test_a_tool_answering_files_by_name_ends_well_on_the_wire(troupe_watchdog: None) -> None:
    async with serving({"sizes": Sizes()}) as served:
        waited, read = await _waited_and_streamed(served, "sizes", "events")
    assert waited.status_code == 200 and waited.json()["output"] == SIZES
    streamed = [r["data"]["chunk"] for r in read if r["event"] == "on_chain_stream"]
    assert streamed == [{"file": "File(caf\udce9.txt)"}]
    assert read[-1]["event"] == "on_chain_end" and read[-1]["data"]["output"] == SIZES


# -- a join of a run whose journal failed unwritten --------------------------------------


async def test_joins_of_a_run_never_written_keep_no_frames(
    tmp_path: Path, troupe_watchdog: None
) -> None:
    # The journal kept the very error the run's caller was raised (its traceback: the
    # caller's frames, their locals, its input, kept for as long as the run is among
    # the last 256), and each join raised that object again, which adds the join's
    # frames to its traceback: a client asking again and again for such a run grew
    # the process without end. What is kept is the error's words; each join gets an
    # error of its own.
    async with open_runtime(store=f"sqlite:///{tmp_path}/runs.db") as rt:
        with pytest.raises(JournalError, match="cannot encode") as failed:
            await rt.ainvoke(_Huge(), {"n": 10**5_000}, run_id="h")
        said: set[str] = set()
        for _ in range(20):
            with pytest.raises(UnknownRunError) as info:
                async with rt.join("h"):
                    pass
            said.add(str(info.value))
        journal = rt.journal
        assert journal is not None
        kept = journal._unwritten["h"]
        assert kept.__traceback__ is None and str(kept) == str(failed.value)
        assert len(said) == 1 and str(failed.value) in said.pop()
