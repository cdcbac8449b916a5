"""A chat model served over OpenAI's chat completions API, through the official SDK.

Any OpenAI-compatible server works by ``base_url``: OpenAI, vLLM, Ollama, llama.cpp's
server, LM Studio. The SDK does the HTTP work; the actor keeps the clocks and the
retries itself, because their meaning matters on real servers:

- ``timeout`` bounds the wait for the response to *begin* (its headers). A streamed
  request that timed out is not sent again by default: a busy server (llama.cpp's sends
  no headers until the first token) would do the same work two or three times.
- ``idle_timeout`` bounds each silence *within* a stream, so a model that thinks for a
  minute before it speaks needs a larger one, not a larger ``timeout``.
- 429 and 5xx answers and refused connections are retried with back-off (honouring
  ``retry-after``). A request the server dropped without a byte of answer (a kept-alive
  connection it had closed) is retried at once, with no back-off: it never reached the
  model.

The actor reads the server-sent events itself, so that a stall mid-stream, a stream cut
short, a malformed event or invalid JSON each end the run with a clear
:class:`ModelError` instead of a hang or a silently empty answer.
"""

from __future__ import annotations

import json
import os
import random
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import TYPE_CHECKING, Any, Final

import trio
from attrs import field, frozen

from protocol import (
    AssistantMessageChunk,
    ChatMessage,
    ChatRequest,
    SystemMessage,
    ToolCallChunk,
    ToolMessage,
    ToolSpec,
    Usage,
    UserMessage,
)
from runtime import positive_int, seconds

from . import _trace_ids
from ._chat_model import ChatModel, ChunkSink, ls_metadata
from ._trace_ids import TRACEPARENT, traceparent_of

if TYPE_CHECKING:
    import openai
from ._errors import ModelError
from ._fields import metadata_dict, run_name, tag_tuple

DEFAULT_TIMEOUT: Final = 60.0
DEFAULT_IDLE_TIMEOUT: Final = 30.0
STALE_CONNECTION_RETRIES: Final = 3
"""How often a request the server dropped without answering is sent again at once."""
RETRYABLE_STATUS: Final = frozenset({408, 409, 429})
TOOL_CHOICES: Final = ("auto", "none", "required")
STRUCTURED_OUTPUT: Final = ("json_schema", "prompt")


def _check_tool_choice(value: object) -> None:
    if value is None or (isinstance(value, str) and value.isidentifier()):
        return  # a mode, or a tool's name
    if isinstance(value, dict) and isinstance(value.get("function"), dict):
        return  # {"type": "function", "function": {"name": ...}}: that tool
    raise ValueError(
        f"tool_choice must be one of {', '.join(TOOL_CHOICES)}, a tool's name, or "
        f'{{"type": "function", "function": {{"name": ...}}}}, got {value!r}'
    )


class _HeadersTimeout(Exception):
    """The response did not begin within the timeout."""


