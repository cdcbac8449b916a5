"""The SQLite store's WAL after a burst: SQLite keeps the file at its largest size for
ever by default; the store has it truncated back (``PRAGMA journal_size_limit``) when
it starts again after a checkpoint, so that a server left running does not keep the
disk a burst took."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from runtime._sqlite_store import WAL_KEPT_BYTES, SQLiteStore


def test_a_burst_leaves_no_large_wal_behind(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    wal = Path(f"{path}-wal")
    store = SQLiteStore(f"sqlite:///{path}")
    store.open()
    try:
        with store._writing() as db:
            db.execute("CREATE TABLE burst (b TEXT)")
        # a reader holds a snapshot (a slow read of a long run, say): no checkpoint can
        # finish, and the WAL grows with every write
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM troupe_runs").fetchone()
        blob = "x" * (1 << 20)
        for _ in range(WAL_KEPT_BYTES // len(blob) + 8):
            with store._writing(sync=False) as db:
                db.execute("INSERT INTO burst VALUES (?)", (blob,))
        assert wal.stat().st_size > WAL_KEPT_BYTES
        reader.execute("COMMIT")
        reader.close()
        # the reader gone, the next commits checkpoint the WAL and start it again
        for _ in range(3):
            with store._writing() as db:
                db.execute("DELETE FROM burst WHERE rowid IN (SELECT rowid FROM burst LIMIT 1)")
        assert wal.stat().st_size <= WAL_KEPT_BYTES
        with store._writing() as db:
            assert db.execute("SELECT count(*) FROM burst").fetchone()[0] == 32 + 8 - 3
    finally:
        store.close()
