"""The run viewer's board and endpoints, without a browser: bounded history, events the
subscription dropped (the record is whole at the run's end), browsers that fall behind
the ring (told, then caught up), reconnection with Last-Event-ID, the token (the page is
open, its data is not), who may see which runs, `troupe demo --web`."""

from __future__ import annotations

import json
import signal
import subprocess
from typing import Any

import attrs
import httpx
import pytest
import trio
from starlette.requests import Request

from actors import Agent, ScriptedChatModel, ScriptedTurn
from actors._demo import make_cat_agent
from actors.serve import Identity, asgi_app
from actors.serve._board import MESSAGE_TEXT, RunBoard
from protocol import StreamEvent
from runtime import RuntimeClosedError, open_runtime

from .sse_client import first_line, iter_sse, serving


async def _events(agent: Any, question: str = "q") -> list[StreamEvent]:
    async with agent.astream_events(question) as stream:
        return [e async for e in stream]


def _messages(board: RunBoard) -> list[dict[str, Any]]:
    """The messages in the board's ring, as the browsers read them."""
    return [json.loads(data) for _, _, data in board.ring]


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


async def test_model_runs_carry_their_prompt_and_tool_calls_and_roots_what_was_asked() -> None:
    board = RunBoard()
    for event in await _events(make_cat_agent(nested=True), "where is the cat?"):
        await board.on_event(event)
    root_id = next(iter(board.roots))
    tree = board.tree(root_id)
    assert tree is not None
    models = [run for run in tree if run["kind"] == "chat_model" and run["name"] != "Get Items LLM"]
    first, second, last = models
    assert first["prompt"] == [{"role": "user", "content": "where is the cat?"}]
    assert [c["name"] for c in first["tool_calls"]] == ["where_cat_is_hiding"]
    assert [c["name"] for c in second["tool_calls"]] == ["get_items"]
    assert second["tool_calls"][0]["args"] == {"place": second["tool_calls"][0]["args"]["place"]}
    roles = [m["role"] for m in last["prompt"]]
    assert roles == ["user", "assistant", "tool", "assistant", "tool"]
    assert last["prompt"][1]["tool_calls"][0]["name"] == "where_cat_is_hiding"
    assert last["prompt"][2]["name"] == "where_cat_is_hiding"
    assert "tool_calls" not in last  # the answer calls no tool
    assert all("prompt" not in run for run in tree if run["kind"] != "chat_model")
    [summary] = board.recent()
    assert summary["input"] == "where is the cat?" and summary["error"] is None
    broken = Agent(ScriptedChatModel([ScriptedTurn("half", error="the model fell over")]))
    with pytest.raises(Exception, match="the model fell over"):
        async with broken.astream_events("x" * 1000) as stream:
            async for event in stream:
                await board.on_event(event)
    failed = board.recent()[0]
    assert failed["status"] == "error" and "the model fell over" in failed["error"]
    assert failed["input"] == "x" * 240 + "..."  # what was asked, cut for the list


def test_a_long_prompt_shows_its_last_messages_each_cut() -> None:
    from actors.serve._board import PROMPT_CHARS, PROMPT_SHOWN, prompt_of
    from protocol import UserMessage

    prompt = prompt_of({"messages": [UserMessage(f"{i} " + "y" * 5000) for i in range(40)]})
    assert prompt is not None and len(prompt) == PROMPT_SHOWN + 1
    assert prompt[0] == {"role": "...", "content": f"{40 - PROMPT_SHOWN} earlier messages"}
    assert prompt[1]["content"].startswith(f"{40 - PROMPT_SHOWN} y")
    assert all(len(m["content"]) < PROMPT_CHARS + 60 for m in prompt)
    assert prompt_of("not messages") is None


async def test_a_run_with_dropped_events_is_whole_at_its_end() -> None:
    board = RunBoard()
    answer = "a b c d e f g h " * 1000  # longer than one message carries
    events = await _events(Agent(ScriptedChatModel([ScriptedTurn(answer)])))
    streamed = [e for e in events if e.event == "on_chat_model_stream"]
    for event in events:
        if event is not streamed[2]:  # the subscription dropped this one
            await board.on_event(event)
    model = next(r for r in board.runs.values() if r.kind == "chat_model")
    assert model.gaps
    end = next(m for m in _messages(board) if m["k"] == "end" and m["id"] == model.run_id)
    # taken from the end event's output: its end, as one message carries it
    assert end["text"] == answer[-MESSAGE_TEXT:] and end["text_chars"] == len(answer)
    tree = board.tree(model.root_id)  # and the whole of it in a page's snapshot
    assert tree is not None
    [shown] = [run for run in tree if run["id"] == model.run_id]
    assert shown["text"] == answer and shown["text_chars"] == len(answer)