@frozen(eq=False)
class OpenAIChatModel(ChatModel):
    """A chat model behind an OpenAI-compatible server.

    Args:
        model: the model name the server knows (``"gpt-4o-mini"``, ``"llama3.1"``, ...).
        base_url: the API root, e.g. ``http://localhost:11434/v1``; default
            ``OPENAI_BASE_URL`` or OpenAI's.
        api_key: default ``OPENAI_API_KEY``; local servers accept any value.
        streaming: stream tokens (default); ``False`` asks for the whole answer at once
            (for servers that cannot stream) and sends it as one chunk.
        temperature, top_p, max_tokens, stop, seed: sampling parameters (sent only if set).
        tool_choice: ``"auto"``, ``"none"``, ``"required"``, a tool's name, or OpenAI's
            ``{"type": "function", "function": {"name": ...}}``; sent when there are
            tools. With ``"required"``, an answer without a tool call is an error that
            says the server may be ignoring the tools.
        extra_body: more request fields, as the server knows them.
        timeout: seconds to wait for the response to begin (its headers, or the whole
            answer when not streaming).
        idle_timeout: seconds a stream may go without data before the run fails. Models
            that think before they speak can be silent for longer than the 30 s default.
        max_retries: retries of refused connections, 408, 409, 429 and 5xx answers,
            with back-off (a dropped kept-alive connection is retried at once as well).
        retry_timeouts: also send a request again after ``timeout`` (off by default: a
            queued server would do the work again).
        max_concurrency: requests this actor sends at once, shared by every agent
            that uses it (``None``: no limit).
        structured_output: how an agent's ``output_type`` is asked for:
            ``"json_schema"`` (default) sends OpenAI's ``response_format`` of type
            ``json_schema`` (OpenAI, vLLM, Ollama, llama.cpp's server take it);
            ``"prompt"`` for a server that does not: the agent's system prompt gives
            the schema. Either way the answer is validated.
    """

    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    name: str = field(default="OpenAIChatModel", converter=run_name)
    streaming: bool = True
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    tool_choice: str | dict[str, Any] | None = None
    extra_body: dict[str, Any] = field(factory=dict)
    timeout: float = DEFAULT_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_retries: int = 2
    retry_timeouts: bool = False
    max_concurrency: int | None = None
    structured_output: str = "json_schema"
    tags: tuple[str, ...] = field(default=(), converter=tag_tuple)
    metadata: dict[str, Any] = field(factory=dict, converter=metadata_dict)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a non-empty string, got {self.model!r}")
        for value, what in ((self.timeout, "timeout"), (self.idle_timeout, "idle_timeout")):
            if value is not None:
                seconds(value, what)
        _check_tool_choice(self.tool_choice)
        if not isinstance(self.retry_timeouts, bool):
            raise TypeError(f"retry_timeouts must be True or False, got {self.retry_timeouts!r}")
        if (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or self.max_retries < 0
        ):
            raise ValueError(f"max_retries must be an integer >= 0, got {self.max_retries!r}")
        positive_int(self.max_concurrency, "max_concurrency", optional=True)
        if self.structured_output not in STRUCTURED_OUTPUT:
            raise ValueError(
                f"structured_output must be one of {STRUCTURED_OUTPUT}, "
                f"got {self.structured_output!r}"
            )
        if self.api_key is None and not os.environ.get("OPENAI_API_KEY"):
            raise ValueError(
                "no API key: pass api_key= or set OPENAI_API_KEY "
                "(a local server accepts any value, e.g. api_key='none')"
            )

    provider = "openai"

    @property
    def native_response_format(self) -> bool:
        return self.structured_output == "json_schema"

    @property
    def model_name(self) -> str:
        return self.model

    def local_metadata(self, message: ChatRequest) -> dict[str, Any]:
        """LangChain's ``ls_*`` keys: the model, the provider, the sampling settings that
        are set, and where the server is (``ls_server_address``, ``ls_server_port``)."""
        local: dict[str, Any] = {"ls_model_name": self.model_name, "ls_provider": self.provider}
        for key in ("temperature", "max_tokens", "top_p", "seed"):
            value = getattr(self, key)
            if value is not None:
                local[f"ls_{key}"] = value
        url = urllib.parse.urlsplit(self.endpoint)
        if url.hostname:
            local["ls_server_address"] = url.hostname
            local["ls_server_port"] = url.port or (443 if url.scheme == "https" else 80)
        return ls_metadata(**local)

    @property
    def endpoint(self) -> str:
        """The API root requests go to."""
        return self.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"

    def open_actor(self) -> AbstractAsyncContextManager[Any]:
        # The client belongs to the actor and closes with the runtime: the SDK's own
        # __del__ cleanup is asyncio-only and would leak sockets under trio. The SDK is
        # imported here, not at import time: scripted runs never pay for it.
        import openai

        # The actor keeps the clocks and the retries (see the module's docstring).
        return openai.AsyncOpenAI(
            api_key=self.api_key, base_url=self.base_url, timeout=None, max_retries=0
        )

    def request_body(self, request: ChatRequest) -> dict[str, Any]:
        """The chat completions request for ``request``, in OpenAI's format."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [openai_message(m) for m in request.messages],
        }
        if request.tools:
            body["tools"] = [openai_tool(t) for t in request.tools]
            choice = self.tool_choice
            if isinstance(choice, str) and choice not in TOOL_CHOICES:
                choice = {"type": "function", "function": {"name": choice}}
            if choice is not None:
                body["tool_choice"] = choice
        shape = request.response_format
        if shape is not None and self.native_response_format:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": shape.name, "schema": shape.schema, "strict": shape.strict},
            }
        for key in ("temperature", "top_p", "max_tokens", "seed"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        if self.stop is not None:
            body["stop"] = list(self.stop)
        if self.streaming:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def generate(self, request: ChatRequest, sink: ChunkSink) -> None:
        client: openai.AsyncOpenAI = sink.actor_state
        body = self.request_body(request)
        model, messages = body.pop("model"), body.pop("messages")
        extra = {**self.extra_body, **body}
        headers: dict[str, str] = {}
        if _trace_ids.propagating:  # the server's own traces join the run's
            context = sink.context
            root = context.parent_ids[0] if context.parent_ids else context.run_id
            headers[TRACEPARENT] = traceparent_of(context.run_id, root, context.metadata)
        try:
            async with AsyncExitStack() as stack:
                response = await self._begin(stack, client, model, messages, extra, headers)
                if self.streaming:
                    await self._read_stream(response.iter_lines(), sink)
                else:
                    with trio.move_on_after(self.timeout) as waited:
                        completion = await response.json()
                    if waited.cancelled_caught:
                        raise ModelError(
                            f"{self.endpoint} did not send the whole answer within {self.timeout} s"
                        )
                    await sink.send(chunk_of_completion(completion))
        except ModelError:
            raise
        except Exception as exc:  # the transport failing while the body streams
            raise ModelError(
                f"reading the answer from {self.endpoint} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if self.tool_choice == "required" and request.tools and not sink.message().tool_calls:
            raise ModelError(
                f"tool_choice='required' was asked, but {self.endpoint} answered without a "
                "tool call: the server may be ignoring the tools (a chat template without "
                "tool support; llama.cpp's server needs --jinja)"
            )

    async def _begin(
        self,
        stack: AsyncExitStack,
        client: openai.AsyncOpenAI,
        model: str,
        messages: Any,
        extra: dict[str, Any],
        headers: dict[str, str],
    ) -> Any:
        """Send the request and wait for its response to begin, retrying as the
        module's docstring says; the response stays open on ``stack``."""
        import openai

        retries = stale = 0
        while True:
            try:
                request = client.chat.completions.with_streaming_response.create(
                    model=model, messages=messages, extra_body=extra, extra_headers=headers
                )
                with trio.move_on_after(self.timeout):
                    return await stack.enter_async_context(request)
                raise _HeadersTimeout
            except _HeadersTimeout:
                if not self.retry_timeouts or retries >= self.max_retries:
                    what = "begin to answer" if self.streaming else "answer"
                    raise ModelError(
                        f"{self.endpoint} did not {what} within {self.timeout} s (timeout); "
                        + (
                            "the request was not sent again, so a busy server does not "
                            "do the work twice (raise timeout=, or set retry_timeouts=True)"
                            if not self.retry_timeouts
                            else f"after {retries} retries"
                        )
                    ) from None
                delay = _backoff(retries)
            except openai.APIConnectionError as exc:
                if _dropped_without_answer(exc) and stale < STALE_CONNECTION_RETRIES:
                    stale += 1
                    continue  # it never reached the model: at once, no back-off
                if retries >= self.max_retries:
                    raise ModelError(_connection_failure(self.endpoint, exc, retries)) from None
                delay = _backoff(retries)
            except openai.APIStatusError as exc:
                code = exc.status_code
                if (code not in RETRYABLE_STATUS and code < 500) or retries >= self.max_retries:
                    raise ModelError(
                        f"{self.endpoint} answered HTTP {code}: {_error_text(exc)}"
                        + (f" (after {retries} retries)" if retries else "")
                    ) from None
                delay = _retry_after(exc) or _backoff(retries)
            retries += 1
            await _sleep_before_retry(delay)

    async def _read_stream(self, lines: AsyncIterator[str], sink: ChunkSink) -> None:
        finished = done = False
        data: list[str] = []
        while True:
            with trio.move_on_after(self.idle_timeout) as waited:
                try:
                    line = await lines.__anext__()
                except StopAsyncIteration:
                    break
            if waited.cancelled_caught:
                raise ModelError(
                    f"the stream from {self.endpoint} stalled: no data for {self.idle_timeout} s"
                )
            if done:
                if line.strip():
                    raise ModelError(f"data after [DONE] in the stream: {line[:200]!r}")
                continue
            if line == "":
                payload, data = "\n".join(data), []
                if not payload:
                    continue
                if payload == "[DONE]":
                    done = True
                    continue
                chunk = chunk_of_delta(payload)
                finished = finished or chunk.finish_reason is not None
                await sink.send(chunk)
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif line.startswith(":") or line.startswith(("event:", "id:", "retry:")):
                continue  # a comment or a field we do not use
            else:
                raise ModelError(f"malformed server-sent event line: {line[:200]!r}")
        if data:
            raise ModelError("the stream ended in the middle of an event")
        if not finished:
            raise ModelError(f"the stream from {self.endpoint} ended without a finish reason")
        if not done:
            raise ModelError(f"the stream from {self.endpoint} ended without [DONE]")


