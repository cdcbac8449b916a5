"""What ``troupe serve`` refuses before anything runs, as a hostile web page and a
hostile client would try it (issue 28): content types, ``Host`` and ``Origin`` headers,
ids of every alphabet, deep and huge JSON, slow bodies, floods of requests and of
detached runs, tokens, hardening headers, and who may see which runs."""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import socket
import subprocess
import sys
from collections.abc import MutableMapping
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from starlette.requests import Request

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from actors._demo import make_cat_agent
from actors.serve import Identity, asgi_app
from actors.serve._guard import HostRule, host_name
from actors.serve._sse import SSEResponse
from runtime import open_runtime

from .sse_client import asgi_scope, read_sse, serving

QUESTION = {"input": "where is the cat hiding? what items are in that location?"}
SLOW = 5.0
"""A token delay that keeps a run going for the whole of a test."""


def cat(**kw: Any) -> Any:
    return make_cat_agent(random.Random(1), **kw)


async def _eventually(check: Any, seconds: float = 10) -> None:
    """Wait until ``await check()`` is true (a state the server reaches on its own)."""
    with trio.fail_after(seconds):
        while not await check():  # noqa: ASYNC110  # the server's state, seen from outside
            await trio.sleep(0.01)


async def _live(served: Any) -> int:
    return int((await served.client.get("/health")).json()["live_runs"])


# -- 1. a web page's requests --------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
async def test_a_body_that_is_not_declared_json_starts_nothing(content_type: str | None) -> None:
    # What a page's fetch(..., {mode: "no-cors"}) may send without a preflight.
    headers = {} if content_type is None else {"content-type": content_type}
    async with serving(cat()) as served:
        for path in ("/runs/stream", "/runs/wait", "/runs"):
            got = await served.client.post(path, content=json.dumps(QUESTION), headers=headers)
            assert got.status_code == 415, (path, got.text)
            assert got.json()["field"] == "Content-Type"
        assert await _live(served) == 0
        assert (await served.client.get("/viewer/runs")).json()["runs"] == []


async def test_json_types_are_accepted() -> None:
    async with serving(cat()) as served:
        for kind in ("application/json", "application/json; charset=utf-8", "Application/JSON"):
            got = await served.client.post(
                "/runs/wait", content=json.dumps(QUESTION), headers={"content-type": kind}
            )
            assert got.status_code == 200, (kind, got.text)


@pytest.mark.parametrize(
    ("host", "served_by_default"),
    [
        ("localhost", True),
        ("localhost:8000", True),
        ("LOCALHOST.:8000", True),
        ("app.localhost:1", True),
        ("127.0.0.1:8000", True),
        ("[::1]:8000", True),
        ("10.1.2.3", True),  # an address: a rebinding page always comes under a name
        ("attacker.example", False),
        ("attacker.example:8000", False),
        ("127.0.0.1.nip.io", False),
        ("localhost.attacker.example", False),
        ("evil@localhost", False),
        ("", False),
        ("[::1", False),
        ("localhost:80x", False),
    ],
)
def test_which_host_names_are_served(host: str, served_by_default: bool) -> None:
    assert HostRule().accepts(host) is served_by_default
    assert HostRule(["*"]).accepts(host)


def test_host_names_parse_as_a_browser_sends_them() -> None:
    assert host_name("[::1]:8000") == "::1"
    assert host_name("Example.COM:443") == "example.com"
    assert host_name("a b") is None
    assert HostRule(["app.example"]).accepts("app.example:8000")
    assert HostRule(["*.example"]).accepts("x.app.example")
    assert not HostRule(["*.example"]).accepts("example.org")


async def test_a_dns_rebinding_page_is_refused_on_every_endpoint() -> None:
    rebound = {"host": "attacker.example:8000"}
    async with serving(cat()) as served:
        for method, path in [
            ("GET", "/viewer/runs"),
            ("GET", "/"),
            ("GET", "/performers"),
            ("GET", "/runs"),
            ("POST", "/runs/wait"),
            ("POST", "/runs/stream"),
            ("GET", "/nowhere"),
        ]:
            got = await served.client.request(method, path, json=QUESTION, headers=rebound)
            assert got.status_code == 400, (path, got.text)
            assert got.json()["field"] == "Host" and "--allow-host" in got.json()["error"]
        assert await _live(served) == 0
    async with serving(cat(), allow_hosts=["attacker.example"]) as served:
        got = await served.client.post("/runs/wait", json=QUESTION, headers=rebound)
        assert got.status_code == 200


