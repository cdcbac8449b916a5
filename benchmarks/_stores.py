"""The journal's stores alone (no runtime): how fast each writes and reads back.

- **write**: ``runs`` trees journaled at once, as the journal batches them: each write
  holds a segment of ``SEGMENT`` compact-like records of every open tree (their runs'
  records in the first write, their ends, with two thread messages each, in the last),
  one write at a time from one thread; records/s and the median write's milliseconds;
- **small writes**: one tree's segment of 10 records per write, as a journal writes when
  few runs stream slowly: writes/s, each a committed transaction, synced (a run's end)
  and not (its tokens: ``WriteBatch.sync`` false);
- **read**: a finished tree of 10,000 records (segments of ``SEGMENT``) read back whole by
  ``read_records``, as a replay reads it; records/s (median of repeats);
- **retention of a resume chain**: ``CHAIN`` paused runs each resumed by the next, the
  last still running, beside as many ended runs: one ``delete_ended_before`` (which
  keeps the whole chain, followed link by link, and deletes the others); seconds.

SQLite on a file of a temporary directory, with its defaults (WAL,
``synchronous=selective``: a commit synced when its batch asks). PostgreSQL 15 on a
throwaway cluster on this machine (``tests/postgres.py``, with ``fsync`` on, so that a
synced commit is as durable as SQLite's),
over TCP on 127.0.0.1; measured where the ``postgres`` extra and PostgreSQL's programs are
installed, else reported as skipped.

``python -m benchmarks._stores`` prints one JSON object (``--quick``: small sizes).
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from runtime._open_store import open_store
from runtime._store import RunEnd, RunRecord, Segment, Store, WriteBatch

SEGMENT: Final = 200
"""Records per segment (per tree per write)."""
READ_RECORDS: Final = 10_000
CHAIN: Final = 1_000
"""Links of the resume chain retention follows (see the module's docstring)."""


def compact_records(first: int, n: int) -> list[Any]:
    """Records shaped as ``protocol.CompactEncoder`` writes a chat model's stream: a run's
    identity now and then, then ``[run number, seq, token text]``."""
    out: list[Any] = []
    for position in range(first, first + n):
        if position % 100 == 0:
            out.append([-1, {"run_id": f"run-{position}", "name": "cat", "kind": "chat_model"}])
        else:
            out.append([position % 7, position, f" token{position % 50}"])
    return out


def _batch(roots: Sequence[str], s: int, segments: int, stamp: float) -> WriteBatch:
    """The ``s``-th write of ``roots``: their runs first, their ends (each adding two
    messages to its thread) last."""
    first = s * SEGMENT
    return WriteBatch(
        runs=[
            RunRecord(r, "cat", "chain", {"messages": ["hi"]}, thread_id=f"t-{r}", created_at=stamp)
            for r in roots
        ]
        if s == 0
        else (),
        segments=[Segment(r, first, compact_records(first, SEGMENT)) for r in roots],
        ends=[RunEnd(r, "ok", stamp + 1, None, f"t-{r}", ("hi", "answer")) for r in roots]
        if s == segments - 1
        else (),
    )


def _write(store: Store, runs: int, segments: int) -> dict[str, Any]:
    """``runs`` trees of ``segments`` segments each, a write per round of segments."""
    stamp = time.time()
    roots = [f"w{stamp}-{i}" for i in range(runs)]
    batches = [_batch(roots, s, segments, stamp) for s in range(segments)]
    times = []
    start = time.perf_counter()
    for batch in batches:
        began = time.perf_counter()
        store.write(batch)
        times.append(time.perf_counter() - began)
    elapsed = time.perf_counter() - start
    return {
        "records_per_second": runs * segments * SEGMENT / elapsed,
        "write_ms_median": statistics.median(times) * 1000,
        "writes": len(batches),
    }


def _small_writes(store: Store, writes: int) -> dict[str, Any]:
    """Writes of 10 records each, synced (as a run's end, a tool's result) and not (as
    a run's tokens: ``WriteBatch.sync`` false), alternating in rounds of 10."""
    root = f"small-{time.time()}"
    store.write(WriteBatch(runs=[RunRecord(root, "cat", "chain", created_at=time.time())]))
    spent = {True: 0.0, False: 0.0}
    for w in range(writes):
        sync = (w // 10) % 2 == 0
        batch = WriteBatch(segments=[Segment(root, w * 10, compact_records(w * 10, 10))], sync=sync)
        start = time.perf_counter()
        store.write(batch)
        spent[sync] += time.perf_counter() - start
    half = writes / 2
    return {
        "writes": writes,
        "writes_per_second": half / spent[True],
        "unsynced_writes_per_second": half / spent[False],
    }


def _read(store: Store, repeat: int) -> dict[str, Any]:
    root = f"read-{time.time()}"
    store.write(WriteBatch(runs=[RunRecord(root, "cat", "chain", created_at=time.time())]))
    for first in range(0, READ_RECORDS, SEGMENT):
        store.write(WriteBatch(segments=[Segment(root, first, compact_records(first, SEGMENT))]))
    store.write(WriteBatch(ends=[RunEnd(root, "ok", time.time())]))
    rates = []
    for _ in range(repeat):
        start = time.perf_counter()
        records = store.read_records(root)
        rates.append(len(records) / (time.perf_counter() - start))
        assert len(records) == READ_RECORDS
    return {"records": READ_RECORDS, "records_per_second": statistics.median(rates)}


def retention_chain(store: Store, links: int) -> dict[str, Any]:
    """The seconds of one ``delete_ended_before`` over a chain of ``links`` paused runs,
    each resumed by the next (the last one running: the chain is kept, followed from it
    back to the first through ``troupe_runs.resumed_by``), beside ``links`` ended runs
    (deleted)."""
    stamp = time.time()
    chain = [
        RunRecord(f"chain-{stamp}-{i}", "cat", "chain", created_at=stamp) for i in range(links)
    ]
    others = [
        RunRecord(f"other-{stamp}-{i}", "cat", "chain", created_at=stamp) for i in range(links)
    ]
    store.write(WriteBatch(runs=[chain[0], *others]))
    store.write(WriteBatch(ends=[RunEnd(r.run_id, "ok", stamp) for r in others]))
    for paused, by in itertools.pairwise(chain):  # as resumes make it
        store.write(WriteBatch(ends=[RunEnd(paused.run_id, "paused", stamp)]))
        assert store.mark_resumed(paused.run_id, by)
    start = time.perf_counter()
    deleted = store.delete_ended_before(stamp + 1)
    elapsed = time.perf_counter() - start
    # (the others, and what the rows before ended in this store; never the chain)
    assert deleted >= links and store.get_run(chain[0].run_id) is not None, deleted
    return {"links": links, "seconds": elapsed}


def measure(url: str, quick: bool) -> dict[str, Any]:
    """Both figures for the store at ``url``."""
    store = open_store(url)
    store.open()
    try:
        runs, segments = (5, 2) if quick else (20, 10)
        rounds = [_write(store, runs, segments) for _ in range(1 if quick else 5)]
        return {
            "write": {
                "runs": runs,
                "segment": SEGMENT,
                "records": runs * segments * SEGMENT,
                "records_per_second": statistics.median(r["records_per_second"] for r in rounds),
                "write_ms_median": statistics.median(r["write_ms_median"] for r in rounds),
            },
            "small_writes": _small_writes(store, 20 if quick else 500),
            "read": _read(store, 1 if quick else 9),
            "retention_chain": retention_chain(store, 20 if quick else CHAIN),
        }
    finally:
        store.close()


NO_POSTGRES = "--no-postgres"


def on_postgres(
    measure: Callable[[Callable[[], str]], dict[str, Any]],
    argv: Sequence[str],
    *,
    fsync: bool = True,
) -> dict[str, Any]:
    """``measure(new_database)`` on a throwaway PostgreSQL 15 cluster (``fsync`` on unless
    told; ``new_database()`` gives the URL of a fresh database), or why it was skipped
    (``--no-postgres`` in ``argv``, the ``postgres`` extra or PostgreSQL's programs
    missing)."""
    if NO_POSTGRES in argv:
        return {"skipped": f"{NO_POSTGRES} given"}
    try:
        import psycopg  # noqa: F401

        from tests.postgres import ClusterUnavailable, start_cluster
    except ImportError as exc:
        return {"skipped": f"psycopg not installed ({exc}; pip install 'trio-troupe[postgres]')"}
    try:
        cluster = start_cluster(fsync=fsync)
    except ClusterUnavailable as exc:
        return {"skipped": str(exc).splitlines()[0]}
    try:
        return measure(cluster.new_database)
    finally:
        cluster.stop()


def _postgres(quick: bool, argv: Sequence[str]) -> dict[str, Any]:
    return on_postgres(lambda new_database: measure(new_database(), quick), argv)


def main(argv: Sequence[str]) -> dict[str, Any]:
    quick = "--quick" in argv
    with tempfile.TemporaryDirectory() as folder:
        sqlite = measure(f"sqlite:///{folder}/journal.db", quick)
    return {"sqlite": sqlite, "postgres": _postgres(quick, argv)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
