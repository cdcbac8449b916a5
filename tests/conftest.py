"""Hypothesis profiles, from Troupe's own pytest plugin (``actors.pytest_plugin``).

``troupe-ci`` (fixed seed, no example database; chosen when ``CI`` is set, so CI runs
are reproducible), ``troupe-dev`` (the default), ``troupe-long`` (10,000 cases:
``HYPOTHESIS_PROFILE=troupe-long python -m pytest tests/test_properties.py``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
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


_PYCACHE = "TROUPE_TESTS_PYCACHE"
"""The session's bytecode cache, named to the processes that run tests (below)."""
_MADE: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """The Python processes the tests start (``troupe serve``, the crash tests' workers,
    the CLI, the examples: hundreds in a run) share a bytecode cache of the session's
    (``PYTHONPYCACHEPREFIX``), so that Troupe and what it imports are compiled once
    rather than by each process (where ``PYTHONDONTWRITEBYTECODE`` is set, as on some
    machines, every process compiled Troupe's sources again: about 0.4 s of CPU each).
    Set in the environment of the processes that run tests (xdist's workers, or pytest
    alone) as they start, before any test module copies it; xdist's controller only
    makes the directory and names it, so that the workers' own imports are as before.
    A prefix already set is left as it is."""
    if os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    where = os.environ.get(_PYCACHE)
    if where is None:
        where = tempfile.mkdtemp(prefix="troupe-tests-pycache-")
        _MADE.append(where)
        os.environ[_PYCACHE] = where
    # (as xdist itself tells that it hands the tests to workers)
    distributes = config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None))
    if hasattr(config, "workerinput") or not distributes:
        os.environ["PYTHONPYCACHEPREFIX"] = where
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # (which would keep it empty)


def pytest_unconfigure(config: pytest.Config) -> None:
    for where in _MADE:
        shutil.rmtree(where, ignore_errors=True)


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