async def test_a_post_from_another_origin_is_refused_unless_cors_allows_it() -> None:
    async with serving(cat(token_delay=SLOW)) as served:
        port = served.base_url.rsplit(":", 1)[1]
        started = await served.client.post("/runs", json={**QUESTION, "detached": True})
        run_id = started.json()["run_id"]
        for origin in ("http://localhost:3000", "null", "http://attacker.example"):
            foreign = {"origin": origin}
            got = await served.client.post("/runs/wait", json=QUESTION, headers=foreign)
            assert got.status_code == 403 and got.json()["field"] == "Origin", origin
            cancel = await served.client.post(f"/runs/{run_id}/cancel", headers=foreign)
            assert cancel.status_code == 403
        own = {"origin": f"http://127.0.0.1:{port}"}
        assert (await served.client.post(f"/runs/{run_id}/cancel", headers=own)).status_code == 202
        # reading is not refused (CORS keeps the page from reading the answer)
        assert (await served.client.get("/performers", headers=foreign)).status_code == 200
    async with serving(cat(), cors_origins=["http://localhost:3000"]) as served:
        allowed = {"origin": "http://localhost:3000"}
        assert (
            await served.client.post("/runs/wait", json=QUESTION, headers=allowed)
        ).status_code == 200


async def test_cors_lets_a_trace_context_through() -> None:
    async with serving(cat(), cors_origins=["http://localhost:3000"]) as served:
        got = await served.client.options(
            "/runs/stream",
            headers={
                "origin": "http://localhost:3000",
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type, traceparent, tracestate",
            },
        )
    assert got.status_code == 200
    allowed = got.headers["access-control-allow-headers"].lower()
    assert "traceparent" in allowed and "tracestate" in allowed


def test_cors_for_every_origin_without_a_token_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="troupe.serve"):
        asgi_app(cat(), cors_origins=["*"])
        asgi_app(cat(), cors_origins=["*"], token="t")
    assert len([r for r in caplog.records if "every origin" in r.message]) == 1


# -- 2, 3. ids ---------------------------------------------------------------------------

BAD_IDS = [
    "\u2603",
    "a\r\nb",
    "a\u0000b",
    "a/b",
    "a b",
    "",
    "x" * 129,
    "-leading",
    ".",
    "..",
    "%2F",
    "\u0430",  # a Cyrillic a
    "a\u200bb",
    "😀",
    5,
    ["r"],
    {"id": "r"},
    True,
]


@pytest.mark.parametrize("bad", BAD_IDS, ids=[repr(b)[:20] for b in BAD_IDS])
async def test_an_id_outside_the_alphabet_is_a_422_and_leaves_nothing(bad: object) -> None:
    async with serving(cat(token_delay=SLOW)) as served:
        for path in ("/runs/stream", "/runs/wait", "/runs"):
            for field, extra in [
                ("run_id", {}),
                ("runId", {"threadId": "t1", "messages": [{"role": "user", "content": "?"}]}),
                ("threadId", {"runId": "r1", "messages": [{"role": "user", "content": "?"}]}),
            ]:
                if field == "threadId" and bad == "":
                    continue  # an empty thread id is taken as none (AG-UI's may be "")
                body = {**QUESTION, "detached": path == "/runs", **extra, field: bad}
                if "messages" in extra:
                    body.pop("input")
                got = await served.client.post(path, json=body)
                assert got.status_code == 422, (path, field, got.text)
                assert got.json()["field"] == field
        assert await _live(served) == 0


async def test_every_id_in_the_alphabet_can_be_joined_and_cancelled() -> None:
    async with serving(cat(token_delay=SLOW)) as served:
        for run_id in ("a", "A-b_c.d:e", "0" * 128, "0192f1c2-7c1e-7a3b-9f00-1234567890ab"):
            started = await served.client.post(
                "/runs", json={**QUESTION, "detached": True, "run_id": run_id}
            )
            assert started.status_code == 202, started.text
            cancelled = await served.client.post(f"/runs/{run_id}/cancel")
            assert cancelled.status_code == 202
            async with served.client.stream("GET", f"/runs/{run_id}/stream") as joined:
                events = await read_sse(joined)
            assert events[-2].json()["data"]["error"] == "cancelled"
        assert await _live(served) == 0