async def test_a_browser_behind_the_ring_is_told_what_it_missed() -> None:
    board = RunBoard(ring=10)
    for event in await _events(make_cat_agent()):
        await board.on_event(event)
    assert board.seq > 10
    missed, items = board.after(0)
    assert missed == board.seq - 10 and len(items) == 10
    missed, items = board.after(board.seq - 3)
    assert missed == 0 and [s for s, *_ in items] == [board.seq - 2, board.seq - 1, board.seq]
    missed, items = board.after(0, 4)  # a reader far behind takes what it asks for
    assert missed == board.seq - 10 and [s for s, *_ in items] == list(
        range(board.seq - 9, board.seq - 5)
    )
    assert board.after(board.seq) == (0, [])


async def test_the_events_endpoint_resumes_and_reports_gaps() -> None:
    async with open_runtime() as rt, serving(make_cat_agent(), runtime=rt) as served:
        board = served.app.state.troupe.board
        board.ring_limit = 5
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


async def test_a_token_protects_the_viewers_data_and_not_its_page() -> None:
    # The page and its files hold no data, and a browser sends no header of the page's
    # with a stylesheet or a script: they are open. Everything the page reads is not.
    async with open_runtime() as rt, serving(make_cat_agent(), runtime=rt, token="s3cret") as on:
        client, bearer = on.client, {"authorization": "Bearer s3cret"}
        for path in ("/", "/viewer/viewer.js", "/viewer/viewer.css"):
            assert (await client.get(path)).status_code == 200, path
        assert (await client.get("/viewer/nope.js")).status_code == 404
        assert (await client.post("/runs/wait", json={"input": "q"}, headers=bearer)).is_success
        root = (await client.get("/viewer/runs", headers=bearer)).json()["runs"][0]["id"]
        data = ["/viewer/runs", f"/viewer/runs/{root}/tree", f"/viewer/runs/{root}/record"]
        for path in data:
            assert (await client.get(path)).status_code == 401, path
            assert (
                await client.get(path, headers={"authorization": "Bearer x"})
            ).status_code == 401
            assert (await client.get(path, headers=bearer)).status_code == 200, path
        assert (await client.get("/viewer/events")).status_code == 401
        async with client.stream("GET", "/viewer/events", headers=bearer) as got:
            assert got.status_code == 200
            async for event in iter_sse(got):
                assert event.json()["k"] == "hello"
                break
        assert (await on.client.post("/runs/wait", json={"input": "q"})).status_code == 401


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
    assert preview("x" * 5000).endswith("... [cut: 5,000 characters in all]")
    assert preview({"a": object()})["a"].startswith("<object object")
    assert preview(attrs.make_class("Odd", ["x"])(1)).startswith("Odd(")


# -- who may see what ---------------------------------------------------------------------


def _by_user(request: Request) -> Identity | None:
    user = request.headers.get("x-user")
    return None if user is None else Identity(user, sees_all=user == "admin")


async def _read_messages(
    client: httpx.AsyncClient, headers: dict[str, str], quiet: float = 0.3
) -> list[dict[str, Any]]:
    """The board's messages a client is sent from the start of the ring (read until
    none came for ``quiet`` seconds)."""
    seen: list[dict[str, Any]] = []
    async with client.stream(
        "GET", "/viewer/events", headers={**headers, "last-event-id": "0"}
    ) as response:
        assert response.status_code == 200
        events = iter_sse(response)
        while True:
            with trio.move_on_after(quiet):
                seen.append((await anext(events)).json())
                continue
            return seen


