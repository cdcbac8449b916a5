"""The journal's crash tests on PostgreSQL: the generated one (``tests/test_journal_crash.py``:
a worker journaling concurrent runs is SIGKILLed at random points and restarted on the
same database, many times over; then no journaled event is lost, duplicated or
reordered, every run ends exactly once, and each thread's history is what its runs'
journals say), replay's (``tests/test_replay_crash.py``: approvals and interrupts,
killed and resumed) and recovery's (``tests/test_recovery.py``: a killed run goes on
under its own id).

Marked ``postgres`` (a throwaway cluster, ``tests/postgres.py``): ``.ci/run`` runs it in
the PostgreSQL step; elsewhere it skips where PostgreSQL or psycopg is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .postgres import Cluster
from .test_journal_crash import kill_and_restart
from .test_recovery import killed_run_goes_on
from .test_replay_crash import kill_and_resume

pytestmark = pytest.mark.postgres


def test_kill_and_restart_the_journal_on_postgres(postgres_cluster: Cluster) -> None:
    kill_and_restart(postgres_cluster.new_database())


def test_kill_and_resume_runs_with_approvals_and_interrupts_on_postgres(
    postgres_cluster: Cluster, tmp_path: Path
) -> None:
    kill_and_resume(postgres_cluster.new_database(), tmp_path)


def test_a_killed_run_goes_on_under_its_own_id_on_postgres(
    postgres_cluster: Cluster, tmp_path: Path
) -> None:
    killed_run_goes_on(postgres_cluster.new_database(), tmp_path)
