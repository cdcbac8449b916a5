"""Crash recovery by replay: a run whose process was killed goes on under its own id
when a runtime that knows its performer opens the store; the steps journaled before
the crash are not done again, the one in flight is (at least once)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from actors.testing import check_events
from protocol import STATE_EVENT, CompactDecoder, StateDelta, StreamEvent
from runtime import open_store

ROOT = Path(__file__).resolve().parent.parent


def journal(url: str, run_id: str = "r1") -> list[StreamEvent]:
    """Run ``run_id``'s journal, read by another process's way (the store alone)."""
    store = open_store(url)
    store.open()
    try:
        decoder = CompactDecoder()
        return [e for e in map(decoder.decode, store.read_records(run_id)) if e is not None]
    finally:
        store.close()


def killed_paying(url: str, ledger: Path) -> None:
    """A process runs ``r1`` on the store at ``url``, and is killed with SIGKILL as it
    pays (the payment's start journaled, and so everything before it)."""
    killed_when(
        ["tests.recovery_worker", url, str(ledger), "start"],
        "paying",
        lambda: any(e.name == "pay" for e in journal(url)),
    )
    assert ledger.read_text().splitlines() == ["look 1", "pay 5 begun"]


def killed_when(args: list[str], says: str, journaled: Callable[[], bool]) -> None:
    """A process (``python -m`` ``args``) is killed with SIGKILL once it printed the
    line ``says`` and ``journaled()`` holds (what it has done is in the store)."""
    worker = subprocess.Popen(
        [sys.executable, "-m", *args], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert worker.stdout is not None
    assert worker.stdout.readline() == says + "\n"
    deadline = time.monotonic() + 60
    while not journaled():
        assert time.monotonic() < deadline, f"{args[0]}: its work never reached the journal"
        time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    worker.communicate(timeout=30)


def test_a_killed_run_goes_on_under_its_own_id(tmp_path: Path) -> None:
    killed_run_goes_on(f"sqlite:///{tmp_path}/runs.db", tmp_path)


def recovered(worker: str, url: str, ledger: Path) -> None:
    """A process (``python -m worker url ledger resume``) recovers run ``r1`` of the
    store at ``url``, which ends well."""
    resumed = subprocess.run(
        [sys.executable, "-m", worker, url, str(ledger), "resume"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[-1] == "ended ok"


def killed_run_goes_on(url: str, tmp_path: Path) -> None:
    """The test on the store at ``url`` (``tests/test_journal_crash_postgres.py`` runs it
    on PostgreSQL)."""
    ledger = tmp_path / "ledger.txt"
    killed_paying(url, ledger)

    recovered("tests.recovery_worker", url, ledger)
    # the look-up journaled before the crash ran once; the payment in flight ran again
    assert ledger.read_text().splitlines() == ["look 1", "pay 5 begun", "pay 5 begun", "pay 5 done"]

    events = journal(url)
    check_events(events)  # one start, one end for every run: the whole tree keeps 1-4
    root = [e for e in events if e.run_id == "r1"]
    assert root[-1].status == "ok"
    assert [e.seq for e in root] == list(range(len(root)))  # its events went on in sequence
    assert root[-1].status == "ok" and root[-1].data.output.output == "all paid"
    pays = [e for e in events if e.name == "pay" and e.is_terminal]
    assert [e.status for e in pays] == ["error", "ok"]  # interrupted, then run again
    assert "interrupted" in (pays[0].data.error or "")
    # the shared state was rebuilt from the journal: the payment run again read the
    # look-up's change, which was made once and journaled once
    seen = (tmp_path / "ledger.txt.state").read_text().splitlines()
    assert [json.loads(line) for line in seen] == [{"who": "Ann", "looked": 1}] * 2
    changes = [e for e in events if e.event == "on_custom_event" and e.name == STATE_EVENT]
    assert [e.data.chunk for e in changes] == [
        StateDelta([{"op": "add", "path": "/looked", "value": 1}])
    ]


def _wait_for(url: str, what: str, count: int = 1) -> None:
    """Until ``count`` start events of tool ``what`` are journaled."""
    deadline = time.monotonic() + 60
    while sum(e.name == what and e.event == "on_tool_start" for e in journal(url)) < count:
        assert time.monotonic() < deadline, f"{what} never reached the journal"
        time.sleep(0.01)


def test_a_run_recovered_twice_does_not_redo_what_the_second_process_did(
    tmp_path: Path,
) -> None:
    """A killed in the look-up; B resumes it, runs the look-up again to its end, and is
    killed in the payment; C resumes it: the journal holds the look-up twice (once
    interrupted, once done), and C must take the answer, not run it a third time."""
    url = f"sqlite:///{tmp_path}/runs.db"
    ledger = tmp_path / "ledger.txt"
    env = {**os.environ, "SLOW_LOOK": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "tests.recovery_worker", url, str(ledger), "start"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert first.stdout is not None
    assert first.stdout.readline() == "looking\n"
    _wait_for(url, "look")
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)

    second = subprocess.Popen(
        [sys.executable, "-m", "tests.recovery_worker", url, str(ledger), "recover-and-wait"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    _wait_for(url, "pay")
    second.send_signal(signal.SIGKILL)
    second.communicate(timeout=30)

    third = subprocess.run(
        [sys.executable, "-m", "tests.recovery_worker", url, str(ledger), "resume"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert third.returncode == 0, third.stderr
    assert third.stdout.splitlines()[-1] == "ended ok"
    lines = ledger.read_text().splitlines()
    assert lines.count("look 1 done") == 1, lines  # done by B, answered from the journal in C
    assert lines.count("look 1") == 2, lines  # A's (interrupted) and B's
    assert lines.count("pay 5 done") == 1, lines
    check_events(journal(url))
