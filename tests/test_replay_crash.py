"""Generated crash tests of replay: processes running agents with approval tools and
interrupts, whose paused runs are resumed with decisions drawn at random, are killed
with SIGKILL at random points and restarted on the same store (which resume the runs
the killed one left), many times over. Then, once a last process has finished what
the store holds:

- no tool call ran after its result was journaled (a journaled step is never done
  again; only the step in flight at a crash runs again);
- every run ended exactly once, and each run's journal keeps promises 1-4;
- no run is left running, and every paused run was resumed.

Rounds: ``TROUPE_CRASH_ROUNDS`` (default 6).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from actors.testing import check_events
from protocol import CompactDecoder, StreamEvent
from runtime import Store, open_store

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("TROUPE_CRASH_ROUNDS", "6"))


def _worker(url: str, ledger: Path, seed: int, *more: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.replay_worker", url, str(ledger), str(seed), *more],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _events(store: Store, run_id: str) -> list[StreamEvent]:
    decoder = CompactDecoder()
    return [e for e in map(decoder.decode, store.read_records(run_id)) if e is not None]


def test_kill_and_resume_runs_with_approvals_and_interrupts(tmp_path: Path) -> None:
    kill_and_resume(f"sqlite:///{tmp_path}/replay.db", tmp_path)


def kill_and_resume(url: str, tmp_path: Path) -> None:
    """The rounds and checks on the store at ``url``
    (``tests/test_journal_crash_postgres.py`` runs them on PostgreSQL)."""
    ledger = tmp_path / "ledger.txt"
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    for round_ in range(ROUNDS):
        worker = _worker(url, ledger, rng.randrange(10**6))
        assert worker.stdout is not None
        line = worker.stdout.readline()
        assert line == "ready\n", (
            seed,
            round_,
            line,
            worker.stderr.read() if worker.stderr else "",
        )
        time.sleep(rng.uniform(0.05, 0.8))
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=30)
    final = _worker(url, ledger, 0, "final")
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, (seed, err[-3000:])
    assert out.splitlines()[-1] == "settled"

    # When each call's result was journaled (its tool run's end, status ok).
    store = open_store(url)
    store.open()
    try:
        runs = store.list_runs(limit=10**9)
        journaled_at: dict[str, float] = {}
        for run in runs:
            assert run.status != "running", (seed, run)
            if run.status == "paused":
                assert run.resumed_by is not None, (seed, run)
            events = _events(store, run.run_id)
            try:
                check_events(events)
            except AssertionError as exc:
                raise AssertionError(f"seed {seed}, run {run.run_id}: {exc}") from None
            for event in events:
                if event.kind == "tool" and event.status == "ok":
                    call = (
                        event.data.input.get("call") if isinstance(event.data.input, dict) else None
                    )
                    if isinstance(call, str):
                        journaled_at.setdefault(call, event.end_time or 0.0)
    finally:
        store.close()
    begun: dict[str, list[float]] = defaultdict(list)
    for line in ledger.read_text().splitlines():
        what, call, when = line.split()
        if what == "begin":
            begun[call].append(float(when))
    late = {
        call: [t for t in times if t > journaled_at[call]]
        for call, times in begun.items()
        if call in journaled_at and any(t > journaled_at[call] for t in times)
    }
    assert not late, f"seed {seed}: calls ran again after their result was journaled: {late}"
    assert journaled_at, f"seed {seed}: no tool call was journaled in {ROUNDS} rounds"
