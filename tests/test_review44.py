"""A hostile review of stop 43's merges (the journal's unencodable events, the viewer
board's catch-up, one checkpoint per waiting read, the per-run cuts, a thread's load in
one read, bounded closing)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.testing import hang_watchdog
from runtime import JournalError, Run, open_runtime
from tests.postgres import Cluster
from tests.test_bounded_close import settings_seen
from tests.test_review43 import _Dispatches, _EmitsText, _EndsOdd, _Odd


async def test_a_root_whose_end_cannot_be_encoded_leaves_no_tree_behind(tmp_path: Path) -> None:
    # The root's end is its tree's last event: when it is the event the encoder raises
    # on, the tree failed there must be forgotten there (no later event does it), or
    # it is kept for the runtime's life (Journal.writing says its id is in use).
    async with open_runtime(store=f"sqlite:///{tmp_path}/runs.db") as rt:
        with pytest.raises(JournalError, match=r"cannot encode on_\w+_end"):
            await rt.ainvoke(_EndsOdd(), "q", run_id="odd")
        assert rt.journal is not None
        assert rt.journal.open_trees == 0
        assert not rt.journal.writing("odd")
        assert await rt.ainvoke(_EmitsText(), "q", run_id="fine") == "ok"
        assert rt.journal.open_trees == 0


@pytest.mark.postgres
def test_a_services_own_options_are_kept(
    postgres_cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # libpq takes a connection's settings from a service file (pg_service.conf) where
    # the URL names one (service=, or PGSERVICE): its options (a search_path: the
    # schema Troupe's tables are in) must stay, beside the default statement_timeout.
    # The options Troupe gave libpq, from the URL and PGOPTIONS alone, overrode the
    # service's: its settings were lost.

    (tmp_path / "pg_service.conf").write_text(
        "[troupe_review44]\n"
        f"host=127.0.0.1\nport={postgres_cluster.port}\nuser=postgres\ndbname=postgres\n"
        "options=-c lock_timeout=99\n"
    )
    monkeypatch.setenv("PGSERVICEFILE", str(tmp_path / "pg_service.conf"))
    for url, service in (
        ("postgresql://?service=troupe_review44", None),
        ("postgresql://", "troupe_review44"),
    ):
        if service is not None:
            monkeypatch.setenv("PGSERVICE", service)
        assert settings_seen(url, "lock_timeout", "statement_timeout") == {
            "lock_timeout": "99ms",
            "statement_timeout": "5min",
        }


@pytest.mark.postgres
async def test_a_threads_count_and_messages_are_read_in_one_snapshot(
    postgres_cluster: Cluster,
) -> None:
    # Store.read_thread: the thread's row and its messages agree (a run loads both; the
    # journal keeps the messages read and asks for those after them next time). On
    # PostgreSQL each statement was a transaction of its own: a thread deleted and
    # made again between the two gave the old row (its time, its count) and the new
    # thread's messages, which the journal added to the old one's it kept.

    from runtime._postgres_store import PostgresStore

    url = postgres_cluster.new_database()
    with hang_watchdog(90, "read_thread in one snapshot"):
        await trio.to_thread.run_sync(_read_while_made_again, PostgresStore(url), url)


def _read_while_made_again(store: Any, url: str) -> None:
    import psycopg

    store.open()
    try:
        with psycopg.connect(url, autocommit=True) as setup:
            setup.execute(
                "INSERT INTO troupe_threads VALUES ('t', 1.0, 1.0, '{}', 2);"
                "INSERT INTO troupe_message_segments VALUES ('t', 0, 2, 'r1', '[\"a\",\"b\"]')"
            )
        got: list[Any] = []
        with psycopg.connect(url) as locker:
            locker.execute("LOCK TABLE troupe_message_segments IN ACCESS EXCLUSIVE MODE")
            reader = threading.Thread(target=lambda: got.append(store.read_thread("t", 2)))
            reader.start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the reader waits for the lock
                row = locker.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()
                if row is not None and row[0]:
                    break
                time.sleep(0.01)
            locker.execute(
                "DELETE FROM troupe_message_segments WHERE thread_id = 't';"
                "DELETE FROM troupe_threads WHERE thread_id = 't';"
                "INSERT INTO troupe_threads VALUES ('t', 2.0, 2.0, '{}', 3);"
                "INSERT INTO troupe_message_segments VALUES "
                "('t', 0, 3, 'r2', '[\"x\",\"y\",\"z\"]')"
            )
            locker.commit()
            reader.join(30)
        [(thread, messages)] = got
        assert thread is not None
        assert (thread.created_at, thread.messages, messages) in ((1.0, 2, []), (2.0, 3, ["z"]))
    finally:
        store.close()


@pytest.mark.postgres
async def test_a_store_closed_as_a_beat_ends_leaves_no_heartbeat_connection(
    postgres_cluster: Cluster,
) -> None:
    # close() leaves the heartbeat's connection to a beat under way (it finds the
    # beat's lock held), which closes it as it ends if the store closed. A close that
    # came after the beat's look and before its lock went found the lock held, and
    # the beat had looked already: the connection stayed open for the store's life.
    with hang_watchdog(90, "a beat ending as its store closes"):
        await trio.to_thread.run_sync(_close_as_a_beat_ends, postgres_cluster.url())


class _SlowRelease:
    """A lock whose first release, in the thread ``slow``, waits until ``go`` is set
    (having set ``releasing``): a thread preempted just before it lets a lock go."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.releasing, self.go = threading.Event(), threading.Event()
        self.slow: threading.Thread | None = None

    def acquire(self, blocking: bool = True) -> bool:
        return self._lock.acquire(blocking)

    def release(self) -> None:
        if threading.current_thread() is self.slow and not self.releasing.is_set():
            self.releasing.set()
            self.go.wait(30)
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *_: object) -> None:
        self.release()


