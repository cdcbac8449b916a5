"""Troupe's pytest plugin, registered by the ``pytest11`` entry point (``-p no:troupe``
turns it off). Its fixtures need pytest-trio (``trio_mode = true``, or tests marked
``@pytest.mark.trio``):

- ``troupe_watchdog``: if the test has not finished after ``troupe_hang_timeout``
  seconds (ini option, default 120), trio's task tree is written to stderr and to
  ``TROUPE_HANG_DIR`` (default ``.hangs``) and the process ends: a wait nothing can
  cancel would otherwise hang the test run.
- ``troupe_runtime``: a runtime open for the test (under the watchdog).
- ``troupe_events``: an :class:`~actors.testing.EventCollector` that sees every event of
  every run of ``troupe_runtime``; when the test ends, every run tree that ended is
  checked with :func:`~actors.testing.check_events`.

Hypothesis profiles ``troupe-ci`` (60 cases, fixed seed, no example database),
``troupe-dev`` (40) and ``troupe-long`` (10,000) are registered for
``--hypothesis-profile``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from runtime import Runtime

    from .testing import EventCollector

DEFAULT_HANG_TIMEOUT = 120.0


def _register_profiles() -> None:
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # the profiles are for Hypothesis users only
        return
    base = settings(
        deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
    )
    settings.register_profile("troupe-ci", base, max_examples=60, derandomize=True, database=None)
    settings.register_profile("troupe-dev", base, max_examples=40)
    settings.register_profile("troupe-long", base, max_examples=10_000)


_register_profiles()  # at import, so conftest files can load them


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "troupe_hang_timeout",
        "seconds before a test using troupe_watchdog dumps trio's task tree and exits",
        default=str(DEFAULT_HANG_TIMEOUT),
    )


@pytest.fixture
async def troupe_watchdog(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Dump trio's task tree and end the process if the test hangs."""
    from .testing import hang_watchdog

    raw = request.config.getini("troupe_hang_timeout")
    try:
        seconds = float(raw)
    except ValueError:
        raise pytest.UsageError(f"troupe_hang_timeout must be seconds, got {raw!r}") from None
    with hang_watchdog(seconds, request.node.nodeid):
        yield


@pytest.fixture
async def troupe_runtime(troupe_watchdog: None) -> AsyncIterator[Runtime]:
    """A runtime open for the test; it is current in the test, so ``agent.ainvoke(...)``
    and the streams use it."""
    from runtime import open_runtime

    async with open_runtime() as rt:
        yield rt


@pytest.fixture
async def troupe_events(troupe_runtime: Runtime) -> AsyncIterator[EventCollector]:
    """Every event of every run of ``troupe_runtime``; each run tree that ended is
    checked against the promises when the test ends."""
    from .testing import EventCollector, check_events

    collector = EventCollector()
    await troupe_runtime.subscribe(collector)
    yield collector
    ended = [e.run_id for e in collector.events if e.is_terminal and not e.parent_ids]
    for root in ended:
        check_events(collector.of_tree(root))
