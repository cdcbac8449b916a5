"""What the run journal costs, as a user sees it: N cat agent runs at once (K answer
tokens, a model that makes a new chunk per token and yields as a network stream does,
each run's events read as the seed's loop reads them), in a runtime without a store and
in one journaling to SQLite; rounds alternate, each in a fresh runtime and a fresh
store file. The figure is the median ratio of round times (targets: at most 1.15 at
100 runs, 1.3 at 1,000). Beside it, the floor: the same journal's writes alone (the
store's ``write`` of the same records, batched as the journal batches them), to say how
much of the cost is SQLite's and how much the journal's encoding.

Beside them, the journal's own work for one run alone (:func:`feed_cost`: its events
fed, their JSON made, nothing written). Also: loading a thread of 1,000 messages
(target: at most 5 ms) and reading a finished run of 10,000 events back (target: at
least 100,000 events/s), on SQLite and, where a throwaway PostgreSQL cluster can be
started (see ``benchmarks/_stores.py``), on it.

``python -m benchmarks._journal`` prints one JSON object (``--quick``: small sizes;
``--callgrind-replay STEPS ROUNDS [WORDS]``: the replay row alone, in instructions, see
:func:`replay_instructions`; ``--callgrind-ratio RUNS PAIRS [SCALE]``: the SQLite ratio
in instructions, see :func:`ratio_instructions`).
"""

from __future__ import annotations

import functools
import gc
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, Final

import trio
from attrs import frozen

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from protocol import AssistantMessage, StreamEvent, UserMessage, unstructure_any
from runtime import Performer, Run, RunPaused, RunRecord, Store, open_runtime, open_store
from runtime import _journal as journal_module
from runtime._journal import JOURNAL_CAPACITY, Journal, _Batch
from runtime._replay import read_journal
from runtime._store import Segment, WriteBatch, records_json

from ._stores import on_postgres
from ._timing import GCTime, callgrind_sections, median_interval, under_callgrind
from ._workload import QUESTION, cat_agent, read_events


@frozen
class _Times:
    """A round's times: wall clock, and CPU (of the process: trio's thread and the
    store's worker threads; and of trio's thread alone), steadier than the wall clock
    on a machine whose cores other processes share."""

    wall: float
    cpu: float
    trio_cpu: float
    end_wait: float = 0.0
    """The median run's wait, at its end, for its terminal event to be durable (the
    journal's :meth:`~runtime._journal.Journal.durable`; 0 without a store)."""
    collecting: float = 0.0
    """Of the wall time, the garbage collector's (every thread's collections)."""


async def _round(
    n: int,
    k: int,
    store: Store | None,
    watched: bool = False,
    started: Callable[[], None] | None = None,
    marked: bool = False,
) -> _Times:
    """``n`` cat agent runs at once (after one alone, the warm-up), timed; ``marked``:
    between callgrind's marks (``os.getppid`` before, ``os.getpgrp`` after: see
    :func:`ratio_instructions`)."""
    agent = cat_agent(k, network_like=True)

    async def one() -> None:
        async with agent.astream_events(QUESTION) as events:
            async for event in events:
                read_events(event)

    async def watch(runtime: Any, task_status: Any) -> None:
        async with runtime.watch() as events:
            task_status.started()
            async for _ in events:
                pass

    async with open_runtime(store=store) as runtime, trio.open_nursery() as outer:
        if watched:
            await outer.start(watch, runtime)
        waits = _time_waits(runtime.journal)
        await one()  # warm-up
        if started is not None:
            started()
        waits.clear()
        collecting = GCTime()
        gc.callbacks.append(collecting)
        if marked:
            os.getppid()  # callgrind: zero the counts
        start, cpu, trio_cpu = time.perf_counter(), time.process_time(), time.thread_time()
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(n):
                    nursery.start_soon(one)
        finally:
            gc.callbacks.remove(collecting)
        if marked:
            os.getpgrp()  # callgrind: dump them
        times = _Times(
            time.perf_counter() - start,
            time.process_time() - cpu,
            time.thread_time() - trio_cpu,
            statistics.median(waits) if waits else 0.0,
            collecting.seconds,
        )
        outer.cancel_scope.cancel()
    return times