def _close_as_a_beat_ends(url: str) -> None:
    from runtime._postgres_store import PostgresStore

    store = PostgresStore(url)
    store.open()
    lock = store._beat_lock = _SlowRelease()  # type: ignore[assignment]

    def beat() -> None:
        with store._beating(True) as connection:
            connection.execute("SELECT 1")

    beating = lock.slow = threading.Thread(target=beat)
    beating.start()
    assert lock.releasing.wait(30)
    store.close()  # the beat's lock held: the connection left to the beat
    lock.go.set()
    beating.join(30)
    connection = store._beat
    assert connection is None or connection.closed


class _OddOnceRecorded(_Dispatches):
    """Waits until the record of run "odd" (its own) is in ``store``, then streams
    (``emit``) or returns a value whose class cannot be hashed."""

    name = "odd_once_recorded"

    def __init__(self, emit: bool) -> None:
        self.emit = emit
        self.store: Any = None

    async def perform(self, message: Any, run: Run) -> Any:
        while self.store.get_run("odd") is None:  # noqa: ASYNC110  # another's write
            await trio.sleep(0.01)
        if self.emit:
            await run.emit(_Odd())
            return "ok"
        return _Odd()


@pytest.mark.parametrize("emit", [True, False], ids=["chunk", "output"])
async def test_a_run_whose_journal_cannot_encode_an_event_is_not_left_running(
    tmp_path: Path, emit: bool
) -> None:
    # Its record, written before the event came, said "running" for the process's
    # life (and a join of it waited for ever, as for a live run): as a store's failure
    # has it, the record says the run ended in error, with the cause.
    performer = _OddOnceRecorded(emit)
    async with open_runtime(store=f"sqlite:///{tmp_path}/runs.db") as rt:
        assert rt.journal is not None
        performer.store = rt.journal.store
        with hang_watchdog(60, "a run whose journal cannot encode an event"):
            with pytest.raises(JournalError, match="cannot encode"):
                await rt.ainvoke(performer, "q", run_id="odd")
            # a join reads what was journaled, and says the journal ends short
            with pytest.raises(JournalError, match=r"ends before the run did \(it is error\)"):
                async with rt.join("odd") as joined:
                    async for _ in joined:
                        pass
        record = rt.journal.store.get_run("odd")
        assert record is not None and record.status == "error"
        assert record.error is not None and "cannot encode" in record.error