async def _sleep_before_retry(seconds: float) -> None:
    await trio.sleep(seconds)


def _backoff(retries: int) -> float:
    """The SDK's back-off: 0.5 s doubling up to 8 s, less up to a quarter of jitter."""
    return min(0.5 * 2.0**retries, 8.0) * (1 - 0.25 * random.random())


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                seconds = float(value) * scale
            except ValueError:
                continue
            if 0 <= seconds <= 60:
                return seconds
    return None


def _dropped_without_answer(exc: BaseException) -> bool:
    """Whether the server closed the connection before sending a byte of its answer
    (how a kept-alive connection the server had already closed shows)."""
    cause: BaseException | None = exc
    while cause is not None:
        if type(cause).__name__ == "RemoteProtocolError" and "without sending" in str(cause):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _connection_failure(endpoint: str, exc: BaseException, retries: int) -> str:
    after = f" (after {retries} retries)" if retries else ""
    if _dropped_without_answer(exc):
        return (
            f"{endpoint} closed the connection without answering, "
            f"{STALE_CONNECTION_RETRIES + 1} times in a row{after}"
        )
    return f"cannot reach {endpoint}: {exc.__cause__ or exc}{after}"


def _error_text(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message") or body.get("error", {})
        if isinstance(message, dict):
            message = message.get("message")
        if message:
            return str(message)
    return exc.message


def openai_message(message: ChatMessage) -> dict[str, Any]:
    """One conversation message in OpenAI's format."""
    if isinstance(message, SystemMessage):
        return {"role": "system", "content": message.content}
    if isinstance(message, UserMessage):
        return {"role": "user", "content": message.content}
    if isinstance(message, ToolMessage):
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    # "" rather than null beside tool calls: OpenAI takes both, but some servers
    # (llama-cpp-python's) refuse null with an HTTP 500.
    out: dict[str, Any] = {"role": "assistant", "content": message.content}
    calls = [
        {
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": json.dumps(c.args)},
        }
        for c in message.tool_calls
    ] + [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.args}}
        for c in message.invalid_tool_calls
    ]
    if calls:
        out["tool_calls"] = calls
    return out