async def test_a_finished_runs_id_cannot_be_taken_again() -> None:
    async with serving(cat()) as served:
        first = await served.client.post("/runs/wait", json={**QUESTION, "run_id": "r1"})
        assert first.status_code == 200
        record = (await served.client.get("/viewer/runs/r1/record")).json()
        for path in ("/runs/wait", "/runs/stream", "/runs"):
            again = await served.client.post(
                path, json={**QUESTION, "run_id": "r1", "detached": path == "/runs"}
            )
            assert again.status_code == 409, (path, again.text)
            assert again.json()["field"] == "run_id"
        ag_ui = await served.client.post(
            "/runs/stream",
            json={"threadId": "t", "runId": "r1", "messages": [{"role": "user", "content": "?"}]},
        )
        assert ag_ui.status_code == 409 and ag_ui.json()["field"] == "runId"
        assert (await served.client.get("/viewer/runs/r1/record")).json() == record


# -- 4. bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "deeper"),
        (b'{"input": ' + b"[" * 101 + b"]" * 101 + b"}", "deeper"),
        (b'{"input": "?", "config": {"metadata": {"n": ' + b"9" * 5001 + b"}}}", "4300"),
        (b'{"input": "?", "config": {"metadata": {"n": 18446744073709551616}}}', "64 bits"),
        (b'{"input": "?", "config": {"metadata": {"n": NaN}}}', "NaN"),
        (b'{"input": "?", "config": {"metadata": {"n": -Infinity}}}', "Infinity"),
    ],
    ids=["deep-array", "deep-input", "5001-digits", "beyond-64-bits", "nan", "infinity"],
)
async def test_json_too_deep_or_too_large_is_a_400_naming_it(body: bytes, said: str) -> None:
    async with serving(cat(), max_body=1 << 20) as served:
        for path in ("/runs/stream", "/runs/wait"):
            got = await served.client.post(
                path, content=body, headers={"content-type": "application/json"}
            )
            assert got.status_code == 400, (path, got.text[:200])
            assert got.json()["field"] == "body" and said in got.json()["error"]
        assert await _live(served) == 0


async def test_json_as_deep_as_allowed_is_served() -> None:
    nested: Any = "x"
    for _ in range(96):  # with the body, config and metadata: 100 levels
        nested = [nested]
    body = {**QUESTION, "config": {"metadata": {"deep": nested, "big": 2**63 - 1}}}
    async with (
        serving(cat()) as served,
        served.client.stream("POST", "/runs/stream", json=body) as response,
    ):
        events = await read_sse(response)
    assert response.status_code == 200
    assert events[0].json()["metadata"]["big"] == 2**63 - 1
    assert events[-1].event == "on_chain_end"


# -- 5. slow bodies, floods ------------------------------------------------------------


async def _open(url: str) -> trio.SocketStream:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


def _head(length: int, path: str = "/runs/wait") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
        f"content-length: {length}\r\n\r\n"
    ).encode()


async def _answer(stream: trio.SocketStream) -> bytes:
    got = b""
    with trio.fail_after(20):
        while b"\r\n\r\n" not in got:
            piece = await stream.receive_some()
            if not piece:
                break
            got += piece
    return got


async def test_a_body_sent_too_slowly_is_a_408_and_health_answers_meanwhile() -> None:
    async with serving(cat(), body_timeout=0.5) as served:
        body = json.dumps(QUESTION).encode()
        sockets = [await _open(served.base_url) for _ in range(30)]
        for sock in sockets:
            await sock.send_all(_head(len(body)) + body[:5])  # then nothing more
        assert (await served.client.get("/health")).status_code == 200
        answers = [await _answer(sock) for sock in sockets]
        for sock in sockets:
            await sock.aclose()
        assert await _live(served) == 0
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[0][:200]
    assert all(b"connection: close" in a.lower() for a in answers)


