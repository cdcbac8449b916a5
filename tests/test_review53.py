"""A hostile review of stop 48's changes (the journal's records made as JSON text by
generated writers, a join of a run whose journal failed unwritten, SQLite's rows
inserted by one helper and its close taking the locks, the HTTP edge's JSON
responses), and of the leftover of the last one (a batch of claims failing as one):
stop 49."""

from __future__ import annotations

import threading
import time
from typing import Any

from runtime import RunRecord, StoreError
from runtime._sqlite_store import SQLiteStore
from runtime._store import RunEnd, Store, WriteBatch

from .test_store_contract import opened, run
from .test_store_contract import url as url  # (the fixture: each kind of store)

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
