"""A researcher agent used as a tool by a writer agent: the researcher's run is a child
of the tool's run, so its tokens and tool calls stream inside the writer's tree.
Offline on scripted models, or ``--model NAME --base-url URL`` on a server."""

import trio
from models import model, question

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from protocol import ToolMessage


@tool
async def search_notes(topic: str) -> str:
    """Search the research notes for a topic."""
    return f"notes on {topic}: cats sleep 12 to 16 hours a day, mostly at dawn and dusk"


def researcher_script(messages):
    if not any(isinstance(m, ToolMessage) for m in messages):
        return ScriptedTurn(tool_calls=[ScriptedCall("search_notes", {"topic": "cat sleep"})])
    return ScriptedTurn("Cats sleep 12 to 16 hours a day, most of it at dawn and dusk.")


def writer_script(messages):
    if not any(isinstance(m, ToolMessage) for m in messages):
        ask = ScriptedCall("researcher", {"input": "How long do cats sleep?"})
        return ScriptedTurn(tool_calls=[ask])
    return ScriptedTurn("Cats are champion sleepers: up to 16 hours a day.")


researcher = Agent(
    model(ScriptedChatModel(researcher_script, name="researcher_llm")),
    [search_notes],
    name="Researcher",
    system_prompt="Answer from the research notes; always search them first.",
)
writer = Agent(
    model(ScriptedChatModel(writer_script, name="writer_llm")),
    [researcher.as_tool("researcher", "Ask the researcher a question; it searches notes.")],
    name="Writer",
    system_prompt="Write one friendly sentence. Ask the researcher for facts first.",
)


async def main() -> None:
    ask = question("Write one line about how much cats sleep.")
    async with writer.astream_events(ask, config={"tags": ["demo"]}) as events:
        async for event in events:
            depth = "  " * len(event.parent_ids)
            if event.phase == "start":
                print(f"{depth}{event.name} [{event.kind}] starts (tags {list(event.tags)})")
            elif event.phase == "end" and event.kind == "tool":
                print(f"{depth}{event.name} answered: {event.data.output}")
            elif event.phase == "end" and event.kind == "chat_model":
                print(f"{depth}{event.name} said: {event.data.output.content!r}")
    print("Answer:", events.output.output)


trio.run(main)