def openai_tool(spec: ToolSpec) -> dict[str, Any]:
    """A tool in OpenAI's format."""
    return {
        "type": "function",
        "function": {
            "name": spec.name,
            "description": spec.description,
            "parameters": spec.parameters,
        },
    }


def _usage(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    return Usage(
        int(value.get("prompt_tokens") or 0),
        int(value.get("completion_tokens") or 0),
        int(value.get("total_tokens") or 0),
    )


def chunk_of_delta(payload: str) -> AssistantMessageChunk:
    """One ``chat.completion.chunk`` JSON as a chunk.

    Raises:
        ModelError: the payload is not JSON, or not a chunk.
    """
    try:
        data = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise ModelError(f"invalid JSON in a stream chunk ({exc.msg}): {payload[:200]!r}") from None
    if not isinstance(data, dict):
        raise ModelError(f"a stream chunk is not a JSON object: {payload[:200]!r}")
    if "error" in data:
        raise ModelError(f"the server sent an error mid-stream: {data['error']}")
    choices = data.get("choices") or []
    usage = _usage(data.get("usage"))
    message_id = data.get("id") if isinstance(data.get("id"), str) else None
    if not choices:
        return AssistantMessageChunk(usage=usage, id=message_id)
    choice = choices[0]
    delta = choice.get("delta") or {}
    pieces = tuple(
        ToolCallChunk(
            index=int(call.get("index", i)),
            id=call.get("id") or None,
            name=(call.get("function") or {}).get("name") or None,
            args=(call.get("function") or {}).get("arguments") or None,
        )
        for i, call in enumerate(delta.get("tool_calls") or [])
    )
    return AssistantMessageChunk(
        content=delta.get("content") or "",
        tool_call_chunks=pieces,
        usage=usage,
        finish_reason=choice.get("finish_reason"),
        id=message_id,
    )


def chunk_of_completion(data: dict[str, Any]) -> AssistantMessageChunk:
    """A whole ``chat.completion`` as the one chunk of a non-streaming model."""
    choices = data.get("choices") or []
    if not choices:
        raise ModelError("the server's completion has no choices")
    message = choices[0].get("message") or {}
    pieces = tuple(
        ToolCallChunk(
            index=i,
            id=call.get("id"),
            name=(call.get("function") or {}).get("name"),
            args=(call.get("function") or {}).get("arguments") or "",
        )
        for i, call in enumerate(message.get("tool_calls") or [])
    )
    return AssistantMessageChunk(
        content=message.get("content") or "",
        tool_call_chunks=pieces,
        usage=_usage(data.get("usage")),
        finish_reason=choices[0].get("finish_reason") or "stop",
        id=data.get("id") if isinstance(data.get("id"), str) else None,
    )
