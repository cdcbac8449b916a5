"""An OpenAI-compatible server for tests: a trio task on 127.0.0.1 speaking HTTP/1.1
(h11) and server-sent events exactly as OpenAI does, scripted per test, recording
every request it receives."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import h11
import trio
from attrs import define, field


@define
class Answer:
    """One scripted response.

    ``events`` are sent in order: a dict as ``data: {json}``, a str as raw bytes, a
    float as a pause of that many seconds. ``done`` ends the stream with
    ``data: [DONE]``; ``hang`` then waits until the client goes away.
    """

    status: int = 200
    events: list[Any] = field(factory=list)
    body: dict[str, Any] | None = None
    headers: list[tuple[str, str]] = field(factory=list)
    delay_headers: float = 0.0
    done: bool = True
    hang: bool = False


@define
class Received:
    """A request the server got."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeOpenAI:
    """The scripted server. ``answers`` are used in order, one per request.

    Behaviours of servers in the wild, on request: ``refuse_null_content`` answers HTTP
    500 to an assistant message whose content is null (as llama-cpp-python's server
    does); ``drop_reused`` closes that many requests that arrive on a reused
    connection without a byte of answer (a kept-alive connection the server had closed,
    as llama.cpp's server does), recorded in ``dropped``; ``drop_always`` drops every
    request, on any connection.
    """

    def __init__(
        self,
        answers: Iterable[Answer],
        *,
        refuse_null_content: bool = False,
        drop_reused: int = 0,
        drop_always: bool = False,
    ) -> None:
        self.drop_always = drop_always
        self.answers = deque(answers)
        self.refuse_null_content = refuse_null_content
        self.drop_reused = drop_reused
        self.dropped: list[Received] = []
        self.requests: list[Received] = []
        self.disconnected = trio.Event()
        self.port = 0
        self.in_flight = 0
        self.most_in_flight = 0
        """The most requests being answered at the same moment."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        served = 0
        try:
            while True:
                request, body = await self._read_request(conn, stream)
                if request is None:
                    return
                received = Received(
                    request.method.decode(),
                    request.target.decode(),
                    {k.decode(): v.decode() for k, v in request.headers},
                    json.loads(body or b"{}"),
                )
                if self.drop_always or (served and self.drop_reused):
                    self.drop_reused = max(0, self.drop_reused - 1)
                    self.dropped.append(received)
                    return  # closed without a byte of answer
                served += 1
                self.requests.append(received)
                answer = self._answer_for(received)
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                try:
                    await self._answer(conn, stream, answer)
                finally:
                    self.in_flight -= 1
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            self.disconnected.set()
        finally:
            await stream.aclose()

    def _answer_for(self, received: Received) -> Answer:
        if self.refuse_null_content and any(
            m.get("role") == "assistant" and m.get("content", "") is None
            for m in received.body.get("messages", [])
        ):
            return Answer(
                status=500,
                body={"error": {"message": "1 validation error: messages.content: none"}},
            )
        if self.answers:
            return self.answers.popleft()
        return Answer(status=500, body={"error": {"message": "no scripted answer left"}})

    async def _read_request(
        self, conn: h11.Connection, stream: trio.SocketStream
    ) -> tuple[h11.Request | None, bytes]:
        request = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    self.disconnected.set()
                    return None, b""
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return request, body
            elif isinstance(event, h11.ConnectionClosed):
                return None, b""

    async def _answer(
        self, conn: h11.Connection, stream: trio.SocketStream, answer: Answer
    ) -> None:
        await trio.sleep(answer.delay_headers)
        streaming = answer.body is None
        headers = [("content-type", "text/event-stream" if streaming else "application/json")]
        headers += answer.headers
        await stream.send_all(conn.send(h11.Response(status_code=answer.status, headers=headers)))
        if not streaming:
            await stream.send_all(conn.send(h11.Data(data=json.dumps(answer.body).encode())))
            await stream.send_all(conn.send(h11.EndOfMessage()))
            return
        for event in answer.events:
            if isinstance(event, float):
                await trio.sleep(event)
                continue
            data = (
                event.encode()
                if isinstance(event, str)
                else f"data: {json.dumps(event)}\n\n".encode()
            )
            await stream.send_all(conn.send(h11.Data(data=data)))
        if answer.hang:
            while await stream.receive_some(65536):
                pass
            self.disconnected.set()
            raise trio.BrokenResourceError("the client went away")
        if answer.done:
            await stream.send_all(conn.send(h11.Data(data=b"data: [DONE]\n\n")))
        await stream.send_all(conn.send(h11.EndOfMessage()))


@asynccontextmanager
async def fake_openai(*answers: Answer, **behaviour: Any) -> AsyncIterator[FakeOpenAI]:
    """Run a scripted server for the ``async with`` block (``behaviour``: see
    :class:`FakeOpenAI`)."""
    server = FakeOpenAI(answers, **behaviour)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


def chunk(
    delta: dict[str, Any] | None = None,
    *,
    finish: str | None = None,
    usage: dict[str, int] | None = None,
    choices: bool = True,
) -> dict[str, Any]:
    """A ``chat.completion.chunk`` as OpenAI streams it."""
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "test-model",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else [],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def text_answer(tokens: Sequence[str], *, usage: bool = True) -> Answer:
    """A streamed text answer: a role chunk, one chunk per token, finish, usage."""
    events: list[Any] = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": t}) for t in tokens]
    events.append(chunk(finish="stop"))
    if usage:
        events.append(
            chunk(
                usage={
                    "prompt_tokens": 7,
                    "completion_tokens": len(tokens),
                    "total_tokens": 7 + len(tokens),
                },
                choices=False,
            )
        )
    return Answer(events=events)


def tool_answer(calls: Sequence[tuple[str, str, str]], *, repeat_ids: bool = False) -> Answer:
    """Streamed tool calls ``(id, name, arguments JSON)``, arguments in pieces, as OpenAI
    sends them; ``repeat_ids`` repeats id and name in every delta as some servers do."""
    events: list[Any] = [chunk({"role": "assistant", "content": None})]
    for index, (call_id, name, arguments) in enumerate(calls):
        events.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ]
                }
            )
        )
        for start in range(0, len(arguments), 5):
            piece: dict[str, Any] = {
                "index": index,
                "function": {"arguments": arguments[start : start + 5]},
            }
            if repeat_ids:
                piece["id"] = call_id
                piece["function"]["name"] = name
            events.append(chunk({"tool_calls": [piece]}))
    events.append(chunk(finish="tool_calls"))
    events.append(
        chunk(usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}, choices=False)
    )
    return Answer(events=events)
