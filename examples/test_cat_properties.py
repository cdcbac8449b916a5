"""Property tests of the cat agent: python -m pytest examples/test_cat_properties.py"""

from cat import get_items, where_cat_is_hiding
from hypothesis import given

from actors import Agent, AsyncCallbackHandler, ScriptedChatModel, ScriptedTurn, testing

TOOLS = [where_cat_is_hiding, get_items]


class TokenCounter(AsyncCallbackHandler):
    tokens = 0

    async def on_llm_new_token(self, token: str, **kw: object) -> None:
        self.tokens += 1


@given(turns=testing.agent_scripts(tools=TOOLS), fault=testing.faults())
def test_cat_agent(turns: list[ScriptedTurn], fault: testing.Faults) -> None:
    async def main() -> None:
        agent, counter = Agent(ScriptedChatModel(turns), TOOLS), TokenCounter()
        run = await testing.run_events(agent, "where?", faults=fault, callbacks=[counter])
        testing.check_events(run.tree)  # promises 1-4 on every event of the run
        assert counter.tokens == sum(e.event == "on_chat_model_stream" for e in run.tree)
        if not any(t.error for t in turns):
            async with agent.astream("where?") as steps:
                testing.check_steps([step async for step in steps])

    testing.run_watched(main, seconds=30, label="cat agent")
