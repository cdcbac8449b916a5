"""The HTTP edge over real HTTP on 127.0.0.1: every protocol, the run endpoints, bad
input, and how runs end when clients go away. AG-UI events are validated by the
``ag-ui-protocol`` package's own types."""

from __future__ import annotations

import json
import random
import subprocess
from typing import Any

import pytest
import trio
from ag_ui.core import Event, EventType
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from actors import Agent, ScriptedChatModel, ScriptedTurn
from actors._demo import make_cat_agent
from actors.testing import check_events
from protocol import AssistantMessageChunk, CompactDecoder, RunInfo, StreamEvent, converter

from .sse_client import SSE, first_line, iter_sse, read_sse, serving, stream_then_sigterm

QUESTION = {"input": "where is the cat hiding? what items are in that location?"}
AG_UI_EVENT: TypeAdapter[Any] = TypeAdapter(Event)


def cat(**kw: Any) -> Agent:
    return make_cat_agent(random.Random(1), **kw)


async def _stream(served: Any, body: dict[str, Any], **kw: Any) -> tuple[Any, list[Any]]:
    async with served.client.stream("POST", "/runs/stream", json=body, **kw) as response:
        events = await read_sse(response) if response.status_code == 200 else []
        return response, events


async def test_events_are_langchain_v2_dicts_with_positions() -> None:
    async with serving(cat(nested=True)) as served:
        response, events = await _stream(served, QUESTION)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
    dicts = [e.json() for e in events]
    assert all(d["event"] == e.event for d, e in zip(dicts, events, strict=True))
    assert dicts[0]["event"] == "on_chain_start" and dicts[0]["name"] == "Agent"
    assert dicts[-1]["event"] == "on_chain_end"
    assert set(dicts[0]) == {"event", "name", "run_id", "parent_ids", "tags", "metadata", "data"}
    models = {d["run_id"]: d["name"] for d in dicts if d["event"] == "on_chat_model_start"}
    assert "Get Items LLM" in models.values()  # the model inside the tool streams too
    for run_id in models:
        chunks = [
            converter.structure(d["data"]["chunk"], AssistantMessageChunk)
            for d in dicts
            if d["event"] == "on_chat_model_stream" and d["run_id"] == run_id
        ]
        end = next(d for d in dicts if d["event"] == "on_chat_model_end" and d["run_id"] == run_id)
        assert "".join(c.content for c in chunks) == end["data"]["output"]["content"]
    tools = [d for d in dicts if d["event"] == "on_tool_start"]
    assert all(d["metadata"]["tool_call_id"].startswith("call_") for d in tools)
    assert response.headers["x-troupe-run-id"] == dicts[0]["run_id"]


async def test_compact_records_decode_to_the_events_of_the_events_protocol() -> None:
    async with serving(cat(nested=True)) as served:
        _, plain = await _stream(served, QUESTION)
        response, frames = await _stream(served, {**QUESTION, "protocol": "compact"})
        resumed_from = len(frames) // 2
        async with served.client.stream(
            "GET",
            f"/runs/{response.headers['x-troupe-run-id']}/stream?protocol=compact",
            headers={"Last-Event-ID": str(resumed_from)},
        ) as joined:
            rest = await read_sse(joined)
    assert [int(f.id) for f in frames] == list(range(1, len(frames) + 1))
    decoder = CompactDecoder()
    events = [e for f in frames for r in f.json() if (e := decoder.decode(r)) is not None]
    check_events(events)
    dicts = [converter.unstructure(e, StreamEvent) for e in events]
    expected = [e.json() for e in plain]
    assert len(dicts) == len(expected)
    for got, want in zip(dicts, expected, strict=True):
        assert {k: got[k] for k in ("event", "name", "tags", "metadata")} == {
            k: want[k] for k in ("event", "name", "tags", "metadata")
        }
    # A client that resumes gets each run's identity again, first time it meets the run.
    again = CompactDecoder()
    resumed = [e for f in rest for r in f.json() if (e := again.decode(r)) is not None]
    assert [converter.unstructure(e, StreamEvent) for e in resumed] == dicts[resumed_from:]
    # Tokens are the small records: far fewer bytes than the v2 dicts.
    assert sum(len(f.data) for f in frames) * 2 < sum(len(e.data) for e in plain)