async def test_each_identity_sees_only_its_own_runs_in_the_viewer() -> None:
    alice, bob, admin = ({"x-user": name} for name in ("alice", "bob", "admin"))
    async with (
        open_runtime() as rt,
        serving({"cat": make_cat_agent(nested=True)}, runtime=rt, auth=_by_user) as served,
    ):
        client = served.client
        for who, run_id in ((alice, "alices"), (bob, "bobs")):
            done = await client.post(
                "/runs/wait", json={"input": "q", "run_id": run_id}, headers=who
            )
            assert done.status_code == 200, done.text
        await make_cat_agent().ainvoke("q")  # the server's own run: nobody's
        await trio.sleep(0.2)  # the board takes its events 20 times a second
        board = served.app.state.troupe.board
        ours = next(r.run_id for r in board.roots.values() if r.owner is None)
        child = {
            owner: next(r.run_id for r in board.runs.values() if r.owner == owner and r.parent_id)
            for owner in ("alice", "bob")
        }

        def listed(runs: httpx.Response) -> set[str]:
            assert runs.status_code == 200
            return {run["id"] for run in runs.json()["runs"]}

        assert listed(await client.get("/viewer/runs", headers=alice)) == {"alices"}
        assert listed(await client.get("/viewer/runs", headers=bob)) == {"bobs"}
        assert listed(await client.get("/viewer/runs", headers=admin)) == {"alices", "bobs", ours}

        async def get(path: str, who: dict[str, str]) -> httpx.Response:
            return await client.get(path, headers=who)

        for who, mine, theirs in ((alice, "alices", "bobs"), (bob, "bobs", "alices")):
            name = who["x-user"]
            other = "bob" if name == "alice" else "alice"
            for path in ("/viewer/runs/{}/tree", "/viewer/runs/{}/record"):
                assert (await get(path.format(mine), who)).status_code == 200
                # another's run, the server's own, and no run at all: the same 404
                for run_id in (theirs, ours, "nobody"):
                    refused = await get(path.format(run_id), who)
                    assert refused.status_code == 404, (name, path, run_id)
                    assert refused.json() == {
                        "error": f"run {run_id!r} is not in the viewer's history"
                    }
            assert (await get(f"/viewer/runs/{child[name]}/record", who)).status_code == 200
            assert (await get(f"/viewer/runs/{child[other]}/record", who)).status_code == 404
            for path in (
                f"/viewer/runs/{theirs}/tree",
                f"/viewer/runs/{ours}/record",
                f"/viewer/runs/{child[other]}/record",
            ):
                assert (await get(path, admin)).status_code == 200

        def runs_in(messages: list[dict[str, Any]]) -> set[str]:
            return {m["root"] for m in messages if m["k"] == "run"}

        by_alice = await _read_messages(client, alice)
        by_bob = await _read_messages(client, bob)
        by_admin = await _read_messages(client, admin)
        assert by_alice[0]["k"] == "hello" and runs_in(by_alice) == {"alices"}
        assert runs_in(by_bob) == {"bobs"}
        assert runs_in(by_admin) == {"alices", "bobs", ours}
        alices_runs = {m["id"] for m in by_admin if m["k"] == "run" and m["root"] == "alices"}
        seen_by_bob = {m.get("id") for m in by_bob} - {None}
        assert not seen_by_bob & alices_runs  # no token, step or end of alice's either
        assert {m["k"] for m in by_alice} >= {"hello", "run", "tok", "end"}
        # without an identity: the page, and nothing else
        assert (await client.get("/")).status_code == 200
        for path in ("/viewer/runs", "/viewer/runs/alices/tree", "/viewer/events"):
            assert (await client.get(path)).status_code == 401, path


async def test_tokens_no_page_watches_are_one_message_posted_in_order() -> None:
    # With no page open, a run's tokens wait and go into the ring as one message (when
    # the board is read, or before its next message); a page watching gets one each.
    words = ("one ", "two ", "three")
    agent = Agent(ScriptedChatModel([ScriptedTurn(tokens=words)]), name="Words")
    events = await _events(agent)
    tokens = [e for e in events if e.phase == "stream"]
    end = next(i for i, e in enumerate(events) if e.phase == "end")
    for watchers in (0, 1):
        board = RunBoard()
        board.watchers = watchers
        for event in events[:end]:
            await board.on_event(event)
        seq = board.ring.first() or 0
        held = len(board.ring)
        assert board.seq == seq + len(board.ring) - 1  # read: the tokens are posted
        toks = [m for m in _messages(board) if m["k"] == "tok"]
        if watchers:
            assert held == len(board.ring)
            assert [m["text"] for m in toks] == list(words)
            assert [m["pos"] for m in toks] == [0, 4, 8]
        else:
            assert held == len(board.ring) - 1
            [tok] = toks
            assert tok["text"] == "".join(words) and tok["pos"] == 0
            assert tok["id"] == tokens[0].run_id
        for event in events[end:]:
            await board.on_event(event)
        kinds = [m["k"] for m in _messages(board)]
        assert kinds.index("end") > max(i for i, k in enumerate(kinds) if k == "tok")


