"""A hostile review of stop 42 (the journal's CPU, the viewer board's hold while a page
catches up, review42's own mends, schema 5 and quick structuring)."""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Literal

import attrs
import pytest
import trio
import trio.testing

from actors import ScriptedChatModel, ScriptedTurn
from actors.serve._board import CATCH_UP_SECONDS, RunBoard
from protocol import SerializationError, StreamEvent, to_json, unstructure_any
from runtime import JournalError, Performer, Run, adispatch_custom_event, open_runtime
from tests.postgres import Cluster
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


@attrs.define
class _Case:
    """A chat model run's start and tokens (``words``), and a board no page watches
    (each run's first token only) that has taken its start and first token."""

    words: tuple[str, ...]
    start: StreamEvent
    tokens: list[StreamEvent]
    board: RunBoard
    routed: _Routed

    @property
    def text(self) -> str:
        """The run's text on the board."""
        return "".join(self.board.runs[self.start.run_id].text)


async def _unwatched(count: int) -> _Case:
    words = tuple(f"w{i} " for i in range(count))
    recorder = Recorder()
    async with open_runtime() as rt:
        await rt.subscribe(recorder)
        await ScriptedChatModel([ScriptedTurn(tokens=words)]).ainvoke("q")
    events = [e for _, e in recorder.seen]
    start, tokens = events[0], [e for e in events if e.phase == "stream"]
    routed = _Routed()
    board = RunBoard()
    board.taking = "first"
    board.attachment = routed  # type: ignore[assignment]  # only stream_events is used
    board.apply(start)
    board.apply(tokens[0])
    return _Case(words, start, tokens, board, routed)


