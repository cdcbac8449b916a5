"""Hypothesis profiles, from Troupe's own pytest plugin (``actors.pytest_plugin``).

``troupe-ci`` (fixed seed, no example database; chosen when ``CI`` is set, so CI runs
are reproducible), ``troupe-dev`` (the default), ``troupe-long`` (10,000 cases:
``HYPOTHESIS_PROFILE=troupe-long python -m pytest tests/test_properties.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from .postgres import Cluster, ClusterUnavailable, start_cluster

pytest_plugins = ["pytester"]

_DEFAULT = "troupe-ci" if os.environ.get("CI") else "troupe-dev"
_PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or _DEFAULT
settings.load_profile(
    {"ci": "troupe-ci", "dev": "troupe-dev", "long": "troupe-long"}.get(_PROFILE, _PROFILE)
)


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A fresh SQLite store's URL, in the test's own temporary directory."""
    return f"sqlite:///{tmp_path}/runs.db"


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """A throwaway PostgreSQL cluster for the session (``tests/postgres.py``), started
    when a test first asks for it. Where PostgreSQL or psycopg is missing the test skips,
    saying what to install; with ``TROUPE_POSTGRES_REQUIRED=1`` it fails instead."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        missing = f"psycopg is not installed ({exc}): pip install 'trio-troupe[postgres]'"
    else:
        try:
            cluster = start_cluster()
        except ClusterUnavailable as exc:
            missing = str(exc)
        else:
            missing = ""
    if missing:
        if os.environ.get("TROUPE_POSTGRES_REQUIRED"):
            pytest.fail(f"PostgreSQL is required here (TROUPE_POSTGRES_REQUIRED=1): {missing}")
        pytest.skip(missing)
    try:
        yield cluster
    finally:
        cluster.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The PostgreSQL tests are a suite of their own (``.ci/run``'s PostgreSQL step, which
    fails rather than skips: ``pytest -m postgres``): the main run leaves them out, so
    that it stays within its time on two cores, unless ``-m`` names them."""
    if "postgres" in (config.getoption("markexpr", "") or ""):
        return
    elsewhere = pytest.mark.skip(reason="a PostgreSQL test: run with -m postgres (CI's step)")
    for item in items:
        if item.get_closest_marker("postgres") is not None:
            item.add_marker(elsewhere)
