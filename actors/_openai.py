"""A chat model served over OpenAI's chat completions API, through the official SDK.

Any OpenAI-compatible server works by ``base_url``: OpenAI, vLLM, Ollama, llama.cpp's
server, LM Studio. The SDK does the HTTP work (retries of 429/5xx honouring
``retry-after``, timeouts before headers); the actor reads the server-sent events
itself, so that a stall mid-stream, a stream cut short, a malformed event or invalid
JSON each end the run with a clear :class:`ModelError` instead of a hang or a silently
empty answer.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
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

from ._chat_model import ChatModel, ChunkSink

if TYPE_CHECKING:
    import openai
from ._errors import ModelError
from ._fields import metadata_dict, run_name, tag_tuple

DEFAULT_TIMEOUT: Final = 60.0
DEFAULT_IDLE_TIMEOUT: Final = 30.0


def _positive(value: float | None, what: str) -> None:
    if value is not None and (not isinstance(value, int | float) or value <= 0):
        raise ValueError(f"{what} must be a number of seconds > 0, got {value!r}")


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
        extra_body: more request fields, as the server knows them.
        timeout: seconds to wait for the response to begin (the SDK retries then).
        idle_timeout: seconds a stream may go without data before the run fails
            (the SDK does not retry mid-stream).
        max_retries: retries of connection errors, 408, 409, 429 and 5xx answers.
        max_concurrency: requests this actor sends at once, shared by every agent
            that uses it (``None``: no limit).
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
    extra_body: dict[str, Any] = field(factory=dict)
    timeout: float = DEFAULT_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_retries: int = 2
    max_concurrency: int | None = None
    tags: tuple[str, ...] = field(default=(), converter=tag_tuple)
    metadata: dict[str, Any] = field(factory=dict, converter=metadata_dict)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a non-empty string, got {self.model!r}")
        _positive(self.timeout, "timeout")
        _positive(self.idle_timeout, "idle_timeout")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {self.max_retries!r}")
        if self.max_concurrency is not None and (
            not isinstance(self.max_concurrency, int) or self.max_concurrency < 1
        ):
            raise ValueError(f"max_concurrency must be >= 1 or None, got {self.max_concurrency!r}")
        if self.api_key is None and not os.environ.get("OPENAI_API_KEY"):
            raise ValueError(
                "no API key: pass api_key= or set OPENAI_API_KEY "
                "(a local server accepts any value, e.g. api_key='none')"
            )

    @property
    def endpoint(self) -> str:
        """The API root requests go to."""
        return self.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"

    def open_actor(self) -> AbstractAsyncContextManager[Any]:
        # The client belongs to the actor and closes with the runtime: the SDK's own
        # __del__ cleanup is asyncio-only and would leak sockets under trio. The SDK is
        # imported here, not at import time: scripted runs never pay for it.
        import openai

        return openai.AsyncOpenAI(
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )

    def request_body(self, request: ChatRequest) -> dict[str, Any]:
        """The chat completions request for ``request``, in OpenAI's format."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [openai_message(m) for m in request.messages],
        }
        if request.tools:
            body["tools"] = [openai_tool(t) for t in request.tools]
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
        import openai

        client: openai.AsyncOpenAI = sink.actor_state
        body = self.request_body(request)
        model, messages = body.pop("model"), body.pop("messages")
        try:
            if not self.streaming:
                completion = await client.chat.completions.create(
                    model=model, messages=messages, extra_body={**self.extra_body, **body}
                )
                await sink.send(chunk_of_completion(completion.model_dump()))
                return
            async with client.chat.completions.with_streaming_response.create(
                model=model, messages=messages, extra_body={**self.extra_body, **body}
            ) as response:
                await self._read_stream(response.iter_lines(), sink)
        except openai.APITimeoutError:
            raise ModelError(
                f"{self.endpoint} did not answer within {self.timeout} s "
                f"(after {self.max_retries} retries)"
            ) from None
        except openai.APIConnectionError as exc:
            raise ModelError(f"cannot reach {self.endpoint}: {exc.__cause__ or exc}") from None
        except openai.APIStatusError as exc:
            raise ModelError(
                f"{self.endpoint} answered HTTP {exc.status_code}: {_error_text(exc)}"
            ) from None
        except ModelError:
            raise
        except Exception as exc:  # the transport failing while the body streams
            raise ModelError(
                f"reading the answer from {self.endpoint} failed: {type(exc).__name__}: {exc}"
            ) from exc

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
    out: dict[str, Any] = {"role": "assistant", "content": message.content or None}
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
    if not choices:
        return AssistantMessageChunk(usage=usage)
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
    )