async def test_held_tokens_reach_a_waiting_page_though_the_board_hears_nothing_more(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A page came; the board holds a run's tokens that follow a gap, waiting for the
    # run's live buffer (its own client's stream, read behind the model) to fill it.
    # The client reads on and fills it; the model says nothing more for a while (a
    # pause mid-answer; an agent's step before a long tool call). The page, waiting
    # for the board's next message, must be shown the tokens: once the gap is filled,
    # or at the latest once the time to catch up has passed, not at the next event.
    case = await _unwatched(10)
    board, start, tokens = case.board, case.start, case.tokens
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
    assert case.text == "".join(case.words[:9])


async def test_a_page_that_comes_while_the_last_ones_leaving_is_fitted_catches_up_whole(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A page reloaded: the old one leaves (the board's fit to each run's first token
    # waits at the runtime's checkpoint) and the new one comes meanwhile, finds the
    # fitting under way (it is left to that fit, which then takes every stream event
    # again) and gives the board the live buffers to catch up from. The tokens the
    # tracer gave the run's stream between the two routes must come from the buffer
    # as its client reads them: the page's text whole so far, without a hole.
    case = await _unwatched(12)
    board, start, tokens, routed = case.board, case.start, case.tokens, case.routed
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
    assert case.text == "".join(case.words)


@pytest.mark.postgres
def test_a_version_4_write_under_way_as_a_postgresql_store_is_migrated_is_not_lost(
    postgres_cluster: Cluster,
) -> None:
    # Version 5 gathers version 4's thread messages (a row each) into its own table
    # and drops the old one, in a transaction that holds the store alone against
    # other openings only. A process of version 4 it took for gone (its heartbeat
    # late past the lease) ends a run meanwhile: its messages, committed after the
    # migration read the old table and before the drop, went with the table, though
    # the thread counts them. They must be gathered (or the write refused), not lost.
    # (It holds, passing before this review too: the migration's first statements make
    # the indexes it lacks, and CREATE INDEX IF NOT EXISTS takes a SHARE lock on
    # troupe_threads, which every write of version 4 that adds messages updates.)
    import psycopg

    from runtime._postgres_store import PostgresStore

    url = postgres_cluster.new_database()
    PostgresStore(url).open()
    with psycopg.connect(url, autocommit=True) as pg:  # a store of version 4
        pg.execute("DROP TABLE troupe_message_segments")
        pg.execute(
            "CREATE TABLE troupe_messages (thread_id TEXT NOT NULL, position BIGINT NOT "
            "NULL, run_id TEXT NOT NULL, message TEXT NOT NULL, PRIMARY KEY (thread_id, "
            "position))"
        )
        pg.execute("INSERT INTO troupe_messages VALUES ('t1', 0, 'r1', '\"first\"')")
        pg.execute(
            "INSERT INTO troupe_threads (thread_id, created_at, updated_at, metadata, "
            "messages) VALUES ('t1', 1.0, 1.0, '{}', 1)"
        )
        pg.execute("UPDATE troupe_meta SET value = '4' WHERE key = 'schema_version'")
    migrating = PostgresStore(url)
    failures: list[BaseException] = []

    def migrate() -> None:
        try:
            migrating.open()
        except BaseException as exc:  # reported below
            failures.append(exc)

    with psycopg.connect(url) as v4, psycopg.connect(url, autocommit=True) as watcher:
        # version 4 ends run r2 on thread t1: its transaction under way
        v4.execute("INSERT INTO troupe_messages VALUES ('t1', 1, 'r2', '\"late\"')")
        v4.execute("UPDATE troupe_threads SET messages = 2 WHERE thread_id = 't1'")
        worker = threading.Thread(target=migrate)
        worker.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the migration waits for a lock
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            ).fetchone()
            if row is not None and row[0]:
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the migration waited for no lock")
        v4.commit()
    worker.join(10)
    assert not worker.is_alive() and failures == []
    try:
        assert migrating.get_thread("t1") is not None
        assert migrating.thread_messages("t1", 0) == [("r1", "first"), ("r2", "late")]
    finally:
        migrating.close()


class _Unhashable(type):
    """A metaclass with an ``__eq__`` of its own and so no ``__hash__``: its classes
    cannot be hashed (nor looked up in a set)."""

    def __eq__(cls, other: object) -> bool:
        return cls is other

    __hash__ = None  # type: ignore[assignment]  # (as Python makes it, said outright)


class _Odd(metaclass=_Unhashable):
    """A value whose class cannot be hashed."""


class _Dispatches(Performer[Any, str]):
    """Dispatches a custom event whose payload is ``_Odd``, and says what it was told."""

    name = "dispatches"
    tags = ()
    metadata: dict[str, Any] = {}  # noqa: RUF012  # a performer's shared, read-only metadata

    def coerce_input(self, value: Any) -> Any:
        return value

    async def perform(self, message: Any, run: Run) -> str:
        try:
            await adispatch_custom_event("odd", {"value": [_Odd()]})
        except TypeError as exc:
            return str(exc)
        return "dispatched"


async def test_a_value_whose_class_cannot_be_hashed_is_said_to_have_no_json_form() -> None:
    # unstructure_any asks a set whether the converter writes a value's class (it
    # compared the classes one by one): a class that cannot be hashed raised a bare
    # "unhashable type" TypeError, where a value of no JSON form is a SerializationError
    # naming its class (a custom event's payload is refused with that message).
    for value in (_Odd(), {"k": [_Odd()]}):
        with pytest.raises(SerializationError, match=r"cannot serialize a .*_Odd to JSON"):
            unstructure_any(value)
        with pytest.raises(SerializationError, match=r"cannot serialize a .*_Odd to JSON"):
            to_json(value)
    async with open_runtime() as rt:
        told = await rt.ainvoke(_Dispatches(), "q")
    assert told.startswith("custom event data must be JSON-able: cannot serialize a "), told


class _EmitsOdd(_Dispatches):
    """Streams a chunk whose class cannot be hashed, then returns "ok"."""

    name = "emits_odd"

    async def perform(self, message: Any, run: Run) -> str:
        await run.emit(_Odd())
        return "ok"


class _EndsOdd(_Dispatches):
    """Returns a value whose class cannot be hashed."""

    name = "ends_odd"

    async def perform(self, message: Any, run: Run) -> Any:
        await trio.lowlevel.checkpoint()
        return _Odd()


@pytest.mark.parametrize("performer", [_EmitsOdd(), _EndsOdd()], ids=["chunk", "output"])
async def test_an_event_the_journal_cannot_encode_fails_its_own_run_alone(
    tmp_path: Path, performer: Performer[Any, Any]
) -> None:
    # With a store, each event is encoded for the journal as the tracer delivers it; a
    # payload of no JSON form is journaled as its repr. One whose class cannot be hashed
    # raised TypeError out of the encoder into the tracer: the whole runtime crashed
    # (ActorCrashedError). Now that run's journal fails, as a store's failure fails it,
    # with the cause named; a run beside it and the runtime go on.
    async with open_runtime(store=f"sqlite:///{tmp_path}/runs.db") as rt:
        with pytest.raises(JournalError, match=r"cannot encode on_\w+: TypeError: unhashable"):
            await rt.ainvoke(performer, "q", run_id="odd")
        assert await rt.ainvoke(_EmitsText(), "q", run_id="fine") == "ok"
        async with rt.join("fine") as joined:
            events = [event async for event in joined]
    assert [e.data.chunk for e in events if e.phase == "stream"] == ["text"]
    assert events[-1].status == "ok"


class _EmitsText(_Dispatches):
    """Streams one plain chunk, then returns "ok"."""

    name = "emits_text"

    async def perform(self, message: Any, run: Run) -> str:
        await run.emit("text")
        return "ok"


async def test_pages_that_come_and_go_within_the_time_to_catch_up_leave_no_hole(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A page comes (the board holds a run's tokens after a gap), leaves, and another
    # comes within the time to catch up (reloads; a second tab): while none watched,
    # the board took none of the run's stream events, so its held tokens have a gap
    # between them too. The run's live buffer gives the tokens of both gaps: the
    # page's text must be whole, not missing the second gap until the run's end.
    case = await _unwatched(10)
    board, tokens = case.board, case.tokens
    buffer = deque([case.start, tokens[0]])  # what the run's client has read
    for token in (tokens[3], tokens[7]):
        board.watchers += 1  # a page comes
        await board.fit()
        board.catch_up(buffer)
        assert board.apply(token) is None  # held, after a gap
        board.watchers -= 1  # and leaves
        await board.fit()
    board.watchers += 1
    await board.fit()
    buffer.extend(tokens[1:8])  # the client reads on
    await trio.sleep(board.wake_interval)
    board.apply(tokens[8])
    assert case.text == "".join(case.words[:9])
