"""The pytest plugin, as a user's test run meets it (each case a pytest of its own)."""

from __future__ import annotations

import pytest

CAT = """
import random
from actors._demo import make_cat_agent
"""


def _run_user_tests(
    pytester: pytest.Pytester,
    source: str,
    *args: str,
    ini: str = "trio_mode = true",
    timeout: float | None = None,
) -> pytest.RunResult:
    """Run a user's test file under the plugin, as a pytest of its own."""
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(source)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=timeout)


def test_the_fixtures_give_a_runtime_and_every_checked_event(pytester: pytest.Pytester) -> None:
    result = _run_user_tests(
        pytester,
        CAT
        + """
from runtime import current_runtime

async def test_runs(troupe_runtime, troupe_events):
    assert current_runtime() is troupe_runtime
    agent = make_cat_agent(random.Random(1), nested=True)
    await agent.ainvoke("where is the cat?")
    await agent.ainvoke("and now?")
    await troupe_events.wait_for_runs(2)
    roots = [e for e in troupe_events.events if not e.parent_ids and e.is_terminal]
    assert len(roots) == 2
    assert {e.kind for e in troupe_events.events} == {"chain", "chat_model", "tool"}
""",
    )
    result.assert_outcomes(passed=1)


def test_a_broken_tree_fails_the_test_at_teardown(pytester: pytest.Pytester) -> None:
    result = _run_user_tests(
        pytester,
        CAT
        + """
import attrs

async def test_runs(troupe_runtime, troupe_events):
    await make_cat_agent(random.Random(1)).ainvoke("where is the cat?")
    await troupe_events.wait_for_runs(1)
    # a hand-broken stream: the first tool's terminal event taken away
    at = next(i for i, e in enumerate(troupe_events.events) if e.event == "on_tool_end")
    del troupe_events.events[at]
""",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*PromiseBroken: promise 2 (ordering) broken*"])


def test_a_hang_prints_the_task_tree_and_ends_the_run(pytester: pytest.Pytester) -> None:
    result = _run_user_tests(
        pytester,
        """
import trio

async def test_stuck(troupe_watchdog):
    with trio.CancelScope(shield=True):
        await trio.sleep_forever()
""",
        "-s",
        ini="trio_mode = true\ntroupe_hang_timeout = 1",
        timeout=60,
    )
    assert result.ret == 3
    err = result.stderr.str()
    assert "*** hang: test_a_hang_prints_the_task_tree_and_ends_the_run.py::test_stuck" in err
    assert "sleep_forever" in err  # where the stuck task waits
    hangs = list((pytester.path / ".hangs").glob("hang-*.txt"))
    assert hangs and "sleep_forever" in hangs[0].read_text()


def test_a_bad_timeout_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = _run_user_tests(
        pytester,
        "async def test_x(troupe_watchdog):\n    pass\n",
        ini="trio_mode = true\ntroupe_hang_timeout = soon",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "troupe_hang_timeout must be seconds (> 0), got 'soon'" in result.stderr.str()


def test_the_hypothesis_profiles_are_registered(pytester: pytest.Pytester) -> None:
    result = _run_user_tests(
        pytester,
        """
from hypothesis import given, settings, strategies as st

def test_profile():
    assert settings().max_examples == 60 and settings().derandomize
""",
        "--hypothesis-profile=troupe-ci",
        ini="",
    )
    result.assert_outcomes(passed=1)