async def test_a_flood_of_requests_past_the_bound_is_refused_at_once() -> None:
    async with serving(cat(), body_timeout=30, max_requests=8) as served:
        held = [await _open(served.base_url) for _ in range(8)]
        for sock in held:
            await sock.send_all(_head(100) + b"{")  # each holds a request open
        await trio.testing.wait_all_tasks_blocked(0.05)
        refused = await served.client.post("/runs/wait", json=QUESTION)
        health = await served.client.get("/health")
        for sock in held:
            await sock.aclose()

        async def served_again() -> bool:  # the held requests see their clients leave
            return (await served.client.post("/runs/wait", json=QUESTION)).status_code == 200

        await _eventually(served_again)
    assert refused.status_code == 503 and refused.headers["connection"] == "close"
    assert health.status_code == 200


async def test_headers_sent_too_slowly_are_cut_off() -> None:
    # hypercorn's keep-alive timeout (5 s in `troupe serve`) covers a request's head:
    # this server uses hypercorn's default, also 5 s.
    async with serving(cat()) as served:
        sock = await _open(served.base_url)
        await sock.send_all(b"POST /runs/wait HTTP/1.1\r\nhost: local")
        with trio.fail_after(15):
            while await sock.receive_some():
                pass  # the server closes the connection
        await sock.aclose()


async def test_a_client_that_leaves_mid_body_gets_no_traceback_and_starts_nothing() -> None:
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"input": ', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async with open_runtime() as rt:
        app = asgi_app(cat(), runtime=rt)
        await app(asgi_scope("POST", "/runs/stream"), receive, send)  # raises nothing
        assert app.state.troupe.runs.live() == []
    assert sent[0]["status"] == 400


async def test_a_client_gone_before_the_headers_go_out_leaves_no_run() -> None:
    # The response's start fails (the client left): the run it started is closed.
    body = json.dumps({**QUESTION, "run_id": "gone"}).encode()
    received = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if received:
            return received.pop()
        await trio.sleep_forever()
        raise AssertionError

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            raise OSError("the client has gone")

    async with open_runtime() as rt:
        app = asgi_app(cat(token_delay=SLOW), runtime=rt)
        with pytest.raises(OSError, match="gone"):
            await app(asgi_scope("POST", "/runs/stream"), receive, send)
        assert app.state.troupe.runs.live() == []
        assert not rt.open_runs


# -- 6. detached runs --------------------------------------------------------------------


async def test_detached_runs_are_capped_listed_and_aged_out() -> None:
    async with serving(cat(token_delay=SLOW), max_detached=2) as served:
        ids = []
        for _ in range(2):
            got = await served.client.post("/runs", json={**QUESTION, "detached": True})
            assert got.status_code == 202
            ids.append(got.json()["run_id"])
        third = await served.client.post("/runs", json={**QUESTION, "detached": True})
        assert third.status_code == 429 and "retry-after" in third.headers
        listed = (await served.client.get("/runs")).json()["runs"]
        assert sorted(r["run_id"] for r in listed) == sorted(ids)
        assert all(r["detached"] and r["performer"] == "Agent" for r in listed)
        await served.client.post(f"/runs/{ids[0]}/cancel")

        async def room_again() -> bool:
            got = await served.client.post("/runs", json={**QUESTION, "detached": True})
            return got.status_code == 202

        await _eventually(room_again)
    async with serving(cat(token_delay=SLOW), detached_max_age=0.2) as served:
        run_id = (await served.client.post("/runs", json={**QUESTION, "detached": True})).json()[
            "run_id"
        ]
        async with served.client.stream("GET", f"/runs/{run_id}/stream") as joined:
            events = await read_sse(joined)
        assert events[-2].json()["data"]["error"] == "cancelled"
        assert (await served.client.get("/runs")).json()["runs"] == []


# -- 9. tokens -----------------------------------------------------------------------------


async def test_a_bearer_token_is_read_as_rfc_7235_says() -> None:
    async with serving(cat(), token="  s3cret ") as served:
        for header in ("Bearer s3cret", "bearer s3cret", "BEARER  s3cret"):
            got = await served.client.get("/performers", headers={"authorization": header})
            assert got.status_code == 200, header
        for header in ("Basic s3cret", "Bearer", "s3cret", "Bearer s3cre", "Bearer s3cret2"):
            got = await served.client.get("/performers", headers={"authorization": header})
            assert got.status_code == 401, header
            assert got.headers["www-authenticate"] == "Bearer"
    with pytest.raises(ValueError, match="token"):
        asgi_app(cat(), token="   ")


