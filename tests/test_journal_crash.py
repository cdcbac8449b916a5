"""Generated crash tests of the journal: a process journaling a generated workload
(tests/journal_worker.py: concurrent runs, tool calls, failures, conversations on
threads) is killed with SIGKILL at a random point, and another is started on the same
store, many times over. Then:

- every end a run's caller heard of is in the store, with the status it heard;
- every run in the store has ended (a run of a killed process was ended by the next
  process to open the store), and its journal reads back as one complete tree: every
  run that started ended exactly once, children before their parents, no event
  missing, repeated or out of order (``check_events`` on the decoded journal);
- each thread's history is what its runs' journals say, in order: each run found the
  thread's messages so far and added exactly its own new ones;
- SQLite's ``PRAGMA integrity_check`` passes.

Rounds: ``TROUPE_CRASH_ROUNDS`` (default 6; the long run uses 100 or more). The seed of
each round is printed on failure.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from actors.testing import check_events
from protocol import AgentOutput, CompactDecoder, StreamEvent, SystemMessage, structure_any
from runtime import Store, open_store
from runtime._sqlite_store import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("TROUPE_CRASH_ROUNDS", "6"))


def crash_rounds(url: str, rounds: int, seed: int) -> dict[str, str]:
    """Run ``rounds`` workers on ``url``, each killed at a random point; the ends
    their callers heard of."""
    rng = random.Random(seed)
    heard: dict[str, str] = {}
    for round_ in range(rounds):
        worker_seed = rng.randrange(10**6)
        worker = subprocess.Popen(
            [sys.executable, "-m", "tests.journal_worker", url, str(worker_seed)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert worker.stdout is not None
        line = worker.stdout.readline()
        assert line == "ready\n", (line, worker.stderr.read() if worker.stderr else "")
        time.sleep(rng.uniform(0.02, 0.8))
        worker.send_signal(signal.SIGKILL)
        out, err = worker.communicate(timeout=30)
        assert worker.returncode == -signal.SIGKILL, (round_, worker_seed, err[-2000:])
        for line in out.splitlines():
            if line.startswith("end "):
                _, run_id, status = line.split()
                heard[run_id] = status
    return heard


def decode(store: Store, run_id: str) -> list[StreamEvent]:
    decoder = CompactDecoder()
    events = [decoder.decode(record) for record in store.read_records(run_id)]
    return [event for event in events if event is not None]


def check_store(store: Store, heard: dict[str, str]) -> int:
    """Every promise of the module's docstring; returns how many runs were checked."""
    runs = store.list_runs(limit=10**9)
    by_id = {run.run_id: run for run in runs}
    for run_id, status in heard.items():
        assert run_id in by_id, f"run {run_id} ended ({status}) for its caller, not in the store"
        assert by_id[run_id].status == status, (run_id, status, by_id[run_id])
    outputs: dict[str, tuple[list[Any], list[Any]]] = {}
    for run in runs:
        assert run.status != "running", f"run {run.run_id} never ended"
        events = decode(store, run.run_id)
        try:
            check_events(events)
        except AssertionError as exc:
            raise AssertionError(f"run {run.run_id}: {exc}") from None
        root = [e for e in events if e.run_id == run.run_id]
        assert root[0].seq == 0 and root[-1].is_terminal and root[-1].status == run.status
        assert run.events == len(store.read_records(run.run_id))
        if run.thread_id is not None and run.status == "ok":
            start_input = root[0].data.input
            history = structure_any(start_input.get("chat_history", []))
            output = root[-1].data.output
            assert isinstance(output, AgentOutput)
            said = [m for m in output.messages if not isinstance(m, SystemMessage)]
            outputs[run.run_id] = (history, said[len(history) :])
    for thread in store.list_threads(limit=10**9):
        messages = store.thread_messages(thread.thread_id)
        kept = [structure_any(message) for _, message in messages]
        position = 0
        added_by = [run_id for run_id, _ in messages]
        order = list(dict.fromkeys(added_by))
        for run_id in order:
            history, new = outputs[run_id]
            assert kept[:position] == history, f"run {run_id} did not see its thread's history"
            assert kept[position : position + len(new)] == new, f"run {run_id}'s messages"
            position += len(new)
        assert position == len(kept)
        for run in store.list_runs(thread_id=thread.thread_id, status="ok", limit=10**9):
            _, new = outputs[run.run_id]
            assert not new or run.run_id in order, f"run {run.run_id} added nothing"
    return len(runs)


def test_kill_and_restart_the_journal_on_sqlite(tmp_path: Path) -> None:
    kill_and_restart(f"sqlite:///{tmp_path}/crash.db")


def kill_and_restart(url: str) -> None:
    """The crash rounds on the store at ``url``, then the checks (and SQLite's
    ``integrity_check``); ``tests/test_journal_crash_postgres.py`` runs it on PostgreSQL."""
    seed = random.randrange(10**6)
    heard = crash_rounds(url, ROUNDS, seed)
    # A last process opens the store (ending the last killed one's runs) and closes.
    worker = subprocess.run(
        [sys.executable, "-c", _OPEN_AND_CLOSE, url], cwd=ROOT, capture_output=True, text=True
    )
    assert worker.returncode == 0, worker.stderr
    store = open_store(url)
    store.open()
    try:
        checked = check_store(store, heard)
        if isinstance(store, SQLiteStore):
            assert store.integrity_check() == "ok"
    finally:
        store.close()
    assert heard, f"seed {seed}: no run ended in {ROUNDS} rounds"
    assert checked >= len(heard)


_OPEN_AND_CLOSE = """
import sys, trio
from runtime import open_runtime
async def main():
    async with open_runtime(store=sys.argv[1]):
        pass
trio.run(main)
"""


@pytest.mark.skipif(ROUNDS < 2, reason="needs at least two rounds")
def test_a_heard_end_is_never_lost_even_killed_at_once(tmp_path: Path) -> None:
    """Kills right after the first end was heard: the end must be in the store."""
    url = f"sqlite:///{tmp_path}/early.db"
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.journal_worker", url, "7"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    assert worker.stdout.readline() == "ready\n"
    line = worker.stdout.readline()
    worker.send_signal(signal.SIGKILL)
    worker.communicate(timeout=30)
    _, run_id, status = line.split()
    store = open_store(url)
    store.open()
    try:
        record = store.get_run(run_id)
        assert record is not None and record.status == status
    finally:
        store.close()
