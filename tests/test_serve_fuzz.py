"""Generated request bodies and headers for the HTTP edge: whatever a client sends, the
answer is a success or a 4xx/503 that says what was wrong (JSON with ``error``), never
a 500, and the server is left as it was (no live run, no open run).

``test_serve.py`` pins one answer per kind of bad input; this throws everything at the
endpoints that read a body or a header: JSON of any shape under the keys the server
reads (``performer``, ``input``, ``messages``, ``config``, ``protocol``, ``run_id``,
``runId``, ``threadId``, ``detached``, ...), ids of every alphabet, JSON nested too
deep or with numbers too large, odd bytes, odd ``Last-Event-ID``, ``traceparent`` and
``Content-Length`` values, and what a hostile page sends: any ``Content-Type``, a
rebinding ``Host``, a foreign ``Origin``. A refused request starts nothing; a body not
declared JSON, a host not served, a foreign origin's post never get a 2xx.
"""

from __future__ import annotations

import json
import random
from typing import Any
from urllib.parse import quote

import trio
from hypothesis import example, given
from hypothesis import strategies as st

from actors import Agent, ScriptedChatModel, ScriptedTurn
from actors._demo import make_cat_agent
from actors.serve._guard import HostRule, is_json
from actors.testing import run_watched

from .sse_client import serving

PERFORMERS: dict[str, Any] = {
    "cat": make_cat_agent(random.Random(1)),
    "echo": Agent(ScriptedChatModel([ScriptedTurn("hello")]), name="Echo"),
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
    body: Any, raw: bytes | None, header: str, where: str, extra: dict[bytes, bytes] | None = None
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
        for path in ("/runs/stream", "/runs/wait", "/runs"):
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
