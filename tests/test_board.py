"""The run viewer's board and endpoints, without a browser: bounded history, events the
subscription dropped (the record is whole at the run's end), browsers that fall behind
the ring (told, then caught up), reconnection with Last-Event-ID, `troupe demo --web`."""

from __future__ import annotations

import json
import signal
import subprocess
from typing import Any

import attrs
import httpx
import pytest
import trio

from actors import Agent, ScriptedChatModel, ScriptedTurn
from actors._demo import make_cat_agent
from actors.serve import asgi_app
from actors.serve._board import RunBoard
from protocol import StreamEvent
from runtime import open_runtime

from .sse_client import first_line, iter_sse, serving


async def _events(agent: Any, question: str = "q") -> list[StreamEvent]:
    async with agent.astream_events(question) as stream:
        return [e async for e in stream]


async def test_the_board_keeps_a_bounded_history_of_whole_trees() -> None:
    board = RunBoard(history=2)
    roots = []
    for _ in range(3):
        events = await _events(make_cat_agent(nested=True))
        roots.append(events[0].run_id)
        for event in events:
            await board.on_event(event)
    assert list(board.roots) == roots[1:]  # the oldest tree is forgotten, whole
    assert all(r.root_id != roots[0] for r in board.runs.values())
    tree = board.tree(roots[2])
    assert tree is not None
    names = [run["name"] for run in tree]
    assert names[0] == "Agent" and "Get Items LLM" in names
    nested = next(run for run in tree if run["name"] == "Get Items LLM")
    get_items = next(run for run in tree if run["name"] == "get_items")
    assert nested["parent"] == get_items["id"] and nested["status"] == "ok"
    assert nested["text"] and nested["usage"]["output_tokens"] > 0
    record = board.record(get_items["id"])
    assert record is not None and record["start"]["event"] == "on_tool_start"
    assert record["end"]["status"] == "ok" and not record["events_dropped"]
    assert board.tree("nope") is None and board.record("nope") is None
    assert [run["id"] for run in board.recent()] == roots[:0:-1]  # newest first


async def test_a_run_with_dropped_events_is_whole_at_its_end() -> None:
    board = RunBoard()
    events = await _events(Agent(ScriptedChatModel([ScriptedTurn("a b c d e f g h")])))
    streamed = [e for e in events if e.event == "on_chat_model_stream"]
    for event in events:
        if event is not streamed[2]:  # the subscription dropped this one
            await board.on_event(event)
    model = next(r for r in board.runs.values() if r.kind == "chat_model")
    assert model.gaps
    end = next(m for _, m in board.ring if m["k"] == "end" and m["id"] == model.run_id)
    assert end["text"] == "a b c d e f g h"  # taken from the end event's output


async def test_a_browser_behind_the_ring_is_told_what_it_missed() -> None:
    board = RunBoard(ring=10)
    for event in await _events(make_cat_agent()):
        await board.on_event(event)
    assert board.seq > 10
    missed, items = board.after(0)
    assert missed == board.seq - 10 and len(items) == 10
    missed, items = board.after(board.seq - 3)
    assert missed == 0 and [s for s, _ in items] == [board.seq - 2, board.seq - 1, board.seq]
    assert board.after(board.seq) == (0, [])