async def test_ag_ui_events_pass_ag_ui_protocols_own_types() -> None:
    async with serving(cat(nested=True)) as served:
        _, events = await _stream(served, QUESTION, params={"protocol": "ag-ui"})
    parsed = [AG_UI_EVENT.validate_python(e.json()) for e in events]  # raises if invalid
    types = [p.type for p in parsed]
    assert types[0] == EventType.RUN_STARTED and types[-1] == EventType.RUN_FINISHED
    assert types.count(EventType.STEP_STARTED) == types.count(EventType.STEP_FINISHED)
    started = [p.tool_call_id for p in parsed if p.type == EventType.TOOL_CALL_START]
    results = [p.tool_call_id for p in parsed if p.type == EventType.TOOL_CALL_RESULT]
    assert started == results and len(started) == 2  # each call's result, paired by id
    text = "".join(p.delta for p in parsed if p.type == EventType.TEXT_MESSAGE_CONTENT)
    assert "The cat is" in text and "socks" in text
    # AG-UI's state is the frontend's, never Troupe's run log: none was sent, none comes
    assert EventType.STATE_SNAPSHOT not in types and EventType.STATE_DELTA not in types
    assert parsed[-1].result["output"].startswith("The cat is")


async def test_the_ui_message_stream_is_marked_and_done() -> None:
    async with serving(cat()) as served:
        response, events = await _stream(served, QUESTION, params={"protocol": "ui-message-stream"})
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert events[-1].data == "[DONE]"
    parts = [e.json() for e in events[:-1]]
    kinds = [p["type"] for p in parts]
    assert kinds[0] == "start" and kinds[-1] == "finish"
    assert kinds.count("start-step") == kinds.count("finish-step") == 3
    outputs = [p for p in parts if p["type"] == "tool-output-available"]
    inputs = [p for p in parts if p["type"] == "tool-input-available"]
    assert [o["toolCallId"] for o in outputs] == [i["toolCallId"] for i in inputs]


async def test_a_failed_run_ends_each_protocol_with_its_error_form() -> None:
    broken = Agent(ScriptedChatModel([ScriptedTurn("half", error="the model fell over")]))
    async with serving(broken) as served:
        _, events = await _stream(served, {"input": "?"})
        _, ag_ui = await _stream(served, {"input": "?"}, params={"protocol": "ag-ui"})
        _, ui = await _stream(served, {"input": "?"}, params={"protocol": "ui-message-stream"})
    assert events[-2].event == "on_chain_error" and events[-1].event == "error"
    assert "fell over" in events[-1].json()["error"]
    last = AG_UI_EVENT.validate_python(ag_ui[-1].json())
    assert last.type == EventType.RUN_ERROR and "fell over" in last.message
    assert [e.json()["type"] for e in ui[-3:-1]] == ["error", "finish"]


async def test_wait_returns_the_output() -> None:
    async with serving({"cat": cat()}) as served:
        response = await served.client.post("/runs/wait", json={"performer": "cat", **QUESTION})
    body = response.json()
    assert response.status_code == 200 and body["status"] == "ok"
    assert body["output"]["output"].startswith("The cat is")


async def test_performers_and_health() -> None:
    async with serving({"cat": cat(), "model": ScriptedChatModel([])}) as served:
        performers = (await served.client.get("/performers")).json()
        health = (await served.client.get("/health")).json()
    assert [(p["name"], p["kind"]) for p in performers] == [
        ("cat", "chain"),
        ("model", "chat_model"),
    ]
    assert health == {"status": "ok", "live_runs": 0}


async def test_a_detached_run_is_joined_and_resumed_from_last_event_id() -> None:
    async with serving(cat(token_delay=0.01), replay=1000) as served:
        started = await served.client.post("/runs", json={**QUESTION, "detached": True})
        assert started.status_code == 202
        run_id = started.json()["run_id"]
        async with served.client.stream("GET", f"/runs/{run_id}/stream") as response:
            first = await read_sse(response)
        async with served.client.stream(
            "GET", f"/runs/{run_id}/stream", headers={"Last-Event-ID": "3"}
        ) as response:
            resumed = await read_sse(response)
        last = int(first[-1].id or "")  # the finished run is kept for late readers
        beyond = await served.client.get(
            f"/runs/{run_id}/stream", headers={"Last-Event-ID": str(last + 1)}
        )
        async with served.client.stream(
            "GET", f"/runs/{run_id}/stream", headers={"Last-Event-ID": str(last)}
        ) as response:
            nothing_after_the_last = await read_sse(response)
    assert [e.id for e in resumed] == [e.id for e in first[3:]]  # the same events, from 4
    assert first[-1].event == "on_chain_end"
    # A position no client was ever sent is refused, not answered with an empty stream
    # (the generated clients of test_serve_chaos.py found that).
    assert beyond.status_code == 422
    assert beyond.json()["field"] == "Last-Event-ID" and str(last) in beyond.json()["error"]
    assert nothing_after_the_last == []