def _troupe(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actors", "serve", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_an_empty_token_is_one_line_and_the_command_line_token_warns(tmp_path: Any) -> None:
    empty = _troupe(env={"TROUPE_TOKEN": ""})
    assert empty.returncode == 2 and "TROUPE_TOKEN is set but empty" in empty.stderr
    assert len(empty.stderr.strip().splitlines()) <= 3 and "Traceback" not in empty.stderr
    blank_file = tmp_path / "token"
    blank_file.write_text("\n")
    from_file = _troupe("--token-file", str(blank_file))
    assert from_file.returncode == 2 and "holds no token" in from_file.stderr
    missing = _troupe("--token-file", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    both = _troupe("--token", "a", "--token-file", str(blank_file))
    assert both.returncode == 2 and "not both" in both.stderr
    bad_auth = _troupe("--auth", "tests.test_serve_guard:QUESTION")
    assert bad_auth.returncode == 2 and "not a function" in bad_auth.stderr


async def test_a_token_file_and_the_ps_warning(tmp_path: Any) -> None:
    from .sse_client import first_line
    from .test_demo import TROUPE

    token_file = tmp_path / "token"
    token_file.write_text("s3cret\nignored\n")
    for args, warned in ((["--token", "s3cret"], True), (["--token-file", str(token_file)], False)):
        process = await trio.lowlevel.open_process(
            [*TROUPE, "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            url = (await first_line(process)).split("serving on ")[1].strip()
            async with httpx.AsyncClient(base_url=url) as client:
                right = await client.get("/performers", headers={"authorization": "Bearer s3cret"})
                wrong = await client.get("/performers", headers={"authorization": "Bearer ignored"})
            process.terminate()
            with trio.fail_after(30):
                await process.wait()
            assert process.stderr is not None
            err = b""
            while piece := await process.stderr.receive_some():
                err += piece
        finally:
            process.kill()
        assert right.status_code == 200 and wrong.status_code == 401
        assert ("visible to every user" in err.decode()) is warned, err


# -- 10. headers -----------------------------------------------------------------------


async def test_every_response_carries_the_hardening_headers() -> None:
    async with serving(cat()) as served:
        responses = [
            await served.client.get("/"),
            await served.client.get("/performers"),
            await served.client.get("/viewer/runs"),
            await served.client.get("/nowhere"),
            await served.client.post("/runs/wait", json={"input": 5}),
            await served.client.get("/health", headers={"host": "attacker.example"}),
        ]
        async with served.client.stream("POST", "/runs/stream", json=QUESTION) as streamed:
            await read_sse(streamed)
    for response in [*responses, streamed]:
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    for response in [*responses[1:], streamed]:
        assert response.headers["cache-control"] == "no-store"


# -- 11. the first heartbeat -------------------------------------------------------------


@pytest.mark.parametrize("heartbeat", [1.0, 15.0])
async def test_the_first_heartbeat_comes_one_interval_after_the_last_write(
    heartbeat: float, autojump_clock: trio.testing.MockClock
) -> None:
    pings: list[float] = []
    start = trio.current_time()

    async def send(message: MutableMapping[str, Any]) -> None:
        if message.get("body") == b": ping\n\n":
            pings.append(trio.current_time() - start)

    async def receive() -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError

    async def produce(write: Any) -> None:
        await write(b"data: 1\n\n")
        await trio.sleep(heartbeat * 3.5)

    await SSEResponse(produce, {}, heartbeat)({"type": "http"}, receive, send)
    assert pings == [heartbeat, heartbeat * 2, heartbeat * 3]


async def test_a_write_that_waits_for_its_client_gets_no_heartbeat_and_no_busy_watcher(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The second write waits 10 heartbeats for its client (a reader that stopped): no
    # ping goes out meanwhile (the stream is not silent, and a frame must stay whole),
    # the watcher looks once a heartbeat rather than spinning, and pings resume after.
    heartbeat = 1.0
    sent: list[tuple[float, bytes]] = []
    looks = [0]
    start = trio.current_time()

    async def send(message: MutableMapping[str, Any]) -> None:
        body = message.get("body", b"")
        if body == b"data: 2\n\n":
            await trio.sleep(heartbeat * 10)
        sent.append((trio.current_time() - start, body))

    async def receive() -> dict[str, Any]:
        looks[0] += 1
        await trio.sleep_forever()
        raise AssertionError

    async def produce(write: Any) -> None:
        await write(b"data: 1\n\n")
        await write(b"data: 2\n\n")
        await trio.sleep(heartbeat * 2.5)

    await SSEResponse(produce, {}, heartbeat)({"type": "http"}, receive, send)
    bodies = [body for _, body in sent if body]
    assert bodies == [b"data: 1\n\n", b"data: 2\n\n", b": ping\n\n", b": ping\n\n"]
    assert [at for at, body in sent if body == b": ping\n\n"] == [11.0, 12.0]
    assert looks[0] <= 15  # about one a heartbeat (a spinning watcher: thousands)


# -- who may see what ------------------------------------------------------------------


def _by_header(request: Request) -> Identity | None:
    user = request.headers.get("x-user")
    if user is None:
        return None
    if user == "boom":
        raise RuntimeError("the user store is down")
    if user == "odd":
        return "alice"  # type: ignore[return-value]  # a hook's mistake, on purpose
    return Identity(user, sees_all=user == "admin")


async def _async_by_header(request: Request) -> Identity | None:
    await trio.lowlevel.checkpoint()
    return _by_header(request)


@pytest.mark.parametrize("hook", [_by_header, _async_by_header])
async def test_each_identity_sees_only_its_own_runs(hook: Any) -> None:
    alice, bob, admin = ({"x-user": name} for name in ("alice", "bob", "admin"))
    async with serving(cat(token_delay=SLOW), auth=hook) as served:
        client = served.client
        started = await client.post("/runs", json={**QUESTION, "detached": True}, headers=alice)
        run_id = started.json()["run_id"]
        assert [r["run_id"] for r in (await client.get("/runs", headers=alice)).json()["runs"]] == [
            run_id
        ]
        assert (await client.get("/runs", headers=bob)).json()["runs"] == []
        assert len((await client.get("/runs", headers=admin)).json()["runs"]) == 1
        for method, path in [("GET", f"/runs/{run_id}/stream"), ("POST", f"/runs/{run_id}/cancel")]:
            refused = await client.request(method, path, headers=bob)
            assert refused.status_code == 404 and refused.json()["error"].startswith("no live run")
        # bob's own run is bob's
        bobs = await client.post(
            "/runs", json={**QUESTION, "detached": True, "run_id": "bobs"}, headers=bob
        )
        assert bobs.status_code == 202
        assert (await client.post("/runs/bobs/cancel", headers=alice)).status_code == 404
        assert (await client.post("/runs/bobs/cancel", headers=bob)).status_code == 202
        assert (await client.post(f"/runs/{run_id}/cancel", headers=admin)).status_code == 202
        for headers in ({}, {"x-user": "boom"}, {"x-user": "odd"}):
            for method, path in [
                ("GET", "/runs"),
                ("GET", "/performers"),
                ("POST", "/runs/wait"),
                ("GET", f"/runs/{run_id}/stream"),
            ]:
                got = await client.request(method, path, json=QUESTION, headers=headers)
                assert got.status_code == 401, (headers, path)
                assert "the user store is down" not in got.text
        assert (await client.get("/health")).status_code == 200


def test_an_identity_names_someone() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        Identity("")
    assert Identity("a").may_see("a") and not Identity("a").may_see("b")
    assert not Identity("a").may_see(None) and Identity("a", sees_all=True).may_see(None)


async def test_the_docs_auth_hook_works_as_written() -> None:
    import re

    readme = await (trio.Path(__file__).parent.parent / "docs" / "serving.md").read_text(
        encoding="utf-8"
    )
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "def identify" in b)
    space: dict[str, Any] = {}
    exec(block, space)  # the README's own code
    async with serving(cat(), auth=space["identify"]) as served:
        ada = {"x-api-key": "key-of-ada"}
        bob = {"x-api-key": "key-of-bob"}
        done = await served.client.post("/runs/wait", json=QUESTION, headers=bob)
        assert done.status_code == 200
        assert (await served.client.get("/runs", headers=ada)).status_code == 200
        assert (await served.client.get("/runs")).status_code == 401


async def test_binding_beyond_loopback_without_a_token_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from actors.serve import serve
    from actors.serve._server import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    cases: list[tuple[dict[str, Any], bool]] = [({}, True), ({"token": "t"}, False)]
    for options, warned in cases:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="troupe.serve"):
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    functools.partial(
                        serve, cat(), host="0.0.0.0", port=0, tune_gc=False, **options
                    )
                )
                nursery.cancel_scope.cancel()
        said = [r.message for r in caplog.records if "without a token" in r.message]
        assert bool(said) is warned, said


async def _half_body_then_leave(url: str, delay: float) -> None:
    sock = await _open(url)
    body = json.dumps(QUESTION).encode()
    await sock.send_all(_head(len(body)) + body[:3])
    await trio.sleep(delay)
    await sock.aclose()


async def test_clients_leaving_as_their_408_is_written_never_stop_the_server() -> None:
    # Each client leaves about when the server answers its half-sent body: hypercorn's
    # h11 layer then writes an error response while the answer's end closes the socket,
    # and the BusyResourceError ended hypercorn's whole server in the first round of 50.
    rng = random.Random(7)
    async with serving(cat(), body_timeout=0.05) as served:
        for _ in range(5):
            async with trio.open_nursery() as nursery:
                for _ in range(50):
                    nursery.start_soon(
                        _half_body_then_leave, served.base_url, rng.uniform(0.03, 0.07)
                    )
            assert (await served.client.get("/health")).status_code == 200
        assert (await served.client.post("/runs/wait", json=QUESTION)).status_code == 200


async def test_connections_past_the_bound_wait_to_be_accepted() -> None:
    async with serving(cat(), max_connections=4) as served:
        held = [await _open(served.base_url) for _ in range(4)]
        for sock in held:
            await sock.send_all(_head(100) + b"{")
        waiting = await _open(served.base_url)  # in the listen backlog
        await waiting.send_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n")
        with trio.move_on_after(0.3):
            assert not await waiting.receive_some()  # never answered while all are held
        await held[0].aclose()
        answer = await _answer(waiting)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
        for sock in [*held[1:], waiting]:
            await sock.aclose()


# -- found by a hostile review -----------------------------------------------------------


async def test_a_client_that_reads_nothing_is_closed_after_the_send_timeout() -> None:
    # hypercorn shields its writes: a client that stops reading held its connection (and
    # its slot, and the server's shutdown) for ever.
    async with serving(cat(), max_connections=2, send_timeout=0.5) as served:
        stalled = []
        for _ in range(2):
            sock = await _open(served.base_url)
            sock.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            # pipelined reads of the page's script, never read back
            await sock.send_all(b"GET /viewer/viewer.js HTTP/1.1\r\nhost: localhost\r\n\r\n" * 400)
            stalled.append(sock)
        with trio.fail_after(20):  # answered once the stalled connections are closed
            assert (await served.client.get("/health")).status_code == 200
        for sock in stalled:
            await sock.aclose()


async def test_the_detached_cap_holds_when_bodies_come_late() -> None:
    async with serving(cat(token_delay=SLOW), max_detached=3) as served:
        body = json.dumps({**QUESTION, "detached": True}).encode()
        sockets = []
        for _ in range(10):  # every head first, every body later
            sock = await _open(served.base_url)
            await sock.send_all(_head(len(body), "/runs"))
            sockets.append(sock)
        await trio.testing.wait_all_tasks_blocked(0.05)
        for sock in sockets:
            await sock.send_all(body)
        answers = [await _answer(sock) for sock in sockets]
        for sock in sockets:
            await sock.aclose()
        assert len((await served.client.get("/runs")).json()["runs"]) == 3
    assert sum(a.startswith(b"HTTP/1.1 202") for a in answers) == 3
    assert sum(a.startswith(b"HTTP/1.1 429") for a in answers) == 7


async def test_a_run_whose_body_arrives_during_the_drain_is_refused() -> None:
    async with serving(cat(token_delay=SLOW)) as served:
        body = json.dumps(QUESTION).encode()
        sock = await _open(served.base_url)
        await sock.send_all(_head(len(body), "/runs/stream"))
        await trio.testing.wait_all_tasks_blocked(0.05)
        server = served.app.state.troupe
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.drain, 1.0)
            await trio.testing.wait_all_tasks_blocked(0.05)
            await sock.send_all(body)
            answer = await _answer(sock)
        await sock.aclose()
        assert server.runs.live() == []
    assert answer.startswith(b"HTTP/1.1 503"), answer[:200]


async def test_a_large_config_is_refused_for_it_goes_with_every_event() -> None:
    async with serving(cat()) as served:
        big = {**QUESTION, "config": {"metadata": {"blob": "x" * 20_000}}}
        got = await served.client.post("/runs/wait", json=big)
        assert got.status_code == 413 and got.json()["field"] == "config"
        fine = {**QUESTION, "config": {"metadata": {"blob": "x" * 10_000}}}
        assert (await served.client.post("/runs/wait", json=fine)).status_code == 200


async def test_finished_runs_are_kept_within_a_byte_budget() -> None:
    from actors.serve._runs import FINISHED_BYTES

    async with serving(cat(), max_body=2 << 20) as served:
        payload = "x" * (1 << 20)
        for _ in range(40):
            got = await served.client.post("/runs/wait", json={"input": payload})
            assert got.status_code == 200
        runs = served.app.state.troupe.runs
        assert runs._finished_bytes <= FINISHED_BYTES
        assert 1 <= len(runs._finished) <= FINISHED_BYTES // (1 << 20)


async def test_wait_refuses_a_detached_run_as_stream_does() -> None:
    async with serving(cat()) as served:
        got = await served.client.post("/runs/wait", json={**QUESTION, "detached": True})
    assert got.status_code == 422 and got.json()["field"] == "detached"


def test_a_token_that_no_header_can_carry_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="ASCII"):
        asgi_app(cat(), token="s\u00e9cret")


