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


PLAIN_ASYNC = """
import random
import pytest
from actors._demo import make_cat_agent
from runtime import current_runtime

{mark}
async def test_runs(troupe_runtime, troupe_events):
    assert current_runtime() is troupe_runtime
    await make_cat_agent(random.Random(1)).ainvoke("where is the cat?")
    await troupe_events.wait_for_runs(1)
    assert troupe_events.events[-1].event == "on_chain_end"
"""


@pytest.mark.parametrize("mark", ["@pytest.mark.trio", ""], ids=["marked", "unmarked"])
def test_the_fixtures_work_without_trio_mode(pytester: pytest.Pytester, mark: str) -> None:
    result = _run_user_tests(pytester, PLAIN_ASYNC.format(mark=mark), ini="")
    result.assert_outcomes(passed=1)


# A user's own property test, as the README shows it: no flags, no settings, a fresh
# checkout (the pytester directory has no .hypothesis/ cache).
USER_PROPERTY_TEST = """
import trio
from hypothesis import given, settings

from actors import Agent, ScriptedChatModel, testing, tool


@tool
async def add(a: int, b: int) -> int:
    \"\"\"Add two numbers.\"\"\"
    return a + b


@tool
async def shout(text: str, times: int = 1) -> str:
    \"\"\"Shout the text.\"\"\"
    return text.upper() * times

{settings}
@given(turns=testing.agent_scripts(tools=[add, shout]), fault=testing.faults())
def test_my_agent(turns, fault):
    async def main():
        agent = Agent(ScriptedChatModel(turns), [add, shout])
        run = await testing.run_events(agent, "hi", faults=fault)
        testing.check_events(run.tree)

    testing.run_watched(main, seconds=60, label="my agent")
"""


def test_a_property_test_passes_on_a_cold_cache_without_flags(pytester: pytest.Pytester) -> None:
    assert not (pytester.path / ".hypothesis").exists()
    result = _run_user_tests(pytester, USER_PROPERTY_TEST.format(settings=""), ini="", timeout=300)
    result.assert_outcomes(passed=1)


def test_the_strategies_pass_the_health_checks_on_a_cold_cache(pytester: pytest.Pytester) -> None:
    # The plugin's profile off: Hypothesis's own health checks, deadline aside (a run of
    # an agent is timed, which a busy machine may make slow; generation must not be).
    source = USER_PROPERTY_TEST.format(settings="@settings(deadline=None, database=None)")
    result = _run_user_tests(pytester, source, "-p", "no:troupe", ini="", timeout=300)
    result.assert_outcomes(passed=1)


def test_the_default_profile_gives_way_to_a_chosen_one(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "from hypothesis import settings\n"
        "settings.register_profile('mine', max_examples=7)\n"
        "settings.load_profile('mine')\n"
    )
    result = _run_user_tests(
        pytester,
        """
from hypothesis import settings

def test_profile():
    assert settings.get_current_profile_name() == "mine"
    assert settings().max_examples == 7
""",
        ini="",
    )
    result.assert_outcomes(passed=1)


def test_the_default_profile_is_loaded_when_none_is_chosen(pytester: pytest.Pytester) -> None:
    result = _run_user_tests(
        pytester,
        """
from hypothesis import HealthCheck, settings

def test_profile():
    assert settings.get_current_profile_name() == "troupe"
    assert settings().deadline is None
    assert HealthCheck.too_slow in settings().suppress_health_check
    assert settings().max_examples == 100  # otherwise Hypothesis's own defaults
""",
        ini="",
    )
    result.assert_outcomes(passed=1)
