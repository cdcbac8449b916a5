"""The OpenAI-compatible server of the tests: :class:`actors.testing.FakeOpenAI`, given
hand-written answers (``Answer``, built by the helpers below) for clients' odd cases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from actors.testing import FakeOpenAI, RawAnswer, ReceivedRequest

Answer = RawAnswer
Received = ReceivedRequest


@asynccontextmanager
async def fake_openai(*answers: Answer, **behaviour: Any) -> AsyncIterator[FakeOpenAI]:
    """Run a scripted server for the ``async with`` block (``behaviour``: see
    :class:`~actors.testing.FakeOpenAI`)."""
    async with FakeOpenAI(answers, **behaviour) as server:
        yield server


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
