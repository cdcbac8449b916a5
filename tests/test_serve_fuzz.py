"""Generated request bodies and headers for the HTTP edge: whatever a client sends, the
answer is a success or a 4xx/503 that says what was wrong (JSON with ``error``), never
a 500, and the server is left as it was (no live run, no open run).

``test_serve.py`` pins one answer per kind of bad input; this throws everything at the
endpoints that read a body or a header: JSON of any shape under the keys the server
reads (``performer``, ``input``, ``messages``, ``config``, ``protocol``, ``run_id``,
``runId``, ``threadId``, ``detached``, ``resumable``, ...), ``useChat`` histories
(every part type, tool parts in every state, damaged or whole: each is refused with
the message named, or reaches the agent whole), ids of every alphabet, JSON nested too
deep or with numbers too large, odd bytes, odd ``Last-Event-ID``, ``traceparent`` and
``Content-Length`` values, and what a hostile page sends: any ``Content-Type``, a
rebinding ``Host``, a foreign ``Origin``. A refused request starts nothing; a body not
declared JSON, a host not served, a foreign origin's post never get a 2xx.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import trio
from hypothesis import example, given
from hypothesis import strategies as st

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from actors._demo import make_cat_agent
from actors.serve._guard import HostRule, is_json
from actors.testing import run_watched
from runtime import SharedState

from .sse_client import serving


@tool
async def add_item(item: str, state: SharedState) -> str:
    """Put an item in the basket (a patch that does not apply to the client's state
    is this call's error)."""
    await state.patch([{"op": "add", "path": "/items/-", "value": item}])
    return "added"


def _shopping(messages: Sequence[Any]) -> ScriptedTurn:
    if messages and messages[-1].role == "tool":
        return ScriptedTurn("done")
    return ScriptedTurn(tool_calls=[ScriptedCall("add_item", {"item": "milk"})])


PERFORMERS: dict[str, Any] = {
    "cat": make_cat_agent(random.Random(1)),
    "echo": Agent(ScriptedChatModel([ScriptedTurn("hello")]), name="Echo"),
    "shop": Agent(ScriptedChatModel(_shopping), tools=[add_item], name="Shop"),
}
KEYS = [
    "performer",
    "input",
    "messages",
    "config",
    "protocol",
    "run_id",
    "runId",
    "threadId",
    "id",
    "detached",
    "state",
    "tools",
    "context",
    "forwardedProps",
    "resumable",
    "message",
    "trigger",
    "messageId",
]
TEXT = st.text(max_size=12) | st.sampled_from(["cat", "echo", "events", "ag-ui", "compact"])
JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
MESSAGES = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool", 7]), "content": JSON},
        optional={"parts": JSON, "id": JSON},
    ),
    max_size=3,
)
BODIES = st.one_of(
    st.dictionaries(
        st.sampled_from(KEYS) | TEXT,
        JSON | MESSAGES | st.sampled_from(["where is the cat?", "cat", "echo"]),
        max_size=6,
    ),
    JSON,
)
# Ids of every alphabet (and none), where the server reads ids.
IDS = st.text(max_size=140) | st.sampled_from(["a\r\nb", "a\u0000b", "a/b", "..", "r-1.x:y"])
DEEP = st.integers(1, 3000).map(lambda n: b'{"input": ' + b"[" * n + b"]" * n + b"}")
HUGE = st.integers(18, 6000).map(
    lambda n: b'{"input": "?", "config": {"metadata": {"n": 1' + b"0" * n + b"}}}"
)
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/vnd.ag-ui+json",
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
        "json",
        "application/jsonx",
        "\u00ff/\u00fe",
    ]
)
HOSTS = st.sampled_from(
    ["localhost", "127.0.0.1", "[::1]", "app.localhost", "attacker.example", "127.0.0.1.nip.io"]
) | st.text(max_size=20).filter(
    # what a client can send: h11 refuses a header value with spaces at either end
    lambda t: t.isascii() and t.isprintable() and t == t.strip() and t != ""
)
ORIGINS = st.none() | st.sampled_from(["null", "http://attacker.example", "http://localhost:3000"])
HEADER = st.sampled_from(
    [
        "",
        "0",
        "3",
        "\u00b2",
        "9" * 5000,
        "-1",
        "00-" + "0" * 32 + "-" + "0" * 16 + "-01",
        "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
        "\u00ff\u00fe",
    ]
)


