"""The journal's generated crash test (``tests/test_journal_crash.py``) on PostgreSQL: a
worker journaling concurrent runs is SIGKILLed at random points and restarted on the
same database, many times over; then no journaled event is lost, duplicated or
reordered, every run ends exactly once, and each thread's history is what its runs'
journals say.

Marked ``postgres`` (a throwaway cluster, ``tests/postgres.py``): ``.ci/run`` runs it in
the PostgreSQL step; elsewhere it skips where PostgreSQL or psycopg is missing.
"""

from __future__ import annotations

import pytest

from .postgres import Cluster
from .test_journal_crash import kill_and_restart

pytestmark = pytest.mark.postgres


def test_kill_and_restart_the_journal_on_postgres(postgres_cluster: Cluster) -> None:
    kill_and_restart(postgres_cluster.new_database())