def test_every_host_without_a_token_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="troupe.serve"):
        asgi_app(cat(), allow_hosts=["*"])
        asgi_app(cat(), allow_hosts=["*"], token="t")
    assert len([r for r in caplog.records if "every host name" in r.message]) == 1


def test_allowed_host_names_are_read_as_users_write_them() -> None:
    rule = HostRule(["App.Example.:8000"])
    assert rule.accepts("app.example:9000") and rule.accepts("app.example.")


async def test_a_token_in_the_url_is_not_taken() -> None:
    # a token in a URL ends up in logs and a browser's history: only the header counts
    async with serving(cat(), token="s3cret") as served:
        assert (await served.client.get("/performers?token=s3cret")).status_code == 401
        assert (await served.client.get("/viewer/runs?token=s3cret")).status_code == 401


def test_the_printed_viewer_address_carries_the_token_only_to_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from actors.cli._command import _viewer_url

    assert _viewer_url("http://h:1", None) == "http://h:1/"
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert _viewer_url("http://h:1", "a+b/c") == "http://h:1/#token=a%2Bb%2Fc"
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert "a+b" not in _viewer_url("http://h:1", "a+b/c")


@tool
async def stop_everything() -> str:
    """Raises KeyboardInterrupt, as Ctrl-C striking inside a tool does."""
    raise KeyboardInterrupt