@st.composite
def hostile(draw: st.DrawFn) -> dict[bytes, bytes]:
    """What a hostile page or client sets besides the body: maybe a content type that is
    not JSON, a host name that is not served, a foreign origin."""
    headers = {b"content-type": b"application/json"}
    if draw(st.booleans()):
        headers[b"content-type"] = draw(CONTENT_TYPES).encode("latin-1")
    if draw(st.booleans()):
        headers[b"host"] = draw(HOSTS).encode("latin-1")
    origin = draw(ORIGINS)
    if origin is not None:
        headers[b"origin"] = origin.encode()
    return headers


async def _probe(
    body: Any,
    raw: bytes | None,
    header: str,
    where: str,
    extra: dict[bytes, bytes] | None = None,
    paths: tuple[str, ...] = ("/runs/stream", "/runs/wait", "/runs"),
) -> list[str]:
    problems: list[str] = []
    extra = extra or {}
    async with serving(PERFORMERS) as served:
        client = served.client
        content = raw if raw is not None else json.dumps(body).encode()
        headers = {
            b"content-type": b"application/json",
            b"traceparent": header.encode("latin-1"),
            b"last-event-id": header.encode("latin-1"),
            **extra,
        }
        host = extra.get(b"host", b"localhost").decode("latin-1")
        content_type = headers[b"content-type"].decode("latin-1")
        refused = (
            not HostRule().accepts(host)
            or (b"origin" in extra and extra[b"origin"] != b"http://" + extra.get(b"host", b""))
            or (bool(content) and not is_json(content_type))
        )
        for path in paths:
            with trio.fail_after(10):
                response = await client.post(path, content=content, headers=headers)
            status = response.status_code
            if status >= 500 and status != 503:
                problems.append(f"POST {path}: {status} {response.text[:300]}")
            elif status >= 400 and not response.json().get("error"):
                problems.append(f"POST {path}: {status} without words: {response.text[:300]}")
            elif status < 400 and refused:
                problems.append(f"POST {path}: {status} for {extra!r}")
        target = str(body.get("run_id", "x")) if isinstance(body, dict) else "x"
        for path in (f"/runs/{quote(where or target, safe='')}/stream", "/viewer/events"):
            with trio.move_on_after(0.05):  # a stream that was accepted goes on
                async with client.stream("GET", path, headers=headers) as got:
                    if got.status_code >= 500:
                        problems.append(f"GET {path}: {got.status_code}")
        server = served.app.state.troupe
        with trio.fail_after(10):
            while server.runs.live() or server.runtime.open_runs:  # noqa: ASYNC110  # the server's state, polled
                await trio.sleep(0.005)
    return problems


@given(
    body=BODIES,
    raw=st.none() | st.sampled_from([b"", b"{", b"\xff\xfe", b'{"input": "\\ud800"}', b"null"]),
    header=HEADER,
    where=st.sampled_from(["", "%00", "..", "x" * 300]),
)
# What it found, each a 500 before: a protocol that is not a string; a message part whose
# text is not one; a Last-Event-ID that str.isdigit takes and int() refuses.
@example(body={"protocol": [None]}, raw=None, header="", where="")
@example(
    body={"messages": [{"role": "user", "parts": [{"text": 5}]}]}, raw=None, header="", where=""
)
@example(body={"performer": "echo", "input": "q"}, raw=None, header="\u00b2", where="")
def test_no_request_body_or_header_gets_a_500(
    body: Any, raw: bytes | None, header: str, where: str
) -> None:
    problems = run_watched(
        lambda: _probe(body, raw, header, where), seconds=60, label=repr((body, raw, header))
    )
    assert not problems, problems


