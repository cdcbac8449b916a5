"""A hostile review of stop 44's changes: stop 45."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import Agent
from runtime import RunPaused, open_runtime
from runtime._core import Supervisor
from runtime._errors import RuntimeClosedError
from runtime._sqlite_store import SQLiteStore
from runtime._store import Owner, RunRecord, this_host

from .test_review46 import once_ended
from .test_review47 import _Ends, _gone_pid
from .test_serve_resume import payer


async def _dead_claim(tmp_path: Path) -> tuple[_Ends, Agent]:
    """A store on which a process claimed the paused run "first" for its resume
    ("second": its record running, its journal empty) and died before its first write."""
    url = f"sqlite:///{tmp_path}/runs.db"
    agent = payer(tmp_path / "ledger.txt")
    async with open_runtime(store=url) as rt:
        with pytest.raises(RunPaused):
            await rt.ainvoke(agent, "pay five", run_id="first")
    store = _Ends(url)
    store.ended = []
    store.open()
    first = store.get_run("first")
    assert first is not None
    now = time.time()
    claim = RunRecord(
        run_id="second",
        performer=first.performer,
        kind=first.kind,
        input=first.input,
        config={"resumes": "first", "origin": "first", "decisions": {"p1": {"approve": True}}},
        owner="dead",
        created_at=now,
    )
    assert store.mark_resumed("first", claim)
    store.heartbeat(Owner("dead", this_host(), _gone_pid(), now, now))
    return store, agent


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
    store, agent = await _dead_claim(tmp_path)
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
