"""An OpenAI-compatible chat-completions server for offline work and tests.

A trio task on 127.0.0.1 speaking HTTP/1.1 (h11) and server-sent events as OpenAI does,
scripted by a list of replies (in Python, or a JSON/JSONL file of turns) or by a function
of the request's messages, with faults on request: a 429 with ``Retry-After``, another
error status, a stream cut short, a stall. Every request it receives is kept.

``async with FakeOpenAI(["Hello!"]) as server:`` gives ``server.base_url``;
``troupe fake-openai [SCRIPT]`` runs one from the command line and prints its base URL.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import itertools
import json
import os
import re
import sys
import time
from collections import deque
from collections.abc import (
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeAlias

import attrs
import h11
import trio
from attrs import define, field, frozen

__all__ = [
    "FakeOpenAI",
    "FakeReply",
    "FakeToolCall",
    "Fault",
    "RawAnswer",
    "ReceivedRequest",
    "load_fake_script",
    "main",
]

FaultKind: TypeAlias = Literal["rate_limit", "status", "cut", "stall"]
_FAULT_KINDS: Final = ("rate_limit", "status", "cut", "stall")
_TOKEN: Final = re.compile(r"\s*\S+|\s+")


@frozen
class Fault:
    """A fault the server plays instead of, or part-way through, a reply.

    - ``rate_limit``: HTTP 429 with ``Retry-After: retry_after`` (seconds) and OpenAI's
      error body; the reply's content is not sent (the client retries, and the next
      request takes the next reply of the script).
    - ``status``: HTTP ``status`` (default 500) with ``message``.
    - ``cut``: the answer starts, ``after`` chunks are sent (of a stream; of a whole
      answer, part of its body), then the connection closes mid-answer.
    - ``stall``: ``after`` chunks are sent, then nothing for ``seconds`` (default: until
      the client goes away), then the rest.
    """

    kind: FaultKind = field(validator=attrs.validators.in_(_FAULT_KINDS))
    after: int = 0
    retry_after: float = 1.0
    status: int = 500
    message: str | None = None
    seconds: float | None = None

    @classmethod
    def rate_limit(cls, retry_after: float = 1.0) -> Fault:
        """HTTP 429 with ``Retry-After``."""
        return cls("rate_limit", retry_after=retry_after)

    @classmethod
    def cut(cls, after: int = 1) -> Fault:
        """The connection closes after ``after`` chunks."""
        return cls("cut", after=after)

    @classmethod
    def stall(cls, after: int = 0, seconds: float | None = None) -> Fault:
        """Nothing is sent after ``after`` chunks, for ``seconds`` (default: for ever)."""
        return cls("stall", after=after, seconds=seconds)

    @classmethod
    def error(cls, status: int = 500, message: str | None = None) -> Fault:
        """An error status with OpenAI's error body."""
        return cls("status", status=status, message=message)