@given(
    body=st.fixed_dictionaries(
        {"input": st.just("where is the cat?")},
        optional={
            "run_id": IDS,
            "runId": IDS,
            "threadId": IDS,
            "id": IDS,
            "messages": MESSAGES,
            "detached": st.booleans(),
        },
    ),
    raw=st.none() | DEEP | HUGE,
    extra=hostile(),
    where=IDS.filter(lambda t: t.isprintable() and "/" not in t and "?" not in t and "#" not in t),
)
# What issue 28 found, each a 500 or worse before: ids that cannot go in a header (the
# run was then stuck for ever), JSON 100,000 deep, a 5,001-digit integer, a page's
# text/plain post, a rebinding page's Host.
@example(body={"input": "?", "run_id": "\u2603"}, raw=None, extra={}, where="")
@example(body={"input": "?", "run_id": "a\r\nb"}, raw=None, extra={}, where="")
@example(body={"input": "?"}, raw=b"[" * 100_000, extra={}, where="")
@example(
    body={"input": "?"},
    raw=b'{"input": "?", "config": {"metadata": {"n": ' + b"9" * 5001 + b"}}}",
    extra={},
    where="",
)
@example(body={"input": "?"}, raw=None, extra={b"content-type": b"text/plain"}, where="")
@example(body={"input": "?"}, raw=None, extra={b"host": b"attacker.example"}, where="")
def test_no_hostile_page_or_client_gets_past_the_checks(
    body: Any, raw: bytes | None, extra: dict[bytes, bytes], where: str
) -> None:
    problems = run_watched(
        lambda: _probe(body, raw, "", where, extra),
        seconds=60,
        label=repr((body, raw, extra)),
    )
    assert not problems, problems


TOOL_STATES = [
    "input-streaming",
    "input-available",
    "output-available",
    "output-error",
    "approval-requested",
    "approval-responded",
    "output-denied",
]
ANSWERED = ("output-available", "output-error")
WORDS = st.text(alphabet="abc xyz\u00e9\u4e2d\n\"'", max_size=8)


@st.composite
def _tool_part(draw: st.DrawFn, call_id: str) -> dict[str, Any]:
    state = draw(st.sampled_from(TOOL_STATES))
    name = draw(st.sampled_from(["lookup", "confirm"]))
    part: dict[str, Any] = {"toolCallId": call_id, "state": state}
    if draw(st.booleans()):
        part["type"] = f"tool-{name}"
    else:
        part |= {"type": "dynamic-tool", "toolName": name}
    if state != "input-streaming":
        part["input"] = draw(st.none() | st.just({"x": 1}) | JSON)
    if state == "output-available":
        part["output"] = draw(JSON)
    if state == "output-error":
        part["errorText"] = draw(WORDS)
    if state.startswith("approval") or state == "output-denied":
        part["approval"] = {"id": draw(IDS), "approved": draw(st.booleans())}
    return part


@st.composite
def _assistant(draw: st.DrawFn, n: int) -> dict[str, Any]:
    parts: list[Any] = []
    for step in range(draw(st.integers(1, 3))):
        parts.append({"type": "step-start"})
        if draw(st.booleans()):
            parts.append({"type": "reasoning", "text": draw(WORDS)})
        calls = range(draw(st.integers(0, 2)))
        parts += [draw(_tool_part(f"call-{n}-{step}-{call}")) for call in calls]
        if draw(st.booleans()):
            parts.append({"type": "text", "text": draw(WORDS), "state": "done"})
    return {"id": f"a{n}", "role": "assistant", "parts": parts}


DAMAGE = st.sampled_from(
    [
        {"type": "file", "mediaType": "image/png", "url": "data:image/png;base64,AA=="},
        {"type": "weird"},
        {"text": "no type"},
        {"type": "text", "text": 5},
        "not a part",
        {"type": "tool-lookup", "state": "output-available"},  # no call id
    ]
)