async def test_a_last_event_id_that_is_no_position_is_a_422() -> None:
    # str.isdigit says yes to a superscript two and int() says no; int() also refuses a
    # string of over 4,300 digits: each was a 500 with a traceback.
    async with serving(cat(token_delay=0.01)) as served:
        run_id = (await served.client.post("/runs", json={**QUESTION, "detached": True})).json()[
            "run_id"
        ]
        for bad in ("\u00b2", "9" * 5000, "-1", "1.5", ""):
            for path in (f"/runs/{run_id}/stream", "/viewer/events"):
                header = {b"Last-Event-ID": bad.encode("latin-1")}  # as a client may send it
                got = await served.client.get(path, headers=header)
                assert got.status_code == 422, (path, bad[:10], got.text[:200])
                assert got.json()["field"] == "Last-Event-ID"


async def test_cancel_ends_the_run_with_a_cancelled_terminal_event() -> None:
    async with serving(cat(token_delay=0.02)) as served:
        run_id = (await served.client.post("/runs", json={**QUESTION, "detached": True})).json()[
            "run_id"
        ]
        async with served.client.stream("GET", f"/runs/{run_id}/stream") as response:
            seen = []
            async for event in iter_sse(response):
                seen.append(event)
                if event.event == "on_chat_model_stream" and len(seen) == 3:
                    cancelled = await served.client.post(f"/runs/{run_id}/cancel")
                    assert cancelled.status_code == 202
        again = await served.client.post(f"/runs/{run_id}/cancel")
    assert seen[-2].event == "on_chain_error" and seen[-2].json()["data"]["error"] == "cancelled"
    assert seen[-1].event == "error" and again.status_code == 409


@pytest.mark.parametrize("heartbeat", [15.0, 0.001])
async def test_a_client_that_goes_away_cancels_its_run(heartbeat: float) -> None:
    # One task per stream both pings and watches for the client: with pings due all
    # the time, the client's leaving is still seen.
    async with serving(cat(token_delay=0.02), heartbeat=heartbeat) as served:
        async with served.client.stream("POST", "/runs/stream", json=QUESTION) as response:
            async for _ in iter_sse(response):
                break
        runtime = served.app.state.troupe.runtime
        with trio.fail_after(5):
            while runtime.open_runs or served.app.state.troupe.runs.live():  # noqa: ASYNC110  # polls another process's view
                await trio.sleep(0.01)


async def _stream_with_comments(agent: Agent, heartbeat: float) -> tuple[list[SSE], list[str]]:
    """A run of ``agent`` streamed whole by a server with that heartbeat: its events,
    and the comment lines (pings) read between them."""
    comments: list[str] = []
    async with (
        serving(agent, heartbeat=heartbeat) as served,
        served.client.stream("POST", "/runs/stream", json={"input": "?"}) as response,
    ):
        return await read_sse(response, comments), comments


async def test_idle_streams_get_heartbeats() -> None:
    slow = Agent(ScriptedChatModel([ScriptedTurn("a b c")], token_delay=0.1))
    events, comments = await _stream_with_comments(slow, heartbeat=0.02)
    assert comments and all(c == ": ping" for c in comments)
    assert events[-1].event == "on_chain_end"


async def test_heartbeats_racing_a_fast_stream_never_split_a_frame() -> None:
    # Pings fall between tokens. Tokens are two heartbeats apart: trio's waits are
    # whole milliseconds (epoll's), so closer, the two timers can lock in step and
    # every interval sees a write.
    words = [f"w{i}" for i in range(300)]
    fast = Agent(ScriptedChatModel([ScriptedTurn(tokens=tuple(words))], token_delay=0.002))
    events, comments = await _stream_with_comments(fast, heartbeat=0.0005)
    assert comments and all(c == ": ping" for c in comments)
    streamed = [
        e.json()["data"]["chunk"]["content"]
        for e in events
        if e.event == "on_chat_model_stream" and e.json()["data"]["chunk"]["content"]
    ]
    assert streamed == words  # every frame whole, in order, pings only between them
    assert [int(e.id) for e in events if e.id] == list(range(1, len(events) + 1))
    assert events[-1].event == "on_chain_end"


async def test_a_client_that_stops_reading_holds_back_only_its_own_run() -> None:
    talker = Agent(ScriptedChatModel([ScriptedTurn("word " * 20000)]), name="Talker")
    async with (
        serving({"talker": talker, "cat": cat()}) as served,
        served.client.stream(
            "POST", "/runs/stream", json={"performer": "talker", "input": "?"}
        ) as stalled,
    ):
        await stalled.aiter_lines().__anext__()  # read a line, then stop reading
        for _ in range(5):  # other runs go on meanwhile
            done = await served.client.post("/runs/wait", json={"performer": "cat", **QUESTION})
            assert done.json()["status"] == "ok"


