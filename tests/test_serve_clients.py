"""The HTTP edge read by the protocols' own client code, in Node: AG-UI's ``HttpAgent``
(@ag-ui/client) and the Vercel AI SDK's ``DefaultChatTransport`` and
``readUIMessageStream`` (ai 5), as a frontend would use them, and the README's React
component with ``useChat`` (@ai-sdk/react), rendered in jsdom.

`.ci/run` installs them (``npm ci`` in tests/node) and runs these as a step of their
own; elsewhere they are skipped, saying why, when Node or the packages are missing."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from actors._demo import make_cat_agent
from protocol import AssistantMessage, ChatMessage, ToolMessage, UserMessage
from runtime import RunContext, SharedState

from .sse_client import serving
from .test_serve_history import _reporter_turn
from .test_serve_resume import calls, served_with_store

NODE_DIR = Path(__file__).parent / "node"
pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed"),
    pytest.mark.skipif(
        not (NODE_DIR / "node_modules").is_dir(),
        reason="the protocol clients are not installed: run `npm ci` in tests/node",
    ),
]


async def _node(script: str, *arguments: str) -> Any:
    """What a script of tests/node prints (JSON), run with ``arguments``."""
    done = await trio.run_process(
        ["node", str(NODE_DIR / script), *arguments],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


async def test_ag_ui_http_agent_runs_the_cat_agent() -> None:
    async with serving(make_cat_agent(random.Random(1), nested=True)) as served:
        got = await _node(
            "agui_client.mjs", f"{served.base_url}/runs/stream?protocol=ag-ui", "where?"
        )
    assert got["types"][0] == "RUN_STARTED" and got["types"][-1] == "RUN_FINISHED"
    roles = [m["role"] for m in got["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    calls = [m["toolCalls"][0]["function"]["name"] for m in got["messages"] if m.get("toolCalls")]
    assert calls == ["where_cat_is_hiding", "get_items"]
    assert got["messages"][-1]["content"].startswith("The cat is")
    # the frontend's state comes back as it sent it (HttpAgent's starts empty), never
    # Troupe's run log (7.6 KB of it went back as state on the next turn)
    assert got["state"] == {}


async def test_the_ai_sdk_reads_the_ui_message_stream() -> None:
    async with serving(make_cat_agent(random.Random(1))) as served:
        message = await _node(
            "ui_message_stream.mjs",
            f"{served.base_url}/runs/stream?protocol=ui-message-stream",
            "where?",
        )
    parts = message["parts"]
    assert [p["type"] for p in parts] == [
        "step-start",
        "tool-where_cat_is_hiding",
        "step-start",
        "tool-get_items",
        "step-start",
        "text",
    ]
    assert all(p["state"] == "output-available" for p in parts if p["type"].startswith("tool-"))
    assert parts[-1]["text"].startswith("The cat is") and parts[-1]["state"] == "done"


async def _run_readme_block(
    fence: str, name: str, file: str, *command: str
) -> subprocess.CompletedProcess[bytes]:
    """Runs the README's ```fence block that mentions ``name``, as written but for the
    server's address, against the cat agent: written to ``file`` in tests/node (beside
    node_modules), then ``node *command`` (ending with the file's path)."""
    import re

    readme = await (trio.Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(rf"```{fence}\n(.*?)```", readme, re.S) if name in b)
    written = trio.Path(NODE_DIR / file)
    async with serving(make_cat_agent(random.Random(1))) as served:
        await written.write_text(block.replace("http://localhost:8000", served.base_url))
        try:
            return await trio.run_process(
                ["node", *command, str(written)],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        finally:
            await written.unlink()


async def test_the_readmes_http_agent_runs_as_written() -> None:
    done = await _run_readme_block("js", "HttpAgent", "readme_http_agent.mjs")
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().startswith("The cat is ")


async def test_the_readmes_use_chat_component_runs_as_written() -> None:
    # The README's React component, its JSX turned into ESM by esbuild and rendered by
    # react-dom in jsdom: a question typed and sent with its button shows the cat
    # agent's answer on the page.
    script = str(NODE_DIR / "readme_use_chat.mjs")
    done = await _run_readme_block("jsx", "useChat", "readme_use_chat.jsx", script)
    assert done.returncode == 0, done.stderr.decode()
    got = json.loads(done.stdout)
    assert len(got["paragraphs"]) == 2, got
    user, answer = got["paragraphs"]
    assert user == "user: where is the cat?"
    assert answer.startswith("assistant: The cat is ") and answer.endswith("dust bunnies.")
    assert got["input"] == ""  # the form is reset once sent


async def _two_turns(served: Any, performer: str) -> tuple[Any, dict[str, Any]]:
    """Both clients' two turns (whole histories, as they send by default) with
    ``performer``: what each client holds, and each thread's history on the server."""
    done = await trio.run_process(
        [
            "node",
            str(NODE_DIR / "thread_turns.mjs"),
            served.base_url,
            performer,
            "I am Ann",
            "Who?",
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    got = json.loads(done.stdout)
    threads = {
        name: (await served.client.get(f"/threads/{thread_id}/history")).json()
        for name, thread_id in [("agui", got["agui"]["threadId"]), ("chat", got["chat"]["id"])]
    }
    return got, threads


async def test_both_clients_hold_a_two_turn_conversation_on_a_thread(tmp_path: Path) -> None:
    # The thread keeps the conversation, and an agent that answers with what it was
    # given shows that the second turn got the first whole and once; the cat agent's
    # tool calls and results, as each client keeps them, match the thread's.
    from .test_serve_history import _reporter

    performers = {"reporter": _reporter(), "cat": make_cat_agent(random.Random(1))}
    async with serving(performers, store=f"sqlite:///{tmp_path}/runs.db") as served:
        got, threads = await _two_turns(served, "reporter")
        cat_got, cat_threads = await _two_turns(served, "cat")
    agui = [m["content"] for m in got["agui"]["messages"]]
    assert agui[0] == "I am Ann" and agui[2] == "Who?" and len(agui) == 4
    assert [m["content"] for m in json.loads(agui[3])] == ["I am Ann", agui[1], "Who?"]
    chat = got["chat"]["messages"]
    answers = ["".join(p.get("text", "") for p in m["parts"]) for m in chat[1::2]]
    assert [m["content"] for m in json.loads(answers[1])] == ["I am Ann", answers[0], "Who?"]
    for history in threads.values():
        assert [m["role"] for m in history["messages"]] == ["user", "assistant"] * 2
        assert [r["status"] for r in history["runs"]] == ["ok", "ok"]
    turn = ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    for history in cat_threads.values():
        roles = [m["role"] for m in history["messages"]]
        assert roles[:6] == turn and roles[6] == "user" and roles.count("user") == 2
        assert [r["status"] for r in history["runs"]] == ["ok", "ok"]
    # the client holds what the thread holds: nothing doubled, nothing lost
    kept = [m["content"] for m in cat_threads["agui"]["messages"]]
    assert [m.get("content") or "" for m in cat_got["agui"]["messages"]] == kept


@pytest.mark.parametrize(("answer", "ran"), [("approve", ["pay 5"]), ("deny", []), ("cancel", [])])
async def test_ag_ui_http_agent_pauses_and_resumes(
    tmp_path: Path, answer: str, ran: list[str]
) -> None:
    async with served_with_store(tmp_path) as (served, _, ledger):
        got = await _node("agui_resume.mjs", f"{served.base_url}/ag-ui", "pay five", answer)
        (interrupt,) = got["first"]["pending"]
        assert got["first"]["outcome"] == "interrupt"
        assert interrupt["reason"] == "tool_call" and interrupt["toolCallId"] == "p1"
        assert got["first"]["types"][-1] == "RUN_FINISHED"
        assert got["second"]["outcome"] == "success" and got["second"]["pending"] == []
        assert ("TOOL_CALL_RESULT" in got["second"]["types"]) == bool(ran)
        assert got["messages"][-1]["content"] == "all done"
    assert calls(ledger) == ran


@pytest.mark.skipif(
    not (NODE_DIR / "node_modules" / "ai-v6").is_dir(),
    reason="AI SDK 6 (ai-v6 in tests/node/package.json) is not installed: run `npm ci`",
)
@pytest.mark.parametrize(("answer", "ran"), [("approve", ["pay 5"]), ("deny", [])])
async def test_ai_sdk_chat_asks_for_approval_and_its_answer_resumes(
    tmp_path: Path, answer: str, ran: list[str]
) -> None:
    async with served_with_store(tmp_path) as (served, _, ledger):
        got = await _node("ui_approval.mjs", f"{served.base_url}/api/chat", "pay five", answer)
    assert got["firstStates"] == ["approval-requested"]
    assert got["asked"][0]["toolCallId"] == "p1" and got["status"] == "ready"
    _, assistant = got["messages"]  # the answer's parts joined the message asking
    (part,) = [p for p in assistant["parts"] if p["type"] == "tool-pay"]
    if ran:
        assert part["state"] == "output-available" and part["output"] == "paid 5"
    else:
        assert part["state"] == "output-denied"
    texts = [p["text"] for p in assistant["parts"] if p["type"] == "text"]
    assert texts == ["all done"]
    assert calls(ledger) == ran


CONFIRM: dict[str, Any] = {
    "name": "confirm",
    "description": "Ask the user to confirm.",
    "parameters": {"type": "object", "properties": {"question": {"type": "string"}}},
}


def chat_helper() -> Agent:
    """An agent for the AI SDK's chat: a server tool (``lookup``), a client tool
    (``confirm``, declared without a body), a slow answer to stop, and otherwise a
    report of the conversation it was given (as JSON)."""

    @tool
    async def lookup(x: int) -> str:
        """Look a number up."""
        return f"found {x}"

    def turn(messages: Sequence[ChatMessage]) -> ScriptedTurn:
        last = messages[-1]
        asked = last.content if isinstance(last, UserMessage) else ""
        if isinstance(last, ToolMessage) and last.name == "lookup":
            return ScriptedTurn(f"It is {last.content}.")
        if "look up" in asked:
            return ScriptedTurn(tool_calls=[ScriptedCall("lookup", {"x": 7}, id="call-lookup")])
        if "confirm" in asked:
            call = ScriptedCall("confirm", {"question": "sure?"}, id="call-confirm")
            return ScriptedTurn(tool_calls=[call])
        if "slowly" in asked:
            return ScriptedTurn("slow " * 2000, token_delay=0.01)
        return _reporter_turn(messages)

    return Agent(ScriptedChatModel(turn), [lookup], name="helper", client_tools=[CONFIRM])


@pytest.mark.skipif(
    not (NODE_DIR / "node_modules" / "ai-v6").is_dir(),
    reason="AI SDK 6 (ai-v6 in tests/node/package.json) is not installed: run `npm ci`",
)
async def test_ai_sdk_chat_three_turns_with_tools_a_resumed_stream_and_a_stop(
    tmp_path: Path,
) -> None:
    async with serving({"helper": chat_helper()}, store=f"sqlite:///{tmp_path}/runs.db") as served:
        got = await _node("chat_turns.mjs", served.base_url, "helper")
        history = (await served.client.get(f"/threads/{got['chatId']}/history")).json()
    # turns 1 and 2: the server tool's result came with the stream; the client tool's
    # call was the client's to answer, and its answer went on in the same message
    _, answer1, _, answer2 = got["afterTwo"]
    lookup = next(p for p in answer1["parts"] if p["type"] == "tool-lookup")
    assert lookup["state"] == "output-available" and lookup["output"] == "found 7"
    assert answer1["parts"][-1]["text"] == "It is found 7."
    assert [c["toolName"] for c in got["toolCalls"]] == ["lookup", "confirm"]
    (confirm,) = [p for p in answer2["parts"] if p["type"] == "tool-confirm"]
    assert confirm["state"] == "output-available" and confirm["output"] == "yes"
    assert confirm["input"] == {"question": "sure?"}
    report = json.loads(answer2["parts"][-1]["text"])
    roles = ["user", "assistant", "tool", "assistant", "user", "assistant", "tool"]
    assert [m["role"] for m in report] == roles
    assert report[-2]["calls"] == [["call-confirm", "confirm", {"question": "sure?"}]]
    assert report[-1]["content"] == "yes" and report[-1]["answers"] == ["call-confirm", "confirm"]
    # turn 3: the run went on while no client read it, the second client read it from
    # its start, and the stop ended it (the client stops as on its own stop(), no error)
    assert got["resumedAt"].startswith(got["leftAt"]) and len(got["resumedAt"]) > len(got["leftAt"])
    assert got["stop"]["status"] == 202 and got["stop"]["body"]["status"] == "cancelling"
    assert got["stop"]["again"] == 404 and got["stoppedStatus"] == "ready"
    assert got["noStream"] == {"status": "ready", "messages": 0}
    # turn 4: the whole conversation reached the agent, the stopped answer included
    messages = got["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 4
    stopped = "".join(p.get("text", "") for p in messages[5]["parts"])
    assert stopped.startswith(got["resumedAt"])
    final = json.loads(messages[7]["parts"][-1]["text"])
    said = [(m["role"], m["content"]) for m in final]
    assert said[:5] == [
        ("user", "look up 7"),
        ("assistant", ""),
        ("tool", "found 7"),
        ("assistant", "It is found 7."),
        ("user", "confirm it"),
    ]
    assert said[5:9] == [
        ("assistant", ""),
        ("tool", "yes"),
        ("assistant", answer2["parts"][-1]["text"]),
        ("user", "tell me slowly"),
    ]
    assert said[9] == ("assistant", stopped) and said[10] == ("user", "report")
    assert len(said) == 11
    assert sorted(r["status"] for r in history["runs"]) == ["cancelled"] + ["ok"] * 4


async def test_ag_ui_http_agent_leaves_a_run_and_another_reconnects_and_stops_it() -> None:
    from .test_serve_chat import slow

    async with serving({"helper": slow()}) as served:
        got = await _node("agui_reconnect.mjs", served.base_url, "helper")
        with trio.fail_after(5):
            while served.app.state.troupe.runs.live():  # noqa: ASYNC110  # the server's view
                await trio.sleep(0.01)
    # the first client's abort left the run going: the second read it from its start,
    # past where the first had left, until the stop cancelled it
    assert got["secondText"].startswith(got["firstText"])
    assert len(got["secondText"]) > len(got["firstText"])
    assert got["types"][0] == "RUN_STARTED" and got["types"][-1] == "RUN_ERROR"
    assert got["stop"] == 202 and got["connected"] == "done"


def _shop_with_a_frontend_tool() -> Agent:
    """An agent whose server tools change the shared state, whose model calls the
    frontend's ``confirm`` after the first, and which answers with the conversation it
    was given (as JSON)."""

    @tool
    async def add_item(item: str, state: SharedState) -> str:
        """Put an item in the basket."""
        await state.patch([{"op": "add", "path": "/items/-", "value": item}])
        return f"{len(state.get('items'))} items"

    @tool
    async def checkout(context: RunContext, state: SharedState) -> dict[str, Any]:
        """Check out: what the basket held, and what the client forwarded."""
        held = state.value
        await state.update({"status": "checked out"})
        return {"state": held, "props": context.metadata.get("forwarded_props")}

    def report(messages: Sequence[ChatMessage]) -> list[list[Any]]:
        return [
            [
                m.role,
                m.content,
                [c.id for c in m.tool_calls] if isinstance(m, AssistantMessage) else [],
                m.tool_call_id if isinstance(m, ToolMessage) else None,
            ]
            for m in messages
        ]

    def script(messages: Sequence[ChatMessage]) -> ScriptedTurn:
        last = messages[-1]
        if isinstance(last, UserMessage):
            if last.content == "add milk":
                return ScriptedTurn(
                    tool_calls=[ScriptedCall("add_item", {"item": "milk"}, "c-milk")]
                )
            return ScriptedTurn(tool_calls=[ScriptedCall("checkout", {}, "c-out")])
        assert isinstance(last, ToolMessage)
        follows = {
            "c-milk": ScriptedCall("confirm", {"question": "Add tea too?"}, "c-confirm"),
            "c-confirm": ScriptedCall("add_item", {"item": "tea"}, "c-tea"),
        }.get(last.tool_call_id)
        if follows is not None:
            return ScriptedTurn(tool_calls=[follows])
        return ScriptedTurn(json.dumps(report(messages)))

    return Agent(ScriptedChatModel(script), tools=[add_item, checkout], name="Shop")


async def test_http_agent_holds_three_turns_with_state_and_a_frontend_tool(
    tmp_path: Path,
) -> None:
    from .test_serve import AG_UI_EVENT

    shop = {"shop": _shop_with_a_frontend_tool()}
    async with serving(shop, store=f"sqlite:///{tmp_path}/runs.db") as served:
        got = await _node("agui_turns.mjs", f"{served.base_url}/ag-ui", "thread-shop")
        history = (await served.client.get("/threads/thread-shop/history")).json()
    turns = got["turns"]
    for turn in turns:
        for event in turn["events"]:
            AG_UI_EVENT.validate_python(event)  # AG-UI's own types
        types = [e["type"] for e in turn["events"]]
        assert types[0] == "RUN_STARTED" and types[-1] == "RUN_FINISHED", types
        # the state the client sent comes back first, then a delta per change
        assert turn["events"][1] == {"type": "STATE_SNAPSHOT", "snapshot": turn["sent"]}
    # each turn's state is the client's, changed by the server's tools: what the
    # client holds after a run (its agent.state) is what it sends next
    first = {"owner": "Ann", "items": ["milk"]}
    second = {"owner": "Ann", "items": ["milk", "tea"], "note": "set by the client"}
    assert [t["sent"] for t in turns] == [
        {"owner": "Ann", "items": []},
        {**first, "note": "set by the client"},
        second,
    ]
    assert [t["state"] for t in turns] == [first, second, {**second, "status": "checked out"}]
    # turn 1 ended at the frontend's tool: called, and not answered by the server
    called = [e["toolCallName"] for e in turns[0]["events"] if e["type"] == "TOOL_CALL_START"]
    assert called == ["add_item", "confirm"]
    results = [e["toolCallId"] for e in turns[0]["events"] if e["type"] == "TOOL_CALL_RESULT"]
    assert results == ["c-milk"]
    # each change is a delta, in order with the tool's events (inside its call)
    for turn, tools in zip(turns, (["c-milk"], ["c-tea"], ["c-out"]), strict=True):
        marks = [
            e["type"] if e["type"] == "STATE_DELTA" else e.get("toolCallId")
            for e in turn["events"]
            if e["type"] in ("STATE_DELTA", "TOOL_CALL_RESULT")
        ]
        assert marks == [x for call in tools for x in ("STATE_DELTA", call)]
    # the checkout tool read the state the client sent on turn 3, and its props
    (out,) = [e for e in turns[2]["events"] if e.get("toolCallId") == "c-out" and "content" in e]
    assert json.loads(out["content"]) == {"state": second, "props": {"locale": "de"}}
    # the model was given the whole conversation, every turn of it, once and in order
    texts = [m["content"] for m in got["messages"] if m["role"] == "assistant" and m.get("content")]
    asked_second, asked_third = (json.loads(t) for t in texts)
    conversation = [
        ["user", "add milk", [], None],
        ["assistant", "", ["c-milk"], None],
        ["tool", "1 items", [], "c-milk"],
        ["assistant", "", ["c-confirm"], None],
        ["tool", "yes, add tea", [], "c-confirm"],
        ["assistant", "", ["c-tea"], None],
        ["tool", "2 items", [], "c-tea"],
    ]
    assert asked_second == conversation
    assert asked_third[: len(conversation)] == conversation
    assert [m[:1] for m in asked_third[len(conversation) :]] == [
        ["assistant"],
        ["user"],
        ["assistant"],
        ["tool"],
    ]
    assert asked_third[len(conversation)][1] == texts[0]  # turn 2's answer, as sent
    assert [r["status"] for r in history["runs"]] == ["ok", "ok", "ok"]