@st.composite
def use_chat_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A useChat request: turns of user text and assistant parts (steps, reasoning,
    tool calls in every state, text), the user's question last; at times damaged (a
    part Troupe cannot take, a repeated id, an unknown role, a result for a call
    that never happened), at times sent as its last message alone."""
    messages: list[Any] = []
    if draw(st.booleans()):
        messages.append({"id": "s", "role": "system", "parts": [{"type": "text", "text": "Be"}]})
    for n in range(draw(st.integers(0, 3))):
        parts: list[Any] = [{"type": "text", "text": draw(WORDS)}]
        if draw(st.booleans()):
            parts.append({"type": "data-note", "data": draw(JSON)})
        messages.append({"id": f"u{n}", "role": "user", "parts": parts})
        messages.append(draw(_assistant(n)))
    if draw(st.booleans()) or not messages:
        messages.append({"id": "q", "role": "user", "parts": [{"type": "text", "text": "q"}]})
    damage = draw(st.sampled_from(["none", "none", "part", "id", "role", "orphan"]))
    at = draw(st.integers(0, len(messages) - 1))
    if damage == "part":
        messages[at] = {**messages[at], "parts": [*messages[at]["parts"], draw(DAMAGE)]}
    elif damage == "id":
        messages[at] = {**messages[at], "id": messages[0]["id"]}
    elif damage == "role":
        messages[at] = {**messages[at], "role": draw(st.sampled_from(["tool", "bot", 3]))}
    elif damage == "orphan":  # an AG-UI tool result among UIMessages: no call to answer
        messages.insert(at, {"id": "t", "role": "tool", "toolCallId": "never", "content": "x"})
    body: dict[str, Any] = {"id": "chat-1", "messages": messages}
    if draw(st.booleans()):
        body = {"id": "chat-1", "message": messages[-1]}
    if draw(st.booleans()):
        body["trigger"] = "submit-message"
    return body


def _reported(body: dict[str, Any]) -> dict[str, list[Any]]:
    """What a reporter must have been given, read off the body without converting it:
    each user and system message's text, each answered tool call's id, the
    assistants' text, in order."""
    messages = body.get("messages") or [body["message"]]
    said: dict[str, list[Any]] = {"user": [], "system": [], "tool": [], "assistant": []}
    for message in messages:
        parts = message["parts"]
        texts = "".join(p["text"] for p in parts if p.get("type") == "text")
        if message["role"] == "assistant":
            said["assistant"].append(texts)
            said["tool"] += [
                p["toolCallId"] for p in parts if p.get("state") in ANSWERED and "toolCallId" in p
            ]
        else:
            said[message["role"]].append(texts)
    said["assistant"] = ["".join(said["assistant"])]
    return said


def _compared(report: list[dict[str, Any]], expected: dict[str, list[Any]]) -> list[str]:
    """What a reporter agent said it was given (its answer, ``report``) against what the
    body sent (``expected``): by role, the texts, the answered calls' ids, the
    assistants' text joined."""
    got: dict[str, list[Any]] = {"user": [], "system": [], "tool": [], "assistant": []}
    for message in report:
        got[message["role"]].append(
            message["answers"][0] if message["role"] == "tool" else message["content"]
        )
    got["assistant"] = ["".join(got["assistant"])]
    return [] if got == expected else [f"given {got}, sent {expected}"]


