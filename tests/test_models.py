"""The scripted chat model: tokens, OpenAI-style tool-call deltas, scripts, errors."""

from __future__ import annotations

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from actors import (
    ChunkSink,
    ModelError,
    ScriptedCall,
    ScriptedChatModel,
    ScriptedTurn,
    tokenize,
)
from actors._chat_model import TEXT_BLOCK
from actors.testing import check_events
from protocol import (
    AssistantMessage,
    AssistantMessageChunk,
    ChatRequest,
    StreamEvent,
    ToolCall,
    ToolCallChunk,
    ToolMessage,
    Usage,
    UserMessage,
)
from runtime import open_runtime


@given(st.text())
def test_tokens_rebuild_the_text(text: str) -> None:
    assert "".join(tokenize(text)) == text


def test_tokens_look_like_a_models() -> None:
    assert tokenize("The cat is on the shelf. In it, you") == [
        "The",
        " cat",
        " is",
        " on",
        " the",
        " shelf",
        ".",
        " In",
        " it",
        ",",
        " you",
    ]


async def test_a_model_streams_on_its_own() -> None:
    model = ScriptedChatModel([ScriptedTurn("Hello there, world.")])
    async with model.astream("hi") as chunks:
        received = [c async for c in chunks]
    assert all(isinstance(c, AssistantMessageChunk) for c in received)
    assert "".join(c.content for c in received) == "Hello there, world."
    assert received[-1].finish_reason == "stop" and received[-1].usage is not None
    message = await model.ainvoke([UserMessage("hi")])
    assert isinstance(message, AssistantMessage) and message.content == "Hello there, world."


async def test_tool_calls_stream_as_openai_deltas() -> None:
    model = ScriptedChatModel(
        [ScriptedTurn(tool_calls=[ScriptedCall("a", {"x": "long value here"}), ScriptedCall("b")])]
    )
    async with model.astream_events("go") as events:
        received = [e async for e in events]
    runs = check_events(received)
    chunks = next(iter(runs.values())).chunks
    pieces = [p for c in chunks for p in c.tool_call_chunks]
    assert pieces[0].id == "call_0_0" and pieces[0].name == "a" and pieces[0].args == ""
    assert all(p.id is None and p.name is None for p in pieces[1:] if p.index == 0)
    assert max(len(p.args or "") for p in pieces) <= 8
    output = received[-1].data.output
    assert output.tool_calls == (
        ToolCall("call_0_0", "a", {"x": "long value here"}),
        ToolCall("call_0_1", "b", {}),
    )
    assert output.finish_reason == "tool_calls"


async def test_each_conversation_replays_the_script_from_its_start() -> None:
    model = ScriptedChatModel([ScriptedTurn("one"), ScriptedTurn("two")])
    first = await model.ainvoke("q")
    second = await model.ainvoke(ChatRequest((UserMessage("q"), first, UserMessage("again"))))
    assert (first.content, second.content) == ("one", "two")
    with pytest.raises(ModelError, match="has 2 turn\\(s\\); turn 3 was asked for"):
        await model.ainvoke([UserMessage("q"), first, second])


async def test_a_script_can_be_a_function_of_the_conversation() -> None:
    def script(messages: object) -> ScriptedTurn:
        assert isinstance(messages, tuple)
        last = messages[-1]
        return ScriptedTurn(f"you said {last.content}")

    model = ScriptedChatModel(script)
    assert (await model.ainvoke("hey")).content == "you said hey"
    assert (await model.ainvoke([ToolMessage("r", "c", "t")])).content == "you said r"


async def test_a_scripted_failure_ends_the_run_with_an_error() -> None:
    model = ScriptedChatModel([ScriptedTurn("partial answer", error="server went away")])
    received: list[StreamEvent] = []
    async with open_runtime():
        with pytest.raises(ModelError, match="server went away"):
            async with model.astream_events("q") as events:
                # a loop, not a comprehension: the events before the raise are kept
                async for event in events:
                    received.append(event)  # noqa: PERF401
    check_events(received)
    assert "".join(e.data.chunk.content for e in received if e.phase == "stream") == (
        "partial answer"
    )
    assert received[-1].status == "error"
    assert received[-1].data.error == "ModelError: server went away"


