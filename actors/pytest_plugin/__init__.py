"""Troupe's pytest plugin, registered by the ``pytest11`` entry point (``-p no:troupe``
turns it off). Its fixtures run on pytest-trio: under ``trio_mode = true``, in tests
marked ``@pytest.mark.trio``, and in plain ``async def`` tests, which the plugin marks
``trio`` when they ask for one of its fixtures (a test marked for asyncio or anyio is
left alone):

- ``troupe_watchdog``: if the test has not finished after ``troupe_hang_timeout``
  seconds (ini option, default 120), trio's task tree is written to stderr and to
  ``TROUPE_HANG_DIR`` (default ``.hangs``) and the process ends: a wait nothing can
  cancel would otherwise hang the test run.
- ``troupe_runtime``: a runtime open for the test (under the watchdog); when the test
  ends it closes and every run tree it saw is checked with
  :func:`~actors.testing.check_events`.
- ``troupe_events``: an :class:`~actors.testing.EventCollector` that sees every event of
  every run of ``troupe_runtime``.

Hypothesis profiles ``troupe-ci`` (60 cases, fixed seed, no example database),
``troupe-dev`` (40) and ``troupe-long`` (10,000) are registered for
``--hypothesis-profile``. When the test run chooses no profile (no
``--hypothesis-profile``, no ``settings.load_profile`` in a conftest, only Hypothesis's
own ``default`` or ``ci``), the plugin loads ``troupe``: that profile with no
``deadline`` and the ``too_slow`` and ``data_too_large`` health checks off, since a
generated agent run is timed on a machine that may be busy. Choosing any profile, or
``-p no:troupe``, leaves Hypothesis's settings alone.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from runtime import Runtime

    from ..testing import EventCollector

DEFAULT_HANG_TIMEOUT = 120.0


DEFAULT_PROFILE = "troupe"
"""The Hypothesis profile loaded when a test run chooses none."""
_HYPOTHESIS_OWN_PROFILES = frozenset({"default", "ci"})
_FIXTURES = frozenset({"troupe_runtime", "troupe_events", "troupe_watchdog"})
_OTHER_ASYNC_MARKS = ("asyncio", "anyio")


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


def _load_default_profile() -> None:
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:
        return
    current = settings.get_current_profile_name()
    if current not in _HYPOTHESIS_OWN_PROFILES:
        return  # the user chose one
    chosen = settings.get_profile(current)
    suppressed = {*chosen.suppress_health_check, HealthCheck.too_slow, HealthCheck.data_too_large}
    settings.register_profile(
        DEFAULT_PROFILE,
        chosen,
        deadline=None,
        suppress_health_check=sorted(suppressed, key=lambda check: check.value),
    )
    settings.load_profile(DEFAULT_PROFILE)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "troupe_hang_timeout",
        "seconds before a test using troupe_watchdog dumps trio's task tree and exits",
        default=str(DEFAULT_HANG_TIMEOUT),
    )


_HANG_TIMEOUT = pytest.StashKey[float]()


@pytest.hookimpl(trylast=True)  # after Hypothesis's own plugin loads a chosen profile
def pytest_configure(config: pytest.Config) -> None:
    _load_default_profile()
    raw = config.getini("troupe_hang_timeout")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise pytest.UsageError(f"troupe_hang_timeout must be seconds (> 0), got {raw!r}")
    config.stash[_HANG_TIMEOUT] = seconds


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``trio`` the plain ``async def`` tests that ask for a Troupe fixture."""
    for item in items:
        if not isinstance(item, pytest.Function) or not _FIXTURES & set(item.fixturenames):
            continue
        if not inspect.iscoroutinefunction(item.obj):
            continue
        if item.get_closest_marker("trio") is None and not any(
            item.get_closest_marker(mark) for mark in _OTHER_ASYNC_MARKS
        ):
            item.add_marker(pytest.mark.trio)


@pytest.fixture
async def troupe_watchdog(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Dump trio's task tree and end the process if the test hangs."""
    from ..testing import hang_watchdog

    with hang_watchdog(request.config.stash[_HANG_TIMEOUT], request.node.nodeid):
        yield


@pytest.fixture
def _troupe_collector() -> EventCollector:
    from ..testing import EventCollector

    return EventCollector()


@pytest.fixture
async def troupe_runtime(
    troupe_watchdog: None, _troupe_collector: EventCollector
) -> AsyncIterator[Runtime]:
    """A runtime open for the test; it is current in the test, so ``agent.ainvoke(...)``
    and the streams use it. When the test ends the runtime closes (runs still going are
    cancelled) and every run tree it saw is checked with ``check_events``."""
    from runtime import open_runtime

    from ..testing import check_events

    async with open_runtime(callbacks=[_troupe_collector]) as rt:
        yield rt
    for tree in _troupe_collector.trees():
        check_events(tree)


@pytest.fixture
def troupe_events(troupe_runtime: Runtime, _troupe_collector: EventCollector) -> EventCollector:
    """Every event of every run of ``troupe_runtime``, in order. A handler watches runs
    and does not hold them up, so after awaiting runs, ``await
    troupe_events.wait_for_runs(n)`` before reading their last events."""
    return _troupe_collector
