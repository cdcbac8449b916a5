"""The cat agent under the pytest plugin: python -m pytest examples/test_cat_fixtures.py"""

import pytest
from cat import get_items, where_cat_is_hiding

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn
from actors.testing import EventCollector
from runtime import Runtime


@pytest.mark.trio
async def test_the_agent_looks_under_the_bed(
    troupe_runtime: Runtime, troupe_events: EventCollector
) -> None:
    model = ScriptedChatModel(
        [
            ScriptedTurn(tool_calls=[ScriptedCall("get_items", {"place": "under the bed"})]),
            ScriptedTurn("Socks and shoes under the bed."),
        ]
    )
    agent = Agent(model, [where_cat_is_hiding, get_items])
    assert (await agent.ainvoke("what is under the bed?")).output.startswith("Socks")
    await troupe_events.wait_for_runs(1)  # handlers watch runs; they do not hold them up
    ends = [e for e in troupe_events.events if e.event == "on_tool_end"]
    assert [(e.name, e.data.output) for e in ends] == [
        ("get_items", "socks, shoes and dust bunnies")
    ]
    # when the test ends, every run tree troupe_runtime saw is checked (promises 1-4)
