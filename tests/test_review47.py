"""A hostile review of stop 43's changes (batch writes, the tracer's hops, recovery's
new pieces, a cancel asked as a claim is made): stop 44."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from runtime import RunNotPausedError, RunPaused, UnknownRunError, open_runtime
from runtime._sqlite_store import SQLiteStore
from runtime._store import RunRecord, Store

from .postgres import Cluster
from .recovery_worker import make_agent
from .test_recovery import killed_paying
from .test_serve_resume import calls, payer


class _LosingClaims:
    """A store on which another process claims a paused run first while this one's
    claim is on its way (a loaded machine, a far database): the claim, once let go
    (``release``), fails."""

    entered: threading.Event
    release: threading.Event

    def mark_resumed(self, run_id: str, by: RunRecord) -> bool:
        self.entered.set()
        assert self.release.wait(20)
        rival = attrs.evolve(by, run_id=f"{by.run_id}-rival", owner="rival")
        assert super().mark_resumed(run_id, rival)  # type: ignore[misc]
        claimed: bool = super().mark_resumed(run_id, by)  # type: ignore[misc]
        return claimed


class _LosingClaim(_LosingClaims, SQLiteStore):
    pass


async def test_a_cancel_asked_as_a_claim_that_fails_is_made_says_so(tmp_path: Path) -> None:
    # rt.cancel asked while a resume claims its paused run said True (the run was
    # cancelled) although the claim then failed: there was never a run to cancel.
    store = _LosingClaim(f"sqlite:///{tmp_path}/runs.db")
    await _cancelled_as_a_claim_fails(store, tmp_path / "ledger.txt")


@pytest.mark.postgres
async def test_a_cancel_asked_as_a_claim_that_fails_is_made_says_so_on_postgresql(
    postgres_cluster: Cluster, tmp_path: Path
) -> None:
    from runtime._postgres_store import PostgresStore

    class LosingClaim(_LosingClaims, PostgresStore):
        pass

    store = LosingClaim(postgres_cluster.new_database())
    await _cancelled_as_a_claim_fails(store, tmp_path / "ledger.txt")


async def _cancelled_as_a_claim_fails(store: _LosingClaims, ledger: Path) -> None:
    assert isinstance(store, Store)
    store.entered, store.release = threading.Event(), threading.Event()
    agent = payer(ledger)
    async with open_runtime(store=store) as rt:
        with pytest.raises(RunPaused):
            await rt.ainvoke(agent, "pay five", run_id="first")
        answers: list[bool] = []

        async def resume() -> None:
            with pytest.raises(RunNotPausedError):
                await rt.resume(agent, "first", {"p1": True}, run_id="second")

        async def cancel() -> None:
            answers.append(await rt.cancel("second"))

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(resume)
                await trio.to_thread.run_sync(store.entered.wait)
                nursery.start_soon(cancel)
                await trio.testing.wait_all_tasks_blocked()
                store.release.set()
        assert answers == [False]  # no run "second" was ever there
        with pytest.raises(UnknownRunError):
            await rt.get_run("second")
        assert calls(ledger) == []


class _LosingTakeOver(SQLiteStore):
    """A store on which, as this process takes a dead process's run over, a cancel is
    asked here (``ask``, in the event loop), and then another process takes the run
    first."""

    ask: Any = None

    def take_over(
        self, run_id: str, dead_owner: str, owner: str, *, seen_at: float | None = None
    ) -> bool:
        if self.ask is not None:
            trio.from_thread.run(self.ask, run_id)
            assert super().take_over(run_id, dead_owner, "rival", seen_at=seen_at)
        return super().take_over(run_id, dead_owner, owner, seen_at=seen_at)


async def test_a_cancel_asked_as_a_take_over_that_fails_is_made_reaches_the_taker(
    tmp_path: Path,
) -> None:
    # rt.cancel asked while this process took a dead process's run over said True
    # (the run would be cancelled once taken up) and did nothing more: another process
    # took the run first, and ran it to its end, never asked.
    url = f"sqlite:///{tmp_path}/runs.db"
    ledger = tmp_path / "ledger.txt"
    answers: list[bool] = []
    store = _LosingTakeOver(url)
    with trio.fail_after(60):
        async with open_runtime(store=store, resume=[make_agent(str(ledger))]) as rt:

            async def ask(run_id: str) -> None:
                async def cancel() -> None:
                    answers.append(await rt.cancel(run_id))

                trio.lowlevel.spawn_system_task(cancel)
                await trio.testing.wait_all_tasks_blocked()

            await trio.to_thread.run_sync(killed_paying, url, ledger)
            store.ask = ask
            journal = rt.journal
            assert journal is not None
            await journal.sweep()
            while not answers:  # noqa: ASYNC110
                await trio.sleep(0.01)
            assert answers == [True]  # asked of the process that took it
            assert store.take_cancels("rival") == ["r1"]