def _time_waits(journal: Any) -> list[float]:
    """The seconds each run's caller waits for its end to be durable, from now on (the
    journal's ``durable`` wrapped; none without a journal)."""
    waits: list[float] = []
    if not isinstance(journal, Journal):
        return waits
    durable = journal.durable

    async def timed(run_id: str) -> None:
        start = time.perf_counter()
        try:
            await durable(run_id)
        finally:
            waits.append(time.perf_counter() - start)

    journal.durable = timed  # type: ignore[method-assign]  # a benchmark's wrapper
    return waits


class _Recorded:
    """The writes a store was given (wrapping its ``write``), from the round's start."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.warm_up: list[WriteBatch] = []
        self.batches: list[WriteBatch] = []
        write = store.write

        def recording(batch: WriteBatch) -> None:
            write(batch)
            self.batches.append(batch)

        store.write = recording  # type: ignore[method-assign]  # a benchmark's wrapper

    def start(self) -> None:
        self.warm_up, self.batches = self.batches, []


def _alone(recorded: _Recorded, store: Store) -> float:
    """The floor of a journaled round: ``store`` (fresh, of the same kind) writing the
    batches the journal wrote in it, the same records in the same number of writes,
    each synced as the journal asked, back to back from one thread, without a runtime;
    seconds (the warm-up run's writes before, untimed)."""
    store.open()
    try:
        store.telling = recorded.store.telling  # NOTIFY as the journal's store did
        for batch in recorded.warm_up:
            store.write(batch)
        start = time.perf_counter()
        for batch in recorded.batches:
            store.write(batch)
        return time.perf_counter() - start
    finally:
        store.close()


@frozen
class Variant:
    """A journaled variant of a ratio's rounds: ``make(tag)`` gives a fresh store (not
    yet opened) for each round and each floor."""

    label: str
    make: Callable[[str], Store]


def _ratio(n: int, k: int, rounds: int, variants: dict[str, Variant]) -> dict[str, dict[str, Any]]:
    """Rounds alternate: no store, a lossless runtime-wide watcher reading every event
    (for reference: the journal takes every event too, though without a channel or a
    reader's task), then each journaled variant (their order turned every other round),
    each followed by its floor: a fresh store writing the same batches alone
    (:func:`_alone`). A row per variant: its ratios to the rounds without a store (of
    wall time; ``cpu_ratio``, ``trio_cpu_ratio``: of CPU time, see :class:`_Times`;
    ``ratio_of_totals``, ``cpu_ratio_of_totals``: all its rounds' time over all the
    rounds' without a store, the throughput a server that runs on sees, which a full
    collection of the collector's, about a fifth of a 100-run round, falling in one
    round or another moves less than it moves the rounds' median);
    ``ratio_interval``, ``cpu_ratio_interval``: where the median ratio lies, about 95 %
    sure (:func:`_interval`: a round's ratio moves by a fifth or more with the machine's
    other work and the collector's passes, so the median of 5 to 9 rounds moves by a
    tenth from one process to the next; docs/journal.md, "Why one process differs from
    the next"); ``end_wait_ms``: how long the median run's caller waits, at its end, for its
    terminal event to be durable; ``gc_ms``, ``plain_gc_ms``: the garbage collector's
    time in a round with the store and without (medians of rounds)."""
    plain: list[_Times] = []
    watched: list[_Times] = []
    journaled: dict[str, list[_Times]] = {name: [] for name in variants}
    alone: dict[str, list[float]] = {name: [] for name in variants}
    written: dict[str, list[WriteBatch]] = {}
    for i in range(rounds):
        plain.append(trio.run(_round, n, k, None))
        watched.append(trio.run(_round, n, k, None, True))
        order = list(variants.items())
        for name, variant in order if i % 2 == 0 else order[::-1]:
            recorded = _Recorded(variant.make(f"{name}{i}"))
            journaled[name].append(trio.run(_round, n, k, recorded.store, False, recorded.start))
            alone[name].append(_alone(recorded, variant.make(f"{name}{i}-alone")))
            written[name] = recorded.batches
    rows = {}
    walls = [t.wall for t in plain]
    for name, variant in variants.items():
        times = journaled[name]
        batches = written[name]
        segments = [segment for batch in batches for segment in batch.segments]
        postgres = variant.label.startswith("PostgreSQL")
        rows[name] = {
            "runs": n,
            "tokens": k,
            "store": "postgresql" if postgres else "sqlite",
            "sqlite": None if postgres else variant.label.removeprefix("SQLite, "),
            "sync": variant.label,
            "plain_seconds": statistics.median(walls),
            "journaled_seconds": statistics.median(t.wall for t in times),
            "ratio": statistics.median(_over([t.wall for t in times], walls)),
            "ratios": _over([t.wall for t in times], walls),
            "ratio_interval": _interval(_over([t.wall for t in times], walls)),
            "ratio_of_totals": sum(t.wall for t in times) / sum(walls),
            "cpu_ratio_of_totals": sum(t.cpu for t in times) / sum(t.cpu for t in plain),
            "cpu_ratio": statistics.median(_over([t.cpu for t in times], [t.cpu for t in plain])),
            "cpu_ratio_interval": _interval(_over([t.cpu for t in times], [t.cpu for t in plain])),
            "trio_cpu_ratio": statistics.median(
                _over([t.trio_cpu for t in times], [t.trio_cpu for t in plain])
            ),
            "end_wait_ms": statistics.median(t.end_wait for t in times) * 1e3,
            "gc_ms": statistics.median(t.collecting for t in times) * 1e3,
            "plain_gc_ms": statistics.median(t.collecting for t in plain) * 1e3,
            "watcher_ratio": statistics.median(_over([t.wall for t in watched], walls)),
            "store_alone_ratio": statistics.median(_over(alone[name], walls)),
            "store_alone_ratios": _over(alone[name], walls),
            "writes": len(batches),
            "writes_asking_sync": sum(batch.sync for batch in batches),
            "records": sum(len(s.records) for s in segments),
            "bytes": sum(len(records_json(s.records).encode()) for s in segments),
        }
    return rows


def _interval(ratios: Sequence[float]) -> list[float]:
    """Where the median ratio lies (about 95 % sure, see
    :func:`~benchmarks._timing.median_interval`): ``[low, high, coverage]``."""
    interval = median_interval(ratios)
    return [interval["low"], interval["high"], interval["coverage"]]


def _over(times: Sequence[float], plain: Sequence[float]) -> list[float]:
    return [t / p for t, p in zip(times, plain, strict=True)]


def _sqlite(folder: str, sync: str) -> Callable[[str], Store]:
    return lambda tag: open_store(f"sqlite:///{folder}/{tag}.db?synchronous={sync}")


def _sqlite_ratios(
    n: int, k: int, rounds: int, variants: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """:func:`_ratio` on SQLite, a variant per ``synchronous`` URL option."""
    with tempfile.TemporaryDirectory() as folder:
        return _ratio(
            n,
            k,
            rounds,
            {
                name: Variant(f"SQLite, synchronous={sync}", _sqlite(folder, sync))
                for name, sync in variants.items()
            },
        )


class _Long(Performer[int, int]):
    """A run of ``n`` stream events (for reading back)."""

    name = "long"
    tags = ()
    metadata: dict[str, Any] = {}  # noqa: RUF012  # a performer's shared, read-only metadata

    def coerce_input(self, value: Any) -> int:
        return int(value)

    async def perform(self, message: int, run: Run) -> int:
        for i in range(message):
            await run.emit(f"chunk {i}")
        return message


async def _read_back(events: int, url: str | None = None) -> dict[str, Any]:
    """A finished run of ``events`` events joined (read back from the store and decoded)
    in a runtime on the store at ``url`` (default: SQLite on a temporary file)."""
    with tempfile.TemporaryDirectory() as folder:
        url = url or f"sqlite:///{folder}/read.db"
        async with open_runtime(store=url) as rt:
            await rt.ainvoke(_Long(), events - 2, run_id="long")
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                count = 0
                async with rt.join("long") as joined:
                    async for _ in joined:
                        count += 1
                best = min(best, time.perf_counter() - start)
    return {"events": count, "seconds": best, "events_per_second": count / best}


async def _thread_load(messages: int, *, runs: int = 1, rounds: int = 9) -> dict[str, Any]:
    """A thread of ``messages`` messages loaded: cold (the first load of a runtime: a
    fresh connection, nothing kept) and warm (the load before each later run of the
    thread in the same process, which reads only the messages added since). The thread
    is made by ``runs`` runs, each adding its question and answer (the first also a
    history bringing the rest): one run of a long history, or a conversation of
    ``messages // 2`` turns, as a chat grows. Cold loads are timed by the wall clock
    and by the process's CPU time (both threads: trio's and the store's worker's),
    steadier on a machine whose cores other processes share. Beside them, the floor,
    alternating with the cold loads: the thread's rows read on a fresh ``sqlite3``
    connection and their JSON parsed in one ``json.loads``, nothing structured."""
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/thread.db"
        url = f"sqlite:///{path}"
        turns = [ScriptedTurn("fine") for _ in range(messages // 2 + runs)]
        agent = Agent(model=ScriptedChatModel(turns), name="chat")
        history = [
            UserMessage(f"question {i}") if i % 2 == 0 else AssistantMessage(f"answer {i}")
            for i in range(messages - 2 * runs)
        ]
        async with open_runtime(store=url) as rt:
            await rt.ainvoke(agent, {"input": "hi", "chat_history": history}, thread_id="t")
            for turn in range(runs - 1):
                await rt.ainvoke(agent, f"question {turn}", thread_id="t")
        cold: list[float] = []
        cold_cpu: list[float] = []
        floor: list[float] = []
        warm: list[float] = []
        for _ in range(rounds):
            floor.append(_thread_rows_parsed(path))
            async with open_runtime(store=url) as rt:
                journal = rt.journal
                assert isinstance(journal, Journal)
                start, cpu = time.perf_counter(), time.process_time()
                loaded = await journal.thread_history("t")
                cold.append(time.perf_counter() - start)
                cold_cpu.append(time.process_time() - cpu)
                for _ in range(10):
                    start = time.perf_counter()
                    await journal.thread_history("t")
                    warm.append(time.perf_counter() - start)
    return {
        "messages": len(loaded),
        "cold_ms": statistics.median(cold) * 1e3,
        "cold_cpu_ms": statistics.median(cold_cpu) * 1e3,
        "floor_ms": statistics.median(floor) * 1e3,
        "median_ms": statistics.median(warm) * 1e3,
    }


def _thread_rows_parsed(path: str) -> float:
    """Seconds to read thread ``t``'s rows on a fresh ``sqlite3`` connection and parse
    their JSON in one ``json.loads`` (the floor of a cold load: no runtime, no hop to a
    worker thread, nothing structured)."""
    connection = sqlite3.connect(path)
    try:
        start = time.perf_counter()
        texts = connection.execute(
            "SELECT messages FROM troupe_message_segments WHERE thread_id = 't' ORDER BY first"
        ).fetchall()
        json.loads(f"[{','.join([text for (text,) in texts])}]")
        return time.perf_counter() - start
    finally:
        connection.close()


_NO_SYNC = "-c%20synchronous_commit%3Doff"
"""libpq's ``options`` for a session whose every commit is asynchronous (the server's
``synchronous_commit`` off: what no syncing at all would cost, the floor of any way to
sync fewer commits)."""


def _on_postgres(n: int, k: int, rounds: int, quick: bool, argv: Sequence[str]) -> dict[str, Any]:
    """:func:`_ratio` on PostgreSQL 15 (``ratio``: only what must survive a power cut
    synced; ``full``: each journal write synced, ``?synchronous=full``; ``none``: no
    commit synced, the floor of any syncing), and a finished run read back
    (``read_back``, full runs only), on one throwaway cluster on this machine
    (``tests/postgres.py``, ``fsync`` on), a fresh database each round and each floor;
    skipped, saying why, where the ``postgres`` extra or PostgreSQL's programs are
    missing."""

    def measure(new_database: Callable[[], str]) -> dict[str, Any]:
        rows = _ratio(
            n,
            k,
            rounds,
            {
                "selective": Variant(
                    "PostgreSQL, what must survive synced",
                    lambda _: open_store(new_database()),
                ),
                "full": Variant(
                    "PostgreSQL, every commit synced",
                    lambda _: open_store(f"{new_database()}?synchronous=full"),
                ),
                "none": Variant(
                    "PostgreSQL, no commit synced",
                    lambda _: open_store(f"{new_database()}?options={_NO_SYNC}"),
                ),
            },
        )
        read_back = {"skipped": "quick"} if quick else trio.run(_read_back, 10_000, new_database())
        return {
            "ratio": rows["selective"],
            "full": rows["full"],
            "none": rows["none"],
            "read_back": read_back,
        }

    return on_postgres(measure, argv)


def _store_alone(n: int, k: int) -> dict[str, Any]:
    """The floor: the store's writes of a journal's records alone (records shaped as a
    cat agent's, batched 8192 at a time), per token."""
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(f"sqlite:///{folder}/alone.db")
        store.open()
        records: list[Any] = [[3, i, f" tok{i}"] for i in range(k)]
        start = time.perf_counter()
        batch: list[Segment] = []
        question = unstructure_any({"input": QUESTION})
        runs = [RunRecord(f"r{i}", "Agent", "chain", question) for i in range(n)]
        store.write(WriteBatch(runs=runs))
        for i in range(n):
            batch.append(Segment(f"r{i}", 0, records))
            if len(batch) * k >= 8192:
                store.write(WriteBatch(segments=batch))
                batch = []
        if batch:
            store.write(WriteBatch(segments=batch))
        elapsed = time.perf_counter() - start
        store.close()
    return {"runs": n, "tokens": k, "seconds": elapsed, "us_per_token": elapsed / (n * k) * 1e6}


async def _one_run_events(k: int) -> list[StreamEvent]:
    """Every event of one cat agent run (``k`` answer tokens), as a watcher saw them."""
    events: list[StreamEvent] = []
    async with open_runtime() as runtime, trio.open_nursery() as nursery:

        async def watch(task_status: Any) -> None:
            async with runtime.watch() as watched:
                task_status.started()
                # (each kept as it comes: the watch is cancelled, never ends)
                async for event in watched:
                    events.append(event)  # noqa: PERF401

        await nursery.start(watch)
        await cat_agent(k, network_like=True).ainvoke(QUESTION)
        await trio.sleep(0.05)  # (the watcher's last events)
        nursery.cancel_scope.cancel()
    return events


def _feed(journal: Journal, events: Sequence[StreamEvent]) -> int:
    """``events`` handed to ``journal``'s feed as the tracer hands them, then the batch's
    records made JSON as its writer makes them (nothing written); the bytes."""
    journal._trees.clear()  # (a fresh batch, the same run ids again)
    journal._texting.clear()
    journal._pending = _Batch()
    journal._feed.room = JOURNAL_CAPACITY
    recorder = journal.recorder
    for event in events:
        if event.status is None and event.event.endswith("_stream"):
            recorder.take_chunk(event.event, event.run, event.seq, event.chunk)
        else:
            recorder.take(event)
    for tree in journal._trees.values():  # (as the writer takes the batch)
        if tree.texts is not None:
            journal._close_texts(tree)
    batch = journal._pending.write_batch(journal.owner.owner_id)
    return sum(len(records_json(segment.records)) for segment in batch.segments)


def feed_cost(k: int, runs: int) -> dict[str, Any]:
    """The journal's own work for one cat agent run, alone: its events fed and their
    JSON made ``runs`` times over (CPU per run; run it under ``valgrind --tool=callgrind``
    with ``--feed N`` and ``--feed 0`` and take the difference for instructions per
    run, which the machine's load does not move)."""
    events = trio.run(_one_run_events, k)
    with tempfile.TemporaryDirectory() as folder:
        journal = Journal(open_store(f"sqlite:///{folder}/never-opened.db"))
        size = _feed(journal, events)
        start = time.process_time()
        for _ in range(runs):
            _feed(journal, events)
        cpu = time.process_time() - start
    return {
        "events": len(events),
        "bytes": size,
        "runs": runs,
        "cpu_us_per_run": cpu / max(runs, 1) * 1e6,
    }


def _approval_agent(
    steps: int, words: int = 0, at_pause_point: Callable[[], None] | None = None
) -> Agent:
    """``steps`` model turns with a tool call each (``words`` tokens of text streamed
    before it), then one that needs approval; ``at_pause_point`` is called as the
    approved call begins (a resume's replay has then reached the pause point: every
    request before it was answered from the journal)."""

    @tool
    async def look(n: int) -> str:
        """Look."""
        return f"looked {n}"

    @tool(needs_approval=True)
    async def pay(amount: int) -> str:
        """Pay."""
        if at_pause_point is not None:
            at_pause_point()
        return f"paid {amount}"

    turns = [
        ScriptedTurn("word " * words, tool_calls=[ScriptedCall("look", {"n": i}, id=f"l{i}")])
        for i in range(steps)
    ]
    turns.append(ScriptedTurn(tool_calls=[ScriptedCall("pay", {"amount": 5}, id="pay")]))
    turns.append(ScriptedTurn("paid"))
    model = ScriptedChatModel(turns)
    return Agent(model=model, tools=[look, pay], name="payer", max_iterations=steps + 3)


async def _replay_cost(steps: int, rounds: int) -> dict[str, Any]:
    """Running ``steps`` steps live to a pause, against resuming it: CPU time of the
    process (``time.process_time``: the store's worker threads count, other processes
    on the machine do not), rounds alternating in one runtime. Issue 31's figure is the
    replay to the pause point (``replay_to_pause_ratio``): from the resume's call until
    the approved call begins (the paused run claimed and read, its 200 steps and the
    turn that asked for the approval answered from the journal); ``resume_ratio`` is
    the whole resume (then the approved call, the model's next turn, which journals
    the conversation whole, and the run's end made durable). The floor beside it:
    reading the paused run's journal back alone (``read_records``: its rows and their
    ``json.loads``), which every resume pays before it matches anything; and, after it,
    making its replay of those records (``read_journal``)."""
    live: list[float] = []
    replayed: list[float] = []
    to_pause: list[float] = []
    floors: list[float] = []
    parses: list[float] = []
    paused_at: list[float] = []
    size = 0
    with tempfile.TemporaryDirectory() as folder:
        async with open_runtime(store=f"sqlite:///{folder}/replay.db") as rt:
            journal = rt.journal
            assert isinstance(journal, Journal)
            for i in range(rounds):
                agent = _approval_agent(steps, 0, lambda: paused_at.append(time.process_time()))
                start = time.process_time()
                with suppress(RunPaused):
                    await rt.ainvoke(agent, "go", run_id=f"live{i}")
                live.append(time.process_time() - start)
                start = time.process_time()
                records = journal.store.read_records(f"live{i}")
                floors.append(time.process_time() - start)
                size = len(json.dumps(records))
                start = time.process_time()
                read_journal(f"live{i}", records)
                parses.append(time.process_time() - start)
                paused_at.clear()
                start = time.process_time()
                await rt.resume(agent, f"live{i}", {"pay": True})
                replayed.append(time.process_time() - start)
                (reached,) = paused_at
                to_pause.append(reached - start)
    return {
        "steps": steps,
        "journal_bytes": size,
        "live_cpu_seconds": statistics.median(live),
        "replay_to_pause_cpu_seconds": statistics.median(to_pause),
        "resume_cpu_seconds": statistics.median(replayed),
        "replay_to_pause_ratio": statistics.median(_over(to_pause, live)),
        "replay_to_pause_ratios": _over(to_pause, live),
        "resume_ratio": statistics.median(_over(replayed, live)),
        "read_back_ratio": statistics.median(_over(floors, live)),
        "read_journal_ratio": statistics.median(_over(parses, live)),
    }


REPLAY_SECTIONS = ("live", "read", "to_pause", "after_pause")
"""The replay row's sections under callgrind, in turn every round (see
:func:`replay_instructions`): the resume is cut in two where the approved call begins."""


async def _replay_sections(steps: int, rounds: int, words: int = 0) -> None:
    """The legs of :func:`_replay_cost` as :func:`replay_instructions` counts them,
    each a section of its own, in one runtime (a round first, uncounted, as a warm-up):
    running ``steps`` steps live to the pause; reading the paused run back as a resume
    does (``Journal.read_run_now``: its journal, read and made a replay); resuming it,
    counted to the pause point (the approved call begins: callgrind's counts dumped and
    zeroed there) and after it."""
    counting = False

    def at_pause_point() -> None:
        if counting:
            os.getpgrp()  # callgrind: dump the replay to the pause point
            os.getppid()  # and count what follows it afresh

    with tempfile.TemporaryDirectory() as folder:
        async with open_runtime(store=f"sqlite:///{folder}/replay.db") as rt:
            journal = rt.journal
            assert isinstance(journal, Journal)
            for i in range(rounds + 1):
                agent = _approval_agent(steps, words, at_pause_point)
                counting = bool(i)
                for section in ("live", "read", "resume"):
                    gc.collect()
                    if i:
                        os.getppid()  # callgrind: zero the counts
                    if section == "live":
                        with suppress(RunPaused):
                            await rt.ainvoke(agent, "go", run_id=f"live{i}")
                    elif section == "read":
                        journal.read_run_now(f"live{i}")
                    else:
                        await rt.resume(agent, f"live{i}", {"pay": True})
                    if i:
                        os.getpgrp()  # callgrind: dump them


CALLGRIND_SLOWDOWN: Final = 50
"""About how many times slower a run goes under callgrind: the journal's clocks are
scaled by it there, so that its writes gather as many records as they do live."""


def _scale_journal_clocks(scale: int) -> None:
    """Make the journal's clocks (its gathering, its cancel poll) ``scale`` times longer,
    in this process: under callgrind, a write that gathers for the live 50 ms would
    gather a fiftieth of the records, and count that many more writes."""
    clocks = vars(journal_module)
    for name in ("GATHER_SECONDS", "CANCEL_POLL_SECONDS"):
        clocks[name] *= scale


def replay_instructions(
    steps: int, rounds: int, words: int = 0, scale: int = CALLGRIND_SLOWDOWN
) -> dict[str, Any]:
    """The replay row counted in instructions (``valgrind --tool=callgrind``, which the
    machine's load does not move; the store's threads count; the journal's clocks
    ``scale`` times longer, see :func:`_scale_journal_clocks`): each section of
    :func:`_replay_sections` alone, every round; issue 31's ratio, the replay to the
    pause point over running live to the pause, in the same round
    (``replay_to_pause_ratio``), the whole resume's (``resume_ratio``), and the medians."""
    with tempfile.TemporaryDirectory() as folder:
        prefix = f"{folder}/cg"
        under_callgrind(
            prefix,
            [
                "-m",
                "benchmarks._journal",
                "--replay-sections",
                *(str(a) for a in (steps, rounds, words, scale)),
            ],
        )
        counted = callgrind_sections(prefix)
    assert len(counted) == rounds * len(REPLAY_SECTIONS), counted
    by = {
        section: counted[index :: len(REPLAY_SECTIONS)]
        for index, section in enumerate(REPLAY_SECTIONS)
    }
    by["resume"] = [a + b for a, b in zip(by["to_pause"], by["after_pause"], strict=True)]
    return {
        "steps": steps,
        "words": words,
        "clock_scale": scale,
        **{f"{section}_instructions": counts for section, counts in by.items()},
        **{f"{section}_median": statistics.median(counts) for section, counts in by.items()},
        "replay_to_pause_ratios": _over(by["to_pause"], by["live"]),
        "replay_to_pause_ratio": statistics.median(_over(by["to_pause"], by["live"])),
        "resume_ratios": _over(by["resume"], by["live"]),
        "resume_ratio": statistics.median(_over(by["resume"], by["live"])),
        "read_ratio": statistics.median(_over(by["read"], by["live"])),
    }


def _ratio_sections(n: int, pairs: int, scale: int) -> None:
    """:func:`_ratio`'s rounds as :func:`ratio_instructions` counts them: ``pairs``
    times a round without a store then one journaling to SQLite (a fresh file), each
    round's ``n`` runs a section; the journal's clocks ``scale`` times longer."""
    _scale_journal_clocks(scale)
    with tempfile.TemporaryDirectory() as folder:
        for i in range(pairs):
            trio.run(_round, n, 200, None, False, None, True)
            store = open_store(f"sqlite:///{folder}/r{i}.db")
            trio.run(_round, n, 200, store, False, None, True)


def ratio_instructions(n: int, pairs: int, scale: int = CALLGRIND_SLOWDOWN) -> dict[str, Any]:
    """The SQLite ratio at ``n`` runs (K=200) in instructions (``valgrind
    --tool=callgrind``, both threads; the journal's clocks ``scale`` times longer, see
    :func:`_scale_journal_clocks`), ``pairs`` rounds of each kind alternating in one
    process: the work a store adds, which the collector's memory walks (a full
    collection is under 1.3 % of a round's instructions and a sixth of its time) and
    the machine's other work move little. Its rounds move by about 2 % between
    processes and hash seeds (most of it with the number of writes, which the gathering
    clock still makes depend on how fast the round goes: about 10.9 M instructions a
    write of 100 runs, and under callgrind on a loaded machine a round makes 19 to 24
    writes where a quiet live one makes 4 to 12), where the timed ratio's
    median of 5 to 9 rounds moves by 10 % (docs/journal.md, "Why one process differs
    from the next")."""
    with tempfile.TemporaryDirectory() as folder:
        prefix = f"{folder}/cg"
        under_callgrind(
            prefix,
            ["-m", "benchmarks._journal", "--ratio-sections", str(n), str(pairs), str(scale)],
        )
        counted = callgrind_sections(prefix)
    plain, journaled = counted[0::2], counted[1::2]
    ratios = _over(journaled, plain)
    added = [j - p for j, p in zip(journaled, plain, strict=True)]
    return {
        "runs": n,
        "tokens": 200,
        "clock_scale": scale,
        "plain": plain,
        "journaled": journaled,
        "ratios": ratios,
        "ratio": statistics.median(ratios),
        "journal_per_run": statistics.median(added) / n,
    }


async def _resume_many(n: int) -> dict[str, Any]:
    """``n`` paused runs resumed at once."""
    agent = _approval_agent(1)
    with tempfile.TemporaryDirectory() as folder:
        async with open_runtime(store=f"sqlite:///{folder}/many.db") as rt:

            async def pause(i: int) -> None:
                with suppress(RunPaused):
                    await rt.ainvoke(agent, "go", run_id=f"p{i}")

            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(pause, i)

            async def resume(i: int) -> None:
                await rt.resume(agent, f"p{i}", {"pay": True})

            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(resume, i)
            elapsed = time.perf_counter() - start
    return {"runs": n, "seconds": elapsed, "runs_per_second": n / elapsed}


def main(argv: Sequence[str]) -> dict[str, Any]:
    if "--feed" in argv:  # the journal's own work alone (see feed_cost)
        return feed_cost(200, int(argv[list(argv).index("--feed") + 1]))
    if "--replay-sections" in argv:  # (under callgrind: see replay_instructions)
        at = list(argv).index("--replay-sections")
        steps, rounds, *rest = (int(a) for a in argv[at + 1 : at + 5])
        if len(rest) > 1:
            _scale_journal_clocks(rest[1])
        trio.run(_replay_sections, steps, rounds, rest[0] if rest else 0)
        return {}
    if "--ratio-sections" in argv:  # (under callgrind: see ratio_instructions)
        at = list(argv).index("--ratio-sections")
        _ratio_sections(*(int(a) for a in argv[at + 1 : at + 4]))
        return {}
    if "--callgrind-ratio" in argv:  # the 100-run SQLite ratio in instructions
        at = list(argv).index("--callgrind-ratio")
        return ratio_instructions(*(int(a) for a in argv[at + 1 : at + 4]))
    if "--callgrind-replay" in argv:  # the replay row in instructions
        at = list(argv).index("--callgrind-replay")
        return replay_instructions(*(int(a) for a in argv[at + 1 : at + 5]))
    quick = "--quick" in argv
    rounds = 1 if quick else 5
    k = 20 if quick else 200
    postgres = _on_postgres(10 if quick else 100, k, rounds, quick, argv)
    at_100 = _sqlite_ratios(
        10 if quick else 100,
        k,
        rounds,
        {"selective": "selective", "full": "full", "normal": "normal"},
    )
    at_1000 = _sqlite_ratios(
        20 if quick else 1000, k, 1 if quick else 3, {"selective": "selective", "full": "full"}
    )
    return {
        "ratio_at_100": at_100["selective"],
        "ratio_at_100_full_sync": at_100["full"],
        "ratio_at_100_normal_sync": at_100["normal"],
        "ratio_at_1000": at_1000["selective"],
        "ratio_at_1000_full_sync": at_1000["full"],
        "ratio_at_100_postgres": postgres.get("ratio", postgres),
        "ratio_at_100_postgres_full_sync": postgres.get("full", postgres),
        "ratio_at_100_postgres_no_sync": postgres.get("none", postgres),
        "store_alone_at_100": _store_alone(10 if quick else 100, k),
        "feed_alone": feed_cost(k, 20 if quick else 200),
        "thread_load": trio.run(_thread_load, 100 if quick else 1000),
        "thread_load_turns": trio.run(
            functools.partial(_thread_load, runs=50 if quick else 500), 100 if quick else 1000
        ),
        "read_back": trio.run(_read_back, 1000 if quick else 10_000),
        "read_back_postgres": postgres.get("read_back", postgres),
        "replay": trio.run(_replay_cost, 20 if quick else 200, 1 if quick else 5),
        "resume_many": trio.run(_resume_many, 20 if quick else 1000),
        "pid": os.getpid(),
    }


if __name__ == "__main__":
    json.dump(main(sys.argv[1:]), sys.stdout, indent=2)
    print()
