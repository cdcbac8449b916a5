"""The seed notebook's consumer loops (LangChain's "streaming with agents"), ported by
changing only the line that opens the stream: ``async for x in agent.astream...(...)``
becomes ``async with agent.astream...(...) as s: async for x in s``. Everything else in
each loop is LangChain's code as the notebook has it, ``version="v1"`` included; the
setup (the cat agent, offline) is Troupe's. Each loop's printed output is asserted."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import pytest

from actors import Agent, AsyncCallbackHandler, ScriptedChatModel, tool
from actors._demo import cat_agent_script, items_model_script
from runtime import Runnable

QUESTION = {"input": "where is the cat hiding? what items are in that location?"}
ITEMS_PROMPT = (
    "Can you tell me what kind of items i might find in the following place: '{place}'. "
    "List at least 3 such items separating them by a comma. And include a brief "
    "description of each item.."
)


def make_agent(*, nested: bool, callbacks: Sequence[Any] = ()) -> Agent:
    """The notebook's agent: ``ChatOpenAI`` tagged ``agent_llm`` (here scripted, with
    the same name), run name ``Agent``; with ``nested``, ``get_items`` asks a model of
    its own, ``Get Items LLM`` tagged ``tool_llm``."""
    rng = random.Random(7)

    @tool
    async def where_cat_is_hiding() -> str:
        """Where is the cat hiding right now?"""
        return rng.choice(["under the bed", "on the shelf"])

    items_llm: Runnable[Any] = ScriptedChatModel(items_model_script, name="ChatOpenAI")
    items_llm = items_llm.with_config(
        run_name="Get Items LLM", tags=["tool_llm"], callbacks=list(callbacks)
    )

    @tool
    async def get_items(place: str) -> str:
        """Use this tool to look up which items are in the given place."""
        if not nested:
            if "bed" in place:
                return "socks, shoes and dust bunnies"
            return "books, penciles and pictures"
        chunks = [chunk async for chunk in _astream(items_llm, ITEMS_PROMPT.format(place=place))]
        return "".join(chunk.content for chunk in chunks)

    model = ScriptedChatModel(cat_agent_script, name="ChatOpenAI").with_config(
        tags=["agent_llm"], callbacks=list(callbacks)
    )
    return Agent(model, [where_cat_is_hiding, get_items], name="Agent")


async def _astream(runnable: Runnable[Any], prompt: str) -> Any:
    async with runnable.astream(prompt) as chunks:  # the one line ported
        async for chunk in chunks:
            yield chunk


def printed(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


async def test_astream_steps(capsys: pytest.CaptureFixture[str]) -> None:
    agent_executor = make_agent(nested=False)
    async with agent_executor.astream(QUESTION) as chunks:
        async for chunk in chunks:
            # Agent Action
            if "actions" in chunk:
                for action in chunk["actions"]:
                    print(f"Calling Tool: `{action.tool}` with input `{action.tool_input}`")
            # Observation
            elif "steps" in chunk:
                for step in chunk["steps"]:
                    print(f"Tool Result: `{step.observation}`")
            # Final result
            elif "output" in chunk:
                print(f"Final Output: {chunk['output']}")
            else:
                raise ValueError()
            print("---")
    assert printed(capsys) == [
        "Calling Tool: `where_cat_is_hiding` with input `{}`",
        "---",
        "Tool Result: `on the shelf`",
        "---",
        "Calling Tool: `get_items` with input `{'place': 'shelf'}`",
        "---",
        "Tool Result: `books, penciles and pictures`",
        "---",
        "Final Output: The cat is currently hiding on the shelf. In that location, you can "
        "find books, penciles and pictures.",
        "---",
    ]


async def _events_loop(agent_executor: Agent) -> None:
    async with agent_executor.astream_events(QUESTION, version="v1") as events:
        async for event in events:
            kind = event["event"]
            if kind == "on_chain_start":
                if (
                    event["name"] == "Agent"
                ):  # Was assigned when creating the agent with `.with_config({"run_name": "Agent"})`
                    print(
                        f"Starting agent: {event['name']} with input: {event['data'].get('input')}"
                    )
            elif kind == "on_chain_end":
                if (
                    event["name"] == "Agent"
                ):  # Was assigned when creating the agent with `.with_config({"run_name": "Agent"})`
                    print()
                    print("--")
                    print(
                        f"Done agent: {event['name']} with output: {event['data'].get('output')['output']}"
                    )
            if kind == "on_chat_model_stream":
                content = event["data"]["chunk"].content
                if content:
                    # Empty content in the context of OpenAI means
                    # that the model is asking for a tool to be invoked.
                    # So we only print non-empty content
                    print(content, end="|")
            elif kind == "on_tool_start":
                print("--")
                print(f"Starting tool: {event['name']} with inputs: {event['data'].get('input')}")
            elif kind == "on_tool_end":
                print(f"Done tool: {event['name']}")
                print(f"Tool output was: {event['data'].get('output')}")
                print("--")


async def test_astream_events_v1(capsys: pytest.CaptureFixture[str]) -> None:
    await _events_loop(make_agent(nested=False))
    out = printed(capsys)
    assert out[:9] == [
        "Starting agent: Agent with input: {'input': 'where is the cat hiding? what items "
        "are in that location?'}",
        "--",
        "Starting tool: where_cat_is_hiding with inputs: {}",
        "Done tool: where_cat_is_hiding",
        "Tool output was: on the shelf",
        "--",
        "--",
        "Starting tool: get_items with inputs: {'place': 'shelf'}",
        "Done tool: get_items",
    ]
    assert out[9:] == [
        "Tool output was: books, penciles and pictures",
        "--",
        "The| cat| is| currently| hiding| on| the| shelf|.| In| that| location|,| you| can|"
        " find| books|,| penciles| and| pictures|.|",
        "--",
        "Done agent: Agent with output: The cat is currently hiding on the shelf. In that "
        "location, you can find books, penciles and pictures.",
    ]


async def test_astream_events_v1_with_a_tool_that_calls_its_own_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    await _events_loop(make_agent(nested=True))
    out = printed(capsys)
    start = out.index("Starting tool: get_items with inputs: {'place': 'shelf'}")
    # the nested model's tokens stream inside the tool run, before it is done
    items = "books (bound pages to read), pencils (sticks for writing) and pictures (framed "
    assert out[start + 1] == (
        "books| (|bound| pages| to| read|)|,| pencils| (|sticks| for| writing|)| and| "
        "pictures| (|framed| photos| of| the| family|)|Done tool: get_items"
    )
    assert out[start + 2] == f"Tool output was: {items}photos of the family)"
    assert out[-1].startswith("Done agent: Agent with output: The cat is currently hiding on")


async def test_astream_log_path_status(capsys: pytest.CaptureFixture[str]) -> None:
    agent_executor = make_agent(nested=False)
    path_status = {}
    async with agent_executor.astream_log(QUESTION, include_names=["ChatOpenAI"]) as log:
        async for chunk in log:
            for op in chunk.ops:
                if op["op"] == "add":
                    if op["path"] not in path_status:
                        path_status[op["path"]] = op["value"]
                    else:
                        path_status[op["path"]] += op["value"]
            print(op["path"])
            print(path_status.get(op["path"]))
            print("----")
    out = printed(capsys)
    blocks = [out[i : i + 3] for i in range(0, len(out), 3)]
    assert all(block[2] == "----" for block in blocks)
    paths = [block[0] for block in blocks]
    assert paths[0] == "" and blocks[0][1] == "None"  # the root's state replaced
    assert {p for p in paths if p.startswith("/logs/")} == {
        f"/logs/ChatOpenAI{n}{suffix}"
        for n in ("", ":2", ":3")
        for suffix in ("", "/streamed_output/-", "/end_time")
    }
    # each path's values added up as they stream: the answer's chunks make the answer
    answer = [b[1] for b in blocks if b[0] == "/logs/ChatOpenAI:3/streamed_output/-"][-1]
    assert answer.startswith(
        "AssistantMessageChunk(content='The cat is currently hiding on the shelf. In that "
        "location, you can find books, penciles and pictures.'"
    )
    assert paths[-1] == "/final_output" and blocks[-1][1] == "None"  # a replace, as in LangChain


class MyCustomAsyncHandler(AsyncCallbackHandler):
    """The notebook's token-by-token handler, as written there."""

    def __init__(self, tags_of_interest: list[str]) -> None:
        """A custom call back handler.

        Args:
            tags_of_interest: Only LLM tokens from models with these tags will be
                              printed.
        """
        self.tags_of_interest = tags_of_interest

    async def on_chain_start(
        self, serialized: dict[str, Any], inputs: dict[str, Any], **kwargs: Any
    ) -> None:
        """Run when chain starts running."""
        print("on chain start: ")
        print(inputs)

    async def on_chain_end(self, outputs: dict[str, Any], **kwargs: Any) -> None:
        """Run when chain ends running."""
        print("On chain end")
        print(outputs)

    async def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run when a chat model starts running."""
        overlap_tags = self.get_overlap_tags(tags)

        if overlap_tags:
            print(",".join(overlap_tags), end=": ", flush=True)

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run when tool starts running."""
        print("Tool start")
        print(serialized)

    def on_tool_end(
        self,
        output: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run when tool ends running."""
        print("Tool end")
        print(str(output))

    async def on_llm_end(
        self,
        response: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Run when LLM ends running."""
        overlap_tags = self.get_overlap_tags(tags)

        if overlap_tags:
            # Who can argue with beauty?
            print()
            print()

    def get_overlap_tags(self, tags: list[str] | None) -> list[str]:
        """Check for overlap with filtered tags."""
        if not tags:
            return []
        return sorted(set(tags or []) & set(self.tags_of_interest or []))

    async def on_llm_new_token(
        self,
        token: str,
        *,
        chunk: Any = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Run on new LLM token. Only available when streaming is enabled."""
        overlap_tags = self.get_overlap_tags(tags)

        if token and overlap_tags:
            print(token, end="|", flush=True)


async def test_token_by_token_callback_handler(capsys: pytest.CaptureFixture[str]) -> None:
    handler = MyCustomAsyncHandler(["tool_llm", "agent_llm"])
    # The notebook attaches the handler to the models and to the run: each call is once.
    agent_executor = make_agent(nested=True, callbacks=[handler])
    async with agent_executor.astream(
        {"input": "where is the cat hiding and what items can be found there?"},
        {"callbacks": [handler]},
    ) as chunks:
        async for _ in chunks:
            pass
    out = capsys.readouterr().out
    assert out.startswith(
        "on chain start: \n{'input': 'where is the cat hiding and what items can be found "
        "there?'}\nagent_llm: \n\nTool start\n{'name': 'where_cat_is_hiding', 'kind': 'tool'}\n"
        "Tool end\non the shelf\nagent_llm: \n\nTool start\n{'name': 'get_items', 'kind': "
        "'tool'}\ntool_llm: books| (|bound| pages| to| read|)|,| pencils|"
    )
    assert out.count("Tool start") == out.count("Tool end") == 2  # once each, not twice
    assert out.count("on chain start") == out.count("On chain end") == 1
    assert "\nTool end\nbooks (bound pages to read), pencils" in out
    assert "agent_llm: The| cat| is| currently| hiding| on| the| shelf|.|" in out
    assert out.rstrip().splitlines()[-1].startswith("AgentOutput(")