async def test_a_runs_waiting_tokens_go_at_a_messages_worth_of_text() -> None:
    board = RunBoard()
    token = "x" * (MESSAGE_TEXT // 2 + 1)
    agent = Agent(ScriptedChatModel([ScriptedTurn(tokens=(token,) * 3)]), name="Long")
    events = await _events(agent)
    for event in events:
        await board.on_event(event)
    toks = [m for m in _messages(board) if m["k"] == "tok"]
    assert [m["text"] for m in toks] == [token] * 3  # two would not fit one message
    assert [m["pos"] for m in toks] == [0, len(token), 2 * len(token)]
    assert all(len(m["text"]) <= MESSAGE_TEXT for m in toks)


async def test_with_no_page_open_the_board_takes_a_runs_first_token_only() -> None:
    # The board's subscription takes every stream event only while a page watches:
    # a server with none spent a tenth of each token of a stream on it. The record is
    # whole at the run's end all the same (from its output), and not said to have
    # dropped anything.
    words = tuple(f"w{i} " for i in range(20))
    agent = Agent(ScriptedChatModel([ScriptedTurn(tokens=words)]), name="Words")
    taken: list[StreamEvent] = []
    async with open_runtime() as rt, serving(agent, runtime=rt) as served:
        board = served.app.state.troupe.board
        handle = board.on_event

        async def counted(event: StreamEvent) -> None:
            taken.append(event)
            await handle(event)

        board.on_event = counted  # the attachment's task calls the bound attribute
        assert board.taking == "first"
        await served.client.post("/runs/wait", json={"input": "q"})
        await trio.sleep(0.1)  # the board takes its events 20 times a second
        root = (await served.client.get("/viewer/runs")).json()["runs"][0]["id"]
        tree = (await served.client.get(f"/viewer/runs/{root}/tree")).json()["runs"]
    [model] = [run for run in tree if run["kind"] == "chat_model"]
    assert model["text"] == "".join(words) and model["text_chars"] == len("".join(words))
    streamed = [e for e in taken if e.phase == "stream" and e.run_id == model["id"]]
    assert [e.seq for e in streamed] == [1]
    record = board.record(model["id"])
    assert record is not None and not record["events_dropped"]
    end = next(m for m in _messages(board) if m["k"] == "end" and m["id"] == model["id"])
    assert end["text"] == "".join(words)  # a page that reads the ring later has it whole


async def test_a_page_that_comes_mid_run_sees_its_text_so_far_and_every_token_after() -> None:
    # The board took only the run's first token while no page watched; the page's
    # coming makes it take every one, and catch up from the live run's buffer first:
    # the page's snapshot holds the text so far, and the tokens after go on from it.
    words = tuple(f"w{i} " for i in range(40))
    slow = ScriptedChatModel([ScriptedTurn(tokens=words)], token_delay=0.02)
    async with open_runtime() as rt, serving(Agent(slow, name="Slow"), runtime=rt) as served:
        board = served.app.state.troupe.board
        client = served.client
        read: list[str] = []
        ten_read = trio.Event()
        async with trio.open_nursery() as nursery:

            async def stream() -> None:
                async with client.stream("POST", "/runs/stream", json={"input": "q"}) as got:
                    async for event in iter_sse(got):
                        if event.event == "on_chat_model_stream":
                            read.append(event.json()["data"]["chunk"]["content"])
                            if len(read) == 10:
                                ten_read.set()

            nursery.start_soon(stream)
            with trio.fail_after(10):
                await ten_read.wait()
            seen: list[dict[str, Any]] = []
            text = ""
            async with client.stream("GET", "/viewer/events") as got:
                with trio.fail_after(10):
                    async for event in iter_sse(got):
                        message = event.json()
                        seen.append(message)
                        if message["k"] == "hello":
                            assert board.taking == "all"
                            root = (await client.get("/viewer/runs")).json()["runs"][0]["id"]
                            tree = (await client.get(f"/viewer/runs/{root}/tree")).json()
                            [model] = [r for r in tree["runs"] if r["kind"] == "chat_model"]
                            text = model["text"]
                            # whole so far: at least the tokens the stream's client read
                            assert "".join(words).startswith(text) and text.endswith(" ")
                            assert text.startswith("".join(read[:10]))
                        elif message["k"] == "tok" and message["id"] == model["id"]:
                            if message["pos"] >= len(text):
                                assert message["pos"] == len(text)  # no hole
                                text += message["text"]
                        elif message["k"] == "end" and message["id"] == model["id"]:
                            break
            assert text == "".join(words)
            with trio.fail_after(5):
                # the page left (the server hears it over the socket): first tokens only
                while board.taking != "first":  # noqa: ASYNC110  # nothing to wait on
                    await trio.sleep(0.01)


async def test_a_board_whose_runtime_closed_fits_its_pages_without_an_error() -> None:
    # A page that comes or goes after the runtime closed (the server shutting down)
    # changes what the board asks for; nothing is there to ask, and nothing fails.
    board = RunBoard()
    board.taking = "first"
    async with open_runtime() as rt:
        board.attachment = await rt.subscribe(board, drop_oldest=True)
        board.watchers = 1
        await board.fit()
        assert str(board.taking) == "all"
        assert [s.first_chunk_only for s in board.attachment._subscriptions] == [False]
    board.watchers = 0
    await board.fit()  # the runtime is closed: its subscription with it
    assert str(board.taking) == "first"

    class Closing:
        """A runtime that closed while the board's request waited in its tracer's
        mailbox."""

        async def stream_events(self, which: str) -> None:
            raise RuntimeClosedError("the runtime is closed")

    board.attachment = Closing()  # type: ignore[assignment]  # only stream_events is used
    board.watchers = 1
    await board.fit()
    assert str(board.taking) == "all"  # what the pages need; nothing more comes to take
