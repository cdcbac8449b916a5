"""A token's JSON on the wire: the fast path writes what the converter writes."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from actors.serve import PROTOCOLS
from actors.serve._wire import chunk_json, wire_json
from protocol import AssistantMessageChunk, RunInfo, StreamEvent, ToolCallChunk, Usage, converter

chunks = st.builds(
    AssistantMessageChunk,
    content=st.text(),  # lone surrogates included: orjson refuses them
    tool_call_chunks=st.lists(
        st.builds(ToolCallChunk, name=st.none() | st.text(max_size=5), args=st.text(max_size=5)),
        max_size=2,
    ).map(tuple),
    usage=st.none() | st.builds(Usage, st.integers(0, 9), st.integers(0, 9), st.integers(0, 9)),
    finish_reason=st.none() | st.sampled_from(["stop", "tool_calls"]),
    id=st.none() | st.text(max_size=4),
)


@given(chunks)
def test_a_chunks_json_is_the_converters_whichever_path_writes_it(
    chunk: AssistantMessageChunk,
) -> None:
    written = chunk_json(chunk)
    assert written == wire_json(chunk)
    if written.startswith(b"{"):  # not a repr: it reads back as the same chunk
        assert converter.structure(json.loads(written), AssistantMessageChunk) == chunk


@given(st.text())
def test_a_token_event_on_the_events_protocol_reads_back_whole(text: str) -> None:
    info = RunInfo("run-1", "Model", "chat_model", ("root-1",), ("t",), {"k": 1})
    chunk = AssistantMessageChunk(text)
    event = StreamEvent("on_chat_model_stream", info, 3, None, None, None, chunk)
    encoder = PROTOCOLS["events"]("root-1", "root-1")
    for _ in range(2):  # the first of a run's tokens writes its identity; others reuse it
        (frame,) = encoder.encode(7, event)
        head, _, data = frame.partition(b"data: ")
        assert head == b"id: 7\nevent: on_chat_model_stream\n"
        decoded = json.loads(data)
        assert decoded["run_id"] == "run-1" and decoded["metadata"] == {"k": 1}
        expected = json.loads(wire_json(chunk))
        assert decoded["data"] == {"chunk": expected}