async def test_delay_paces_tokens() -> None:
    model = ScriptedChatModel([ScriptedTurn("a b c d")], token_delay=0.01)
    start = trio.current_time()
    await model.ainvoke("q")
    assert trio.current_time() - start >= 0.04


def test_bad_model_settings() -> None:
    with pytest.raises(ValueError, match="token_delay must be a finite number of seconds >= 0"):
        ScriptedChatModel([], token_delay=-1)
    with pytest.raises(ValueError, match="token_delay must be a finite number of seconds >= 0"):
        ScriptedTurn("a", token_delay=float("nan"))
    with pytest.raises(TypeError, match="token_delay must be a number of seconds"):
        ScriptedTurn("a", token_delay="0.1")  # type: ignore[arg-type]  # wrong on purpose
    with pytest.raises(TypeError, match="list of ScriptedTurn"):
        ScriptedChatModel(["text"])  # type: ignore[list-item]  # wrong on purpose
    with pytest.raises(TypeError, match="takes a string, a list of chat messages"):
        ScriptedChatModel([]).astream(42)


@given(
    pieces=st.lists(
        st.one_of(st.text(max_size=4), st.integers(0, 2)),
        min_size=TEXT_BLOCK - 1,
        max_size=3 * TEXT_BLOCK,
    ),
    many=st.booleans(),
)
def test_a_models_message_is_every_piece_it_streamed_in_order(
    pieces: list[str | int], many: bool
) -> None:
    # Text pieces, with tool-call chunks (no text) between them, sent one by one or in
    # runs: the message has all the text, though the sink keeps it joined in blocks.
    chunks = [
        AssistantMessageChunk(piece)
        if isinstance(piece, str)
        else AssistantMessageChunk(tool_call_chunks=(ToolCallChunk(piece, args="x"),))
        for piece in pieces
    ]

    class Pieces(ScriptedChatModel):
        async def generate(self, request: ChatRequest, sink: ChunkSink) -> None:
            if many:
                for start in range(0, len(chunks), 7):
                    await sink.send_many(chunks[start : start + 7])
            else:
                for chunk in chunks:
                    await sink.send(chunk)
            assert len(sink._text) < TEXT_BLOCK  # the rest is joined

    async def main() -> AssistantMessage:
        return await Pieces([ScriptedTurn("")]).ainvoke("go")

    message = trio.run(main)
    assert message.content == "".join(p for p in pieces if isinstance(p, str))


def test_a_models_message_carries_every_field_its_chunks_and_model_give() -> None:
    # ChunkSink.message builds the message field by field (not with attrs.evolve): a
    # field added to AssistantMessage must be added there too, which this notices.
    chunks = [
        AssistantMessageChunk("Hi"),
        AssistantMessageChunk(
            tool_call_chunks=(ToolCallChunk(0, "c1", "f", '{"a": 1}'),), id="srv-1"
        ),
        AssistantMessageChunk(tool_call_chunks=(ToolCallChunk(1, "c2", "g", "{oops"),)),
        AssistantMessageChunk(finish_reason="tool_calls", usage=Usage(1, 2, 3)),
    ]

    class Every(ScriptedChatModel):
        async def generate(self, request: ChatRequest, sink: ChunkSink) -> None:
            for chunk in chunks:
                await sink.send(chunk)

    async def main() -> AssistantMessage:
        return await Every([ScriptedTurn("")], name="every").ainvoke("go")

    message = trio.run(main)
    for field in attrs.fields(AssistantMessage):  # each one set from the run
        assert getattr(message, field.name) != field.default, field.name
    assert message.content == "Hi"
    assert message.tool_calls == (ToolCall(id="c1", name="f", args={"a": 1}),)
    assert [c.id for c in message.invalid_tool_calls] == ["c2"]
    assert message.usage == Usage(1, 2, 3)
    assert message.finish_reason == "tool_calls"
    assert message.id == "srv-1"
    assert message.model_name == "every"