@pytest.mark.parametrize(
    ("body", "params", "status", "field"),
    [
        (b"{not json", {}, 400, "body"),
        (b"[1, 2]", {}, 422, "body"),
        (json.dumps({"input": "?"}).encode(), {"protocol": "smoke-signals"}, 422, "protocol"),
        (json.dumps({"input": 42}).encode(), {}, 422, "input"),
        (json.dumps({"input": "?", "config": {"tags": "x"}}).encode(), {}, 422, "config"),
        (json.dumps({"input": "?", "config": {"nope": 1}}).encode(), {}, 422, "config"),
        (json.dumps({"input": "?", "performer": "dog"}).encode(), {}, 404, None),
        (json.dumps({"input": "?", "run_id": 5}).encode(), {}, 422, "run_id"),
        (json.dumps({"messages": []}).encode(), {}, 422, "messages"),
        (b'{"input": "' + b"x" * 2000 + b'"}', {}, 413, "body"),
        # found by test_serve_fuzz.py: each was a 500, or taken the wrong way
        (json.dumps({"input": "?", "protocol": [None]}).encode(), {}, 422, "protocol"),
        (json.dumps({"input": "?", "detached": "false"}).encode(), {}, 422, "detached"),
    ],
    ids=[
        "not-json",
        "not-object",
        "protocol",
        "input-type",
        "config-type",
        "config-key",
        "performer",
        "run-id",
        "no-user-message",
        "too-big",
        "protocol-not-a-string",
        "detached-not-a-boolean",
    ],
)
async def test_bad_requests_get_a_clear_4xx(
    body: bytes, params: dict[str, str], status: int, field: str | None
) -> None:
    async with serving(cat(), max_body=1000) as served:
        response = await served.client.post(
            "/runs/stream",
            content=body,
            params=params,
            headers={"content-type": "application/json"},
        )
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["error"] and payload.get("field") == field
    assert "Traceback" not in response.text


class _Picky(ScriptedChatModel):
    """A user's model that refuses inputs with ValueError (the contract says TypeError)."""

    def coerce_input(self, value: Any) -> Any:
        if value == "nonsense":
            raise ValueError("that is no question")
        return super().coerce_input(value)


async def test_an_input_refused_with_value_error_is_a_422_on_input() -> None:
    async with serving(_Picky([ScriptedTurn("ok")])) as served:
        refused = await served.client.post("/runs/wait", json={"input": "nonsense"})
        taken = await served.client.post("/runs/wait", json={"input": "a question"})
    assert refused.status_code == 422, refused.text
    assert refused.json() == {"error": "that is no question", "field": "input"}
    assert taken.status_code == 200 and taken.json()["status"] == "ok"


async def test_detached_is_a_boolean_not_any_truthy_value() -> None:
    # "false" is a string, and was taken as true: a run the client meant to follow
    # went on without it.
    async with serving(cat()) as served:
        refused = await served.client.post("/runs", json={**QUESTION, "detached": "false"})
        also = await served.client.post("/runs/wait", json={**QUESTION, "detached": 1})
    assert refused.status_code == also.status_code == 422
    assert refused.json()["field"] == also.json()["field"] == "detached"


async def test_a_run_id_in_use_is_a_conflict() -> None:
    async with serving(cat(token_delay=0.05)) as served:
        first = await served.client.post(
            "/runs", json={**QUESTION, "detached": True, "run_id": "r1"}
        )
        assert first.status_code == 202
        second = await served.client.post("/runs/stream", json={**QUESTION, "run_id": "r1"})
    assert second.status_code == 409 and second.json()["field"] == "run_id"


async def test_a_token_guards_everything_but_health() -> None:
    async with serving(cat(), token="s3cret") as served:
        assert (await served.client.get("/performers")).status_code == 401
        wrong = {"authorization": "Bearer nope"}
        assert (await served.client.get("/performers", headers=wrong)).status_code == 401
        right = {"authorization": "Bearer s3cret"}
        assert (await served.client.get("/performers", headers=right)).status_code == 200
        assert (await served.client.get("/health")).status_code == 200