async def test_the_events_endpoint_resumes_and_reports_gaps() -> None:
    async with open_runtime() as rt, serving(make_cat_agent(), runtime=rt) as served:
        board = served.app.state.troupe.board
        board.ring = board.ring.__class__(maxlen=5)
        client = served.client
        page = await client.get("/")
        assert page.status_code == 200 and "viewer/viewer.js" in page.text
        script = await client.get("/viewer/viewer.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert (await client.get("/viewer/nope.js")).status_code == 404
        await client.post("/runs/wait", json={"input": "q"})
        runs = (await client.get("/viewer/runs")).json()
        assert len(runs["runs"]) == 1 and runs["runs"][0]["status"] == "ok"
        root = runs["runs"][0]["id"]
        tree = (await client.get(f"/viewer/runs/{root}/tree")).json()["runs"]
        assert tree[0]["kind"] == "chain" and len(tree) == 6
        assert (await client.get("/viewer/runs/nope/tree")).status_code == 404
        # reconnecting from position 1: most of it is gone from the ring of 5
        async with client.stream("GET", "/viewer/events", headers={"last-event-id": "1"}) as got:
            seen: list[dict[str, Any]] = []
            with trio.move_on_after(2):
                async for event in iter_sse(got):
                    seen.append(json.loads(event.data))
                    if len(seen) == 7:
                        break
        assert seen[0]["k"] == "hello" and seen[0]["resumed"] == "1"
        assert seen[1] == {"k": "gap", "missed": runs["seq"] - 5 - 1}
        assert [m["k"] for m in seen[2:]][-1] == "end"
        bad = await client.get("/viewer/events", headers={"last-event-id": "x"})
        assert bad.status_code == 422


async def test_a_page_open_across_a_server_restart_starts_afresh() -> None:
    # Its browser reconnects with the last id of the old process's board, far past this
    # one's: it is greeted as a new page (which loads the runs) and then gets the new
    # runs' messages, rather than waiting for this board to count up to the old id.
    async with open_runtime() as rt, serving(make_cat_agent(), runtime=rt) as served:
        client = served.client
        seen: list[dict[str, Any]] = []
        headers = {"last-event-id": "5000"}
        async with client.stream("GET", "/viewer/events", headers=headers) as got:
            with trio.fail_after(5):
                async for event in iter_sse(got):
                    seen.append(json.loads(event.data))
                    if seen[-1]["k"] == "hello":
                        await client.post("/runs/wait", json={"input": "q"})
                    if seen[-1]["k"] == "end":  # a run of the new process has ended
                        break
    assert seen[0]["k"] == "hello" and seen[0]["resumed"] is None
    assert seen[1]["k"] == "run" and seen[-1]["k"] == "end"


async def test_a_token_protects_the_viewer_too() -> None:
    async with open_runtime() as rt, serving(make_cat_agent(), runtime=rt, token="s3cret") as on:
        assert (await on.client.get("/")).status_code == 401
        assert (await on.client.get("/?token=s3cret")).status_code == 200
        assert (await on.client.get("/viewer/runs?token=wrong")).status_code == 401
        assert (await on.client.post("/runs/wait?token=s3cret", json={})).status_code == 401


async def test_an_app_that_stops_stops_watching_a_runtime_that_goes_on() -> None:
    async with open_runtime() as rt:
        async with serving(make_cat_agent(), runtime=rt) as served:
            board = served.app.state.troupe.board
            await served.client.post("/runs/wait", json={"input": "q"})
        seen = board.seq
        assert seen > 0
        await make_cat_agent().ainvoke("q")
        await trio.sleep(0.05)
        assert board.seq == seen  # the board no longer watches, and holds nothing up


def test_a_bad_history_is_refused() -> None:
    with pytest.raises(ValueError, match="history must be a positive integer"):
        asgi_app(make_cat_agent(), history=0)


async def test_troupe_demo_web_serves_the_viewer_and_runs_the_cat() -> None:
    from .test_demo import TROUPE

    process = await trio.lowlevel.open_process(
        [*TROUPE, "demo", "--web", "--port", "0", "--delay", "0.001"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = (await first_line(process)).split("the run viewer is at ")[1].split()[0]
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert "Troupe" in (await client.get("")).text
            with trio.fail_after(20):
                while True:
                    runs = (await client.get("viewer/runs")).json()["runs"]
                    if any(r["status"] == "ok" for r in runs):
                        break
                    await trio.sleep(0.1)
        process.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            code = await process.wait()
    finally:
        process.kill()
    assert code in (0, 130)


def test_events_from_json_keep_the_board_working() -> None:
    # the board reads events' data, which a custom payload or odd output must not break
    from actors.serve._board import preview

    assert preview(None) is None
    assert preview("x" * 5000).endswith("(5,000 characters)")
    assert preview({"a": object()})["a"].startswith("<object object")
    assert preview(attrs.make_class("Odd", ["x"])(1)).startswith("Odd(")