def _exiting_agent() -> Agent:
    return Agent(
        ScriptedChatModel([ScriptedTurn(tool_calls=[ScriptedCall("stop_everything", {})])]),
        [stop_everything],
        name="Exiting",
    )


@pytest.mark.parametrize("path", ["/runs/wait", "/runs/stream", "/runs"])
async def test_a_run_that_raises_an_exit_tells_its_client_and_stops_the_server(
    path: str,
) -> None:
    # Errors stay themselves: the run's client is told, as of any error, and the server
    # then drains and stops as on Ctrl-C, raising the very KeyboardInterrupt.
    from actors.serve import serve

    answers: list[httpx.Response] = []
    # (the test's nursery puts it in a group; `troupe serve` unwraps it: exit 130)
    with pytest.RaisesGroup(KeyboardInterrupt, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                functools.partial(serve, _exiting_agent(), port=0, tune_gc=False)
            )
            async with httpx.AsyncClient(base_url=urls[0], timeout=30) as client:
                body = {"input": "go", "detached": path == "/runs"}
                answers.append(await client.post(path, json=body))
            with trio.fail_after(30):
                await trio.sleep_forever()  # the server stops on its own
    answer = answers[0]
    if path == "/runs/wait":
        assert answer.json()["status"] == "error" and answer.json()["error"] == "KeyboardInterrupt"
    elif path == "/runs/stream":
        assert '"error":"KeyboardInterrupt"' in answer.text
    else:
        assert answer.status_code == 202