async def _chat_probe(body: dict[str, Any]) -> list[str]:
    from .test_serve_history import _reporter

    async with serving({"reporter": _reporter()}) as served:
        with trio.fail_after(10):
            # (as Python writes it: an infinite float as Infinity, which is not JSON)
            content = json.dumps(body)
            headers = {"content-type": "application/json"}
            response = await served.client.post("/api/chat", content=content, headers=headers)
        status = response.status_code
        if status == 501:  # an approval answered: resuming needs a store, which this lacks
            answer = response.json()
            named = "store" in answer.get("error", "") and answer.get("field") == "messages"
            return [] if named else [f"{status} {answer}"]
        if status >= 500:
            return [f"{status} {response.text[:300]}"]
        if status >= 400:
            answer = response.json()
            return [] if answer.get("error") and answer.get("field") else [f"{status} {answer}"]
        frames = [json.loads(line[6:]) for line in response.text.split("\n") if "{" in line]
        if frames[-1] != {"type": "finish", "finishReason": "stop"}:
            return [f"the run did not end well: {frames[-3:]}"]
        report = json.loads("".join(f.get("delta", "") for f in frames))
        return _compared(report, _reported(body))


@given(body=use_chat_bodies())
def test_use_chat_histories_are_refused_by_name_or_reach_the_agent_whole(
    body: dict[str, Any],
) -> None:
    problems = run_watched(lambda: _chat_probe(body), seconds=60, label=repr(body))
    assert not problems, problems


# Shared states of every shape: objects (some with the ``items`` the shop's tool adds
# to, some where that patch cannot apply), what is not an object, states nested deep.
def _nested(depth: int, inner: Any) -> Any:
    for _ in range(depth):
        inner = {"a": inner} if isinstance(inner, dict) else [inner]
    return inner


STATES: st.SearchStrategy[Any] = st.one_of(
    st.dictionaries(TEXT, JSON, max_size=4),
    st.fixed_dictionaries({"items": st.lists(JSON, max_size=3) | JSON}),
    JSON,
    st.builds(_nested, st.integers(1, 150), st.sampled_from([{}, []])),
)


@given(
    body=st.fixed_dictionaries(
        {
            "threadId": st.just("t1") | IDS,
            "runId": st.just("r1") | IDS,
            "messages": st.just([{"id": "u1", "role": "user", "content": "add milk"}]) | MESSAGES,
            "state": STATES,
        },
        optional={
            "performer": st.sampled_from(["shop", "echo", "cat"]) | TEXT,
            "forwardedProps": JSON,
            "config": st.fixed_dictionaries({"state": STATES}),
            "tools": JSON,
            "context": JSON,
            "parentRunId": JSON,
        },
    ),
)
@example(
    body={
        "performer": "shop",
        "threadId": "t1",
        "runId": "r1",
        "messages": [{"id": "u1", "role": "user", "content": "add milk"}],
        "state": {"items": 5},  # the tool's patch cannot apply: its call's error
    }
)
def test_no_ag_ui_body_with_any_state_gets_a_500(body: dict[str, Any]) -> None:
    problems = run_watched(
        lambda: _probe(body, None, "", "", paths=("/ag-ui", "/runs/wait")),
        seconds=60,
        label=repr(body),
    )
    assert not problems, problems


@st.composite
def _ag_ui_turn(draw: st.DrawFn, n: int) -> list[dict[str, Any]]:
    """An AG-UI user message and the assistant's answer: text, or tool calls (each
    answered by a tool message, or at times not), then text."""
    content: Any = draw(WORDS)
    if draw(st.booleans()):  # the multimodal form, text parts only
        content = [{"type": "text", "text": content}, {"type": "text", "text": draw(WORDS)}]
    turn: list[dict[str, Any]] = [{"id": f"u{n}", "role": "user", "content": content}]
    calls = [f"call-{n}-{i}" for i in range(draw(st.integers(0, 2)))]
    if calls:
        turn.append(
            {
                "id": f"a{n}",
                "role": "assistant",
                "content": draw(st.none() | WORDS),
                "toolCalls": [
                    {
                        "id": call,
                        "type": "function",
                        "function": {
                            "name": draw(st.sampled_from(["lookup", "confirm"])),
                            "arguments": json.dumps(draw(st.just({"x": 1}) | JSON)),
                        },
                    }
                    for call in calls
                ],
            }
        )
        answered = [call for call in calls if draw(st.integers(0, 5))]  # mostly answered
        turn += [
            {"id": f"t{call}", "role": "tool", "toolCallId": call, "content": draw(WORDS)}
            for call in answered
        ]
    if draw(st.booleans()):
        turn.append({"id": f"b{n}", "role": "assistant", "content": draw(WORDS)})
    return turn