@frozen
class FakeToolCall:
    """A tool call the fake model makes; ``arguments`` as JSON text or a mapping."""

    name: str
    arguments: str | Mapping[str, Any] = field(factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        """The arguments as the wire carries them: JSON text."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments), ensure_ascii=False)


def _tool_calls(value: Iterable[FakeToolCall | Mapping[str, Any]]) -> tuple[FakeToolCall, ...]:
    return tuple(c if isinstance(c, FakeToolCall) else _tool_call_from(c) for c in value)


def _tool_call_from(data: Mapping[str, Any]) -> FakeToolCall:
    function = data.get("function")
    if isinstance(function, Mapping):  # OpenAI's own shape
        return FakeToolCall(function["name"], function.get("arguments", "{}"), data.get("id"))
    return FakeToolCall(data["name"], data.get("arguments", {}), data.get("id"))


@frozen
class FakeReply:
    """One turn of the fake model: text and/or tool calls, or a fault.

    Streamed, ``content`` goes out a word at a time (``token_delay`` seconds apart);
    tool-call arguments go out in pieces of a few characters, as OpenAI sends them.
    """

    content: str = ""
    tool_calls: tuple[FakeToolCall, ...] = field(default=(), converter=_tool_calls)
    fault: Fault | None = None
    token_delay: float | None = None
    finish_reason: str | None = None
    usage: Mapping[str, int] | None = None

    @classmethod
    def from_json(cls, data: Any) -> FakeReply:
        """A reply from its JSON form: a string (the content), or an object with
        ``content``, ``tool_calls`` (``{"name", "arguments", "id"}`` or OpenAI's
        ``{"id", "function": {"name", "arguments"}}``), ``fault`` (a kind, or an object
        with ``kind`` and :class:`Fault`'s fields), ``token_delay``,
        ``finish_reason``, ``usage``.

        Raises:
            ValueError: ``data`` is not a reply.
        """
        if isinstance(data, str):
            return cls(data)
        if not isinstance(data, Mapping):
            raise ValueError(f"a reply is a string or an object, got {data!r:.80}")
        unknown = set(data) - {f.name for f in attrs.fields(cls)}
        if unknown:
            raise ValueError(f"a reply has no field {sorted(unknown)[0]!r}")
        fault = data.get("fault")
        if isinstance(fault, str):
            fault = Fault(fault)  # type: ignore[arg-type]  # checked by the validator
        elif isinstance(fault, Mapping):
            fault = Fault(**fault)
        elif fault is not None:
            raise ValueError(f"a fault is a kind or an object, got {fault!r:.80}")
        try:
            return cls(
                content=data.get("content") or "",
                tool_calls=data.get("tool_calls") or (),
                fault=fault,
                token_delay=data.get("token_delay"),
                finish_reason=data.get("finish_reason"),
                usage=data.get("usage"),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a reply: {data!r:.120} ({exc})") from None


@define
class RawAnswer:
    """One response written out by hand, for testing clients against odd servers.

    ``events`` are sent in order: a dict as ``data: {json}``, a str as raw bytes, a
    float as a pause of that many seconds. ``done`` ends the stream with
    ``data: [DONE]``; ``hang`` then waits until the client goes away. With ``body``
    the answer is that JSON, not a stream.
    """

    status: int = 200
    events: list[Any] = field(factory=list)
    body: dict[str, Any] | None = None
    headers: list[tuple[str, str]] = field(factory=list)
    delay_headers: float = 0.0
    done: bool = True
    hang: bool = False


@define
class ReceivedRequest:
    """A request the server got."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat messages it sent."""
        messages = self.body.get("messages", [])
        return messages if isinstance(messages, list) else []


Script: TypeAlias = (
    "Iterable[FakeReply | Fault | RawAnswer | str | Mapping[str, Any]]"
    " | Callable[[list[dict[str, Any]]], FakeReply | Fault | str"
    " | Awaitable[FakeReply | Fault | str]]"
    " | str | os.PathLike[str]"
)
"""What a :class:`FakeOpenAI` plays: replies in order, a function of each request's
messages, or the path of a JSON/JSONL file of replies."""


def load_fake_script(path: str | os.PathLike[str]) -> list[FakeReply]:
    """Replies from a file: JSON (a list of replies, or ``{"replies": [...]}``) or JSONL
    (one reply a line; blank lines and ``#`` comments skipped). See
    :meth:`FakeReply.from_json` for a reply's form.

    Raises:
        ValueError: the file is not a script, naming the line.
        OSError: the file cannot be read.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if path.suffix != ".jsonl" and stripped[:1] in ("[", "{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # perhaps JSONL of objects
        if data is not None:
            if isinstance(data, Mapping):
                data = data.get("replies", data.get("turns"))
            if not isinstance(data, list):
                raise ValueError(
                    f'{path}: a JSON script is a list of replies or {{"replies": [...]}}'
                )
            return [_reply_at(path, f"reply {n}", item) for n, item in enumerate(data, 1)]
    replies = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
        replies.append(_reply_at(path, f"line {number}", item))
    return replies


def _reply_at(path: Path, where: str, item: Any) -> FakeReply:
    try:
        return FakeReply.from_json(item)
    except ValueError as exc:
        raise ValueError(f"{path}, {where}: {exc}") from None


Responder: TypeAlias = Callable[
    [list[dict[str, Any]]], "FakeReply | Fault | str | Awaitable[FakeReply | Fault | str]"
]


class FakeOpenAI:
    """An OpenAI-compatible chat-completions server on 127.0.0.1, for the ``async with``
    block: ``async with FakeOpenAI(["Hello!"]) as server: ... server.base_url``.

    Args:
        script: replies used in order, one per request (:class:`FakeReply`, a
            :class:`Fault`, a string of content, a reply's JSON form, or a
            :class:`RawAnswer`); or a function
            (sync or async) of each request's messages returning the reply (if it
            raises, that request gets HTTP 500 naming the error); or the
            path of a JSON/JSONL script (:func:`load_fake_script`). Default: echo the
            last user message.
        model: the model name in answers and in ``GET /v1/models``.
        port: 0 picks a free port (read ``port`` / ``base_url`` inside the block).
        host: the address to listen on.
        cycle: start the script again when it runs out (otherwise a request past its
            end gets HTTP 500 saying so).
        token_delay: seconds between streamed chunks (a reply may set its own).
        refuse_null_content: answer HTTP 500 to an assistant message whose content is
            null (as llama-cpp-python's server does).
        drop_reused: close that many requests that arrive on a reused connection
            without a byte of answer (a kept-alive connection the server had closed,
            as llama.cpp's server does); they are kept in ``dropped``.
        drop_always: drop every request, on any connection.

    Answers ``POST /v1/chat/completions`` (streamed when the request says
    ``"stream": true``, with a usage chunk when ``stream_options.include_usage``) and
    ``GET /v1/models``; any API key is accepted.
    """

    def __init__(
        self,
        script: Script | None = None,
        *,
        model: str = "fake-model",
        port: int = 0,
        host: str = "127.0.0.1",
        cycle: bool = False,
        token_delay: float = 0.0,
        refuse_null_content: bool = False,
        drop_reused: int = 0,
        drop_always: bool = False,
    ) -> None:
        self._responder: Responder | None = None
        if script is None:
            self._responder = _echo
            items: list[FakeReply | RawAnswer] = []
        elif isinstance(script, (str, os.PathLike)):
            items = list(load_fake_script(script))
        elif callable(script):
            self._responder = script
            items = []
        else:
            items = [_as_reply(item) for item in script]
        self.answers: deque[FakeReply | RawAnswer] = deque(items)
        """The replies still to play."""
        self._script = tuple(items) if cycle else ()
        self.model = model
        self.host = host
        self.port = port
        self.token_delay = token_delay
        self.refuse_null_content = refuse_null_content
        self.drop_reused = drop_reused
        self.drop_always = drop_always
        self.requests: list[ReceivedRequest] = []
        """Every chat request answered, in order of arrival."""
        self.dropped: list[ReceivedRequest] = []
        self.disconnected = trio.Event()
        """Set when a client went away mid-answer."""
        self.in_flight = 0
        self.most_in_flight = 0
        """The most requests being answered at the same moment."""
        self._stack: AsyncExitStack | None = None
        self._counter = itertools.count(1)

    @property
    def base_url(self) -> str:
        """The API root for an OpenAI client: ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    async def __aenter__(self) -> Self:
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            nursery = await stack.enter_async_context(trio.open_nursery())
            stack.callback(nursery.cancel_scope.cancel)
            await nursery.start(self.serve)
        except BaseException:
            await stack.__aexit__(*sys.exc_info())
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack, self._stack = self._stack, None
        assert stack is not None, "FakeOpenAI was not entered"
        return await stack.__aexit__(exc_type, exc, tb)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and answer until cancelled; ``port`` is set before ``task_status``
        reports it started (for ``nursery.start``)."""
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(trio.serve_tcp, self.handle, self.port, host=self.host)
            )
            self.port = listeners[0].socket.getsockname()[1]
            task_status.started()

    async def handle(self, stream: trio.SocketStream) -> None:
        """Answer the requests of one connection (keep-alive included)."""
        conn = h11.Connection(h11.SERVER)
        served = 0
        try:
            while True:
                request, body = await self._read_request(conn, stream)
                if request is None:
                    return
                try:
                    parsed = json.loads(body or b"{}")
                except ValueError:
                    parsed = None
                received = ReceivedRequest(
                    request.method.decode(),
                    request.target.decode(),
                    {k.decode(): v.decode() for k, v in request.headers},
                    parsed if isinstance(parsed, dict) else {},
                )
                if self.drop_always or (served and self.drop_reused):
                    self.drop_reused = max(0, self.drop_reused - 1)
                    self.dropped.append(received)
                    return  # closed without a byte of answer
                served += 1
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                try:
                    if not isinstance(parsed, dict):
                        answer: RawAnswer | FakeReply = _error(400, "the body is not a JSON object")
                    else:
                        answer = await self._route(received)
                    keep = await self._send(conn, stream, received, answer)
                finally:
                    self.in_flight -= 1
                if not keep or conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            self.disconnected.set()
        finally:
            await stream.aclose()

    async def _route(self, received: ReceivedRequest) -> RawAnswer | FakeReply:
        path = received.path.split("?", 1)[0].rstrip("/")
        if received.method == "GET" and path.endswith("/models"):
            model = {"id": self.model, "object": "model", "created": 0, "owned_by": "troupe"}
            return RawAnswer(body={"object": "list", "data": [model]})
        if not path.endswith("/chat/completions"):
            return _error(404, f"no route {received.method} {received.path}", "not_found")
        if received.method != "POST":
            return _error(405, f"{received.method} {received.path}: use POST")
        self.requests.append(received)
        if self.refuse_null_content and any(
            isinstance(m, dict) and m.get("role") == "assistant" and m.get("content", "") is None
            for m in received.messages
        ):
            return _error(500, "1 validation error: messages.content: none")
        if self._responder is not None:
            try:
                reply = self._responder(received.messages)
                if inspect.isawaitable(reply):
                    reply = await reply
                return _as_reply(reply)
            except Exception as exc:  # the script's bug: the client hears of it, as a 500
                return _error(500, f"the script raised {type(exc).__name__}: {exc}")
        if not self.answers and self._script:
            self.answers.extend(self._script)
        if self.answers:
            return self.answers.popleft()
        return _error(500, "no scripted answer left")

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

    async def _send(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        received: ReceivedRequest,
        answer: RawAnswer | FakeReply,
    ) -> bool:
        """Send the answer; False when the connection is to close after it."""
        if isinstance(answer, RawAnswer):
            await self._send_raw(conn, stream, answer)
            return True
        fault = answer.fault
        if fault is not None and fault.kind in ("rate_limit", "status"):
            raw = (
                _error(
                    429,
                    fault.message or "Rate limit reached (a fault asked of the fake server)",
                    "rate_limit_exceeded",
                    [("retry-after", _seconds(fault.retry_after))],
                )
                if fault.kind == "rate_limit"
                else _error(fault.status, fault.message or f"HTTP {fault.status} (a fault)")
            )
            await self._send_raw(conn, stream, raw)
            return True
        streaming = received.body.get("stream") is True
        pieces = (
            self._stream_pieces(answer, received)
            if streaming
            else self._whole_pieces(answer, received)
        )
        content_type = "text/event-stream" if streaming else "application/json"
        headers = [("content-type", content_type)]
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)))
        delay = self.token_delay if answer.token_delay is None else answer.token_delay
        for sent, piece in enumerate(pieces):
            if fault is not None and sent == fault.after:
                if fault.kind == "cut":
                    return False  # the body ends mid-way: the client sees a broken answer
                await self._stall(stream, fault.seconds)
            if sent and delay:
                await trio.sleep(delay)
            await stream.send_all(conn.send(h11.Data(data=piece)))
        if fault is not None and fault.after >= len(pieces):
            if fault.kind == "cut":
                return False
            await self._stall(stream, fault.seconds)
        await stream.send_all(conn.send(h11.EndOfMessage()))
        return True

    async def _stall(self, stream: trio.SocketStream, seconds: float | None) -> None:
        if seconds is not None:
            await trio.sleep(seconds)
            return
        while await stream.receive_some(65536):  # until the client goes away
            pass
        self.disconnected.set()
        raise trio.BrokenResourceError("the client went away during a stall")

    def _ids(self, answer: FakeReply) -> tuple[str, list[str]]:
        number = next(self._counter)
        calls = [c.id or f"call_{number}_{i}" for i, c in enumerate(answer.tool_calls)]
        return f"chatcmpl-fake-{number}", calls

    def _usage(self, answer: FakeReply, received: ReceivedRequest) -> dict[str, int]:
        if answer.usage is not None:
            return dict(answer.usage)
        prompt = sum(
            len(str(m.get("content") or "").split())
            for m in received.messages
            if isinstance(m, dict)
        )
        completion = len(_TOKEN.findall(answer.content)) + len(answer.tool_calls)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _finish(self, answer: FakeReply) -> str:
        return answer.finish_reason or ("tool_calls" if answer.tool_calls else "stop")

    def _stream_pieces(self, answer: FakeReply, received: ReceivedRequest) -> list[bytes]:
        completion_id, call_ids = self._ids(answer)
        created = int(time.time())

        def chunk(delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
            }

        chunks = [chunk({"role": "assistant", "content": ""})]
        chunks += [chunk({"content": token}) for token in _TOKEN.findall(answer.content)]
        for index, (call, call_id) in enumerate(zip(answer.tool_calls, call_ids, strict=True)):
            head = {"index": index, "id": call_id, "type": "function"}
            chunks.append(
                chunk({"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]})
            )
            arguments = call.arguments_json()
            for start in range(0, len(arguments), 8):
                piece = {"index": index, "function": {"arguments": arguments[start : start + 8]}}
                chunks.append(chunk({"tool_calls": [piece]}))
        chunks.append(chunk(None, self._finish(answer)))
        options = received.body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            usage = chunk(None)
            usage["choices"] = []
            usage["usage"] = self._usage(answer, received)
            chunks.append(usage)
        pieces = [f"data: {json.dumps(c, ensure_ascii=False)}\n\n".encode() for c in chunks]
        pieces.append(b"data: [DONE]\n\n")
        return pieces

    def _whole_pieces(self, answer: FakeReply, received: ReceivedRequest) -> list[bytes]:
        completion_id, call_ids = self._ids(answer)
        message: dict[str, Any] = {"role": "assistant", "content": answer.content or None}
        if answer.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json()},
                }
                for call, call_id in zip(answer.tool_calls, call_ids, strict=True)
            ]
        elif message["content"] is None:
            message["content"] = ""
        body = {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self._finish(answer)}],
            "usage": self._usage(answer, received),
        }
        data = json.dumps(body, ensure_ascii=False).encode()
        half = max(1, len(data) // 2)
        return [data[:half], data[half:]]  # two pieces, so a fault can fall between them

    async def _send_raw(
        self, conn: h11.Connection, stream: trio.SocketStream, answer: RawAnswer
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


def _as_reply(item: Any) -> FakeReply | RawAnswer:
    if isinstance(item, (FakeReply, RawAnswer)):
        return item
    if isinstance(item, Fault):
        return FakeReply(fault=item)
    return FakeReply.from_json(item)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _error(
    status: int,
    message: str,
    code: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> RawAnswer:
    kind = (
        "requests" if status == 429 else "invalid_request_error" if status < 500 else "server_error"
    )
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return RawAnswer(status=status, body=body, headers=list(headers))


def _echo(messages: list[dict[str, Any]]) -> FakeReply:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # content parts
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return FakeReply(f"You said: {content}")
    return FakeReply("Hello! (the fake server echoes the last user message)")


def _load_script(spec: str) -> Script:
    """A script from the command line: a file, or ``MODULE:ATTR`` naming replies or a
    function of the messages."""
    if os.path.exists(spec) or ":" not in spec or re.match(r"^[A-Za-z]:[\\/]", spec):
        return spec
    module_name, _, attr = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} for the script: {exc}") from None
    try:
        value: Script = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"{module_name} has no {attr!r}") from None
    return value


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="troupe fake-openai",
        description=(
            "Serve an OpenAI-compatible chat-completions API on 127.0.0.1 for offline work "
            "and tests: POST /v1/chat/completions (streamed or not, tool calls) and "
            "GET /v1/models. Prints its base URL (for OPENAI_BASE_URL or --base-url) on "
            "stdout; any API key works."
        ),
        epilog=(
            "SCRIPT is a .json file (a list of replies) or a .jsonl file (a reply a line); "
            'a reply is "text" or {"content": ..., "tool_calls": [{"name": ..., '
            '"arguments": {...}}], "fault": ...}, a fault being "rate_limit", "status", '
            '"cut" or "stall", or {"kind": ..., "after": N, "retry_after": S, '
            '"seconds": S, "status": N}. SCRIPT may also be MODULE:ATTR naming such a list '
            "or a function of the request's messages. Without SCRIPT the server echoes "
            "the last user message."
        ),
    )
    parser.add_argument("script", nargs="?", help="the replies: FILE.json[l] or MODULE:ATTR")
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    parser.add_argument("--model", default="fake-model", help="the model name it answers as")
    parser.add_argument(
        "--token-delay", type=float, default=0.0, help="seconds between streamed chunks"
    )
    parser.add_argument(
        "--cycle", action="store_true", help="play the script again when it runs out"
    )
    return parser.parse_args(argv)


async def _serve_until_interrupted(args: argparse.Namespace) -> None:
    script = None if args.script is None else _load_script(args.script)
    async with FakeOpenAI(
        script,
        host=args.host,
        port=args.port,
        model=args.model,
        token_delay=args.token_delay,
        cycle=args.cycle,
    ) as server:
        print(server.base_url, flush=True)
        print(
            f"fake OpenAI server ({server.model}) listening; Ctrl-C stops it",
            file=sys.stderr,
            flush=True,
        )
        await trio.sleep_forever()


def main(argv: Sequence[str] | None = None) -> int:
    """``troupe fake-openai [SCRIPT] [--port N] ...``: serve until Ctrl-C, printing the
    base URL first. Returns the exit status (2 for a bad script or a busy port)."""
    args = _arguments(argv)
    try:
        trio.run(_serve_until_interrupted, args)
    except KeyboardInterrupt:
        return 0
    except BaseExceptionGroup as group:
        problem = _first_leaf(group)
        if isinstance(problem, KeyboardInterrupt):
            return 0
        if not isinstance(problem, (ValueError, OSError)):
            raise
        print(f"troupe fake-openai: {problem}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"troupe fake-openai: {exc}", file=sys.stderr)
        return 2
    return 0


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
