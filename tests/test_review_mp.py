"""Hostile review of multi-process (issue 30): sweeps, heartbeats, schema v3, run ids
sent once journaled, no NOTIFY from a lone process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

import runtime._journal as journal_module
from actors._demo import make_cat_agent
from runtime import StoreError
from runtime._sqlite_store import SQLiteStore
from runtime._store import WriteBatch

from .sse_client import serving

QUESTION = {"input": "where is the cat?"}


class _NoNewRuns(SQLiteStore):
    """A store that refuses every write that makes a run's record (a disk full)."""

    def write(self, batch: WriteBatch) -> None:
        if batch.runs:
            raise StoreError(f"store {self.url!r}: database or disk is full")
        super().write(batch)


@pytest.mark.parametrize("path", ["/runs", "/runs/stream"])
async def test_a_run_whose_record_cannot_be_written_is_a_503_not_an_id_nobody_finds(
    tmp_path: Path, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run id is answered once its record is journaled; when that write fails the
    request is a 503 naming the store's error, not an id that no process finds."""
    monkeypatch.setattr(journal_module, "WRITE_RETRIES", (0.01,))
    store = _NoNewRuns(f"sqlite:///{tmp_path}/runs.db")
    body: dict[str, Any] = {**QUESTION, "detached": True} if path == "/runs" else QUESTION
    async with serving(make_cat_agent(), store=store) as served:
        got = await served.client.post(path, json=body)
        assert got.status_code == 503, (got.status_code, got.headers, got.text[:300])
        assert "disk is full" in got.json()["error"]
        server = served.app.state.troupe
        with trio.fail_after(10):
            while server.runs.live():  # noqa: ASYNC110
                await trio.sleep(0.01)  # the run the journal could not keep ends