AG_UI_DAMAGE = st.sampled_from(
    [
        {"role": "user", "content": [{"type": "binary", "mimeType": "image/png", "data": "AA=="}]},
        {"role": "tool", "toolCallId": "never", "content": "x"},
        {"role": "bot", "content": "x"},
        {"role": "assistant", "content": "x", "toolCalls": [{"id": 5}]},
        {"role": "assistant", "content": "x", "toolCalls": "lookup"},
        {"role": "user", "content": 5},
        "not a message",
    ]
)


@st.composite
def ag_ui_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """An AG-UI ``RunAgentInput``'s conversation: system or developer messages, turns of
    user text and assistant answers (tool calls and their results, at times a call
    without one), the user's question last; at times damaged (binary content, a result
    for a call that never happened, an unknown role, a malformed call, a repeated id)."""
    messages: list[Any] = []
    if draw(st.booleans()):
        role = draw(st.sampled_from(["system", "developer"]))
        messages.append({"id": "s", "role": role, "content": draw(WORDS)})
    for n in range(draw(st.integers(0, 3))):
        messages += draw(_ag_ui_turn(n))
    messages.append({"id": "q", "role": "user", "content": "q"})
    damage = draw(st.sampled_from(["none", "none", "message", "id"]))
    at = draw(st.integers(0, len(messages) - 1))
    if damage == "message":
        bad = draw(AG_UI_DAMAGE)
        messages.insert(at, {"id": "bad", **bad} if isinstance(bad, dict) else bad)
    elif damage == "id" and len(messages) > 1:
        messages[at] = {**messages[at], "id": messages[-1 if at == 0 else 0]["id"]}
    return {"threadId": "t1", "runId": "r1", "messages": messages, "state": {}, "tools": []}


def _ag_ui_reported(body: dict[str, Any]) -> dict[str, list[Any]]:
    """What a reporter must have been given, read off an AG-UI body: each user and
    system (or developer) message's text, each tool result's call id, the assistants'
    text, in order."""
    said: dict[str, list[Any]] = {"user": [], "system": [], "tool": [], "assistant": []}
    for message in body["messages"]:
        content = message.get("content") or ""
        if isinstance(content, list):
            content = "".join(part["text"] for part in content)
        role = "system" if message["role"] == "developer" else message["role"]
        said[role].append(message["toolCallId"] if role == "tool" else content)
    said["assistant"] = ["".join(said["assistant"])]
    return said


async def _ag_ui_probe(body: dict[str, Any]) -> list[str]:
    from .test_serve_history import _reporter

    async with serving({"reporter": _reporter()}) as served:
        with trio.fail_after(10):
            response = await served.client.post("/ag-ui", json=body)
        status = response.status_code
        if status >= 500:
            return [f"{status} {response.text[:300]}"]
        if status >= 400:
            answer = response.json()
            return [] if answer.get("error") and answer.get("field") else [f"{status} {answer}"]
        frames = [json.loads(line[6:]) for line in response.text.split("\n") if "{" in line]
        if frames[-1].get("type") != "RUN_FINISHED":
            return [f"the run did not end well: {frames[-3:]}"]
        text = "".join(f["delta"] for f in frames if f["type"] == "TEXT_MESSAGE_CONTENT")
        return _compared(json.loads(text), _ag_ui_reported(body))


@given(body=ag_ui_bodies())
def test_ag_ui_histories_are_refused_by_name_or_reach_the_agent_whole(
    body: dict[str, Any],
) -> None:
    problems = run_watched(lambda: _ag_ui_probe(body), seconds=60, label=repr(body))
    assert not problems, problems