async def test_cors_is_off_unless_an_origin_is_given() -> None:
    origin = {"origin": "http://localhost:3000"}
    async with serving(cat()) as served:
        plain = await served.client.get("/performers", headers=origin)
    async with serving(cat(), cors_origins=["http://localhost:3000"]) as served:
        allowed = await served.client.get("/performers", headers=origin)
    assert "access-control-allow-origin" not in plain.headers
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"


def test_bad_app_arguments_fail_at_once() -> None:
    from actors.serve import asgi_app

    with pytest.raises(TypeError, match="serve a performer"):
        asgi_app("agent")  # type: ignore[arg-type]  # wrong on purpose
    with pytest.raises(ValueError, match="heartbeat"):
        asgi_app(cat(), heartbeat=0)
    with pytest.raises(ValueError, match="max_body"):
        asgi_app(cat(), max_body=True)


async def test_sigterm_drains_runs_in_flight_then_exits() -> None:
    from .test_demo import TROUPE

    process = await trio.lowlevel.open_process(
        [*TROUPE, "serve", "--port", "0", "--delay", "0.02"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = (await first_line(process)).split("serving on ")[1].strip()
        seen, code = await stream_then_sigterm(process, url, QUESTION, seconds=20)
    finally:
        process.kill()
    assert seen[-2].event == "on_chain_error" and seen[-2].json()["data"]["error"] == "cancelled"
    assert seen[-1].event == "error" and code == 0


async def test_a_client_that_leaves_a_wait_cancels_its_run() -> None:
    async with serving(cat(token_delay=0.02)) as served:
        with trio.move_on_after(0.2):
            await served.client.post("/runs/wait", json=QUESTION)
        runtime = served.app.state.troupe.runtime
        with trio.fail_after(5):
            while runtime.open_runs or served.app.state.troupe.runs.live():  # noqa: ASYNC110  # the server's view
                await trio.sleep(0.01)


def test_serve_names_what_it_cannot_serve() -> None:
    from actors.serve import load_target

    with pytest.raises(ValueError, match="MODULE:ATTR"):
        load_target("justname")
    with pytest.raises(ValueError, match="cannot import 'no_such_module'"):
        load_target("no_such_module:agent")
    with pytest.raises(ValueError, match="has no 'nothing'"):
        load_target("actors._demo:nothing")
    with pytest.raises(ValueError, match="not a performer"):
        load_target("actors._demo:DEFAULT_QUESTION")
    assert isinstance(load_target("tests.test_serve:AGENT"), Agent)


AGENT = cat()


def test_a_server_freezes_what_start_up_made_out_of_the_collectors_sight() -> None:
    import gc

    from actors.serve._server import SERVER_GC_THRESHOLDS, tune_collector

    made_at_start_up: object = object.__new__(type("Kept", (), {}))
    thresholds = gc.get_threshold()
    try:
        tune_collector()
        assert gc.get_freeze_count() > 0
        assert not gc.is_tracked(made_at_start_up) or made_at_start_up not in gc.get_objects()
        young, middle, old = gc.get_threshold()
        assert (young, middle) == SERVER_GC_THRESHOLDS and old == thresholds[2]
        gc.set_threshold(50_000, 5, 10)  # a process tuned further is left as it is
        tune_collector()
        assert gc.get_threshold() == (50_000, 20, 10)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["serve", "--ray", "local"], "troupe serve --ray needs the 'ray' extra"),
        (["serve", "--ray-hosts", "2"], "--ray-hosts needs --ray ADDRESS"),
    ],
)
def test_serve_on_a_cluster_says_what_it_needs(argv: list[str], said: str) -> None:
    import sys

    # As where the ray extra is not installed (an import of it fails).
    code = (
        "import sys; sys.modules['ray'] = None; from actors.cli import main; "
        f"sys.exit(main({argv!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2 and said in done.stderr


@given(published=st.integers(0, 40), replay=st.integers(1, 12), asked=st.integers(0, 45))
def test_a_live_runs_replay_buffer_gives_the_events_after_a_position(
    published: int, replay: int, asked: int
) -> None:
    from actors.serve._runs import LiveRun

    live = LiveRun("r", None, replay)  # type: ignore[arg-type]  # the stream is not read here
    events = [
        StreamEvent("on_chain_stream", RunInfo("r", "n", "chain"), seq, chunk=seq)
        for seq in range(1, published + 1)
    ]
    assert [live.publish(event) for event in events] == list(range(1, published + 1))
    oldest = published - min(published, replay) + 1  # the oldest position still kept
    got = live.after(asked)
    if asked < published and oldest > asked + 1:
        assert got is None  # some of the events after it are gone
    else:
        assert got == [(p, events[p - 1]) for p in range(max(asked + 1, oldest), published + 1)]
