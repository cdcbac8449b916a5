"""A chat model that replays a script offline: the demo's model and the tests' workhorse."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import trio
from attrs import field, frozen

from protocol import (
    AssistantMessage,
    AssistantMessageChunk,
    ChatMessage,
    ChatRequest,
    ToolCallChunk,
    Usage,
)
from runtime import seconds

from ._chat_model import ChatModel, ChunkSink
from ._errors import ModelError
from ._fields import metadata_dict, run_name, tag_tuple

_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")
ARGUMENT_PIECE: Final = 8
"""Tool-call arguments stream in pieces of this many characters, as OpenAI's do."""
CHECKPOINT_EVERY: Final = 64
"""An instant model still lets other tasks run (and cancellation in) this often."""


def tokenize(text: str) -> list[str]:
    """Split text into word-like tokens with their leading spaces, punctuation apart.

    ``"".join(tokenize(t)) == t`` for every string.
    """
    return _TOKEN.findall(text)


@functools.lru_cache(maxsize=4096)
def text_chunk(token: str) -> AssistantMessageChunk:
    """The chunk that streams ``token``: chunks are immutable, so one per distinct token
    is shared by every run that streams it."""
    return AssistantMessageChunk(token)


@frozen(repr=False)
class ScriptedCall:
    """A tool call in a script. ``args`` is a dict, or a raw string sent as is (to test
    arguments that are not valid JSON)."""

    name: str
    args: dict[str, Any] | str = field(factory=dict)
    id: str | None = None

    def __repr__(self) -> str:
        # Python to paste into a regression test: defaults left out.
        parts = [repr(self.name)]
        if self.args != {}:
            parts.append(repr(self.args))
        if self.id is not None:
            parts.append(f"id={self.id!r}")
        return f"ScriptedCall({', '.join(parts)})"


def _calls(value: Iterable[ScriptedCall]) -> tuple[ScriptedCall, ...]:
    return tuple(value)


def _delay(value: float | None) -> float | None:
    return None if value is None else seconds(value, "token_delay", allow_zero=True)


@frozen(repr=False)
class ScriptedTurn:
    """One model turn: text (streamed token by token) and/or tool calls.

    ``tokens`` overrides how the text is split; ``error`` makes the model fail with that
    message after streaming the turn's tokens; ``token_delay`` (seconds) paces this
    turn's tokens, overriding the model's.
    """

    text: str = ""
    tool_calls: tuple[ScriptedCall, ...] = field(default=(), converter=_calls)
    tokens: tuple[str, ...] | None = None
    error: str | None = None
    token_delay: float | None = field(default=None, converter=_delay)

    def __repr__(self) -> str:
        # Python to paste into a regression test: defaults left out.
        parts = [repr(self.text)] if self.text else []
        if self.tool_calls:
            parts.append(f"tool_calls={list(self.tool_calls)!r}")
        for key in ("tokens", "error", "token_delay"):
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{key}={value!r}")
        return f"ScriptedTurn({', '.join(parts)})"

    def token_list(self) -> Sequence[str]:
        """The text's tokens."""
        return self.tokens if self.tokens is not None else tokenize(self.text)


Script = Callable[[Sequence[ChatMessage]], ScriptedTurn]
"""A script as a function of the conversation so far."""


def _script(value: Sequence[ScriptedTurn] | Script) -> tuple[ScriptedTurn, ...] | Script:
    if callable(value):
        return value
    turns = tuple(value)
    bad = [t for t in turns if not isinstance(t, ScriptedTurn)]
    if bad:
        raise TypeError(f"a script is a list of ScriptedTurn, got {bad[0]!r}")
    return turns


@frozen(eq=False)
class ScriptedChatModel(ChatModel):
    """Replays a script: the n-th assistant turn of any conversation is ``script[n]``.

    Each conversation replays from the start, so one model serves many runs at once
    deterministically. ``script`` may also be a function of the conversation.
    ``token_delay`` (seconds) paces tokens; 0 streams them instantly.
    """

    script: tuple[ScriptedTurn, ...] | Script = field(converter=_script)
    name: str = field(default="ScriptedChatModel", converter=run_name)
    token_delay: float = 0.0
    tags: tuple[str, ...] = field(default=(), converter=tag_tuple)
    metadata: dict[str, Any] = field(factory=dict, converter=metadata_dict)

    def __attrs_post_init__(self) -> None:
        _delay(self.token_delay)

    provider = "scripted"

    def turn_for(self, messages: Sequence[ChatMessage]) -> ScriptedTurn:
        """The scripted turn that answers ``messages``.

        Raises:
            ModelError: the script has no turn for this point of the conversation.
        """
        if callable(self.script):
            return self.script(messages)
        index = sum(1 for m in messages if isinstance(m, AssistantMessage))
        if index >= len(self.script):
            raise ModelError(
                f"scripted model {self.name!r} has {len(self.script)} turn(s); "
                f"turn {index + 1} was asked for"
            )
        return self.script[index]

    async def generate(self, request: ChatRequest, sink: ChunkSink) -> None:
        turn = self.turn_for(request.messages)
        delay = self.token_delay if turn.token_delay is None else turn.token_delay
        tokens = turn.token_list()
        if delay:
            for token in tokens:
                await trio.sleep(delay)
                await sink.send(text_chunk(token))
        else:
            # Instantly: a run of tokens at a time, letting other tasks in between runs.
            for start in range(0, len(tokens), CHECKPOINT_EVERY):
                if start:
                    await trio.lowlevel.checkpoint()
                await sink.send_many(
                    [text_chunk(t) for t in tokens[start : start + CHECKPOINT_EVERY]]
                )
        if turn.error is not None:
            raise ModelError(turn.error)
        turn_no = sum(1 for m in request.messages if isinstance(m, AssistantMessage))
        for index, call in enumerate(turn.tool_calls):
            call_id = call.id or f"call_{turn_no}_{index}"
            args = call.args if isinstance(call.args, str) else json.dumps(call.args)
            await sink.send(
                AssistantMessageChunk(
                    tool_call_chunks=(ToolCallChunk(index, call_id, call.name, ""),)
                )
            )
            for start in range(0, len(args), ARGUMENT_PIECE):
                piece = args[start : start + ARGUMENT_PIECE]
                await sink.send(
                    AssistantMessageChunk(tool_call_chunks=(ToolCallChunk(index, args=piece),))
                )
        prompt = sum(len(tokenize(getattr(m, "content", ""))) for m in request.messages)
        await sink.send(
            AssistantMessageChunk(
                finish_reason="tool_calls" if turn.tool_calls else "stop",
                usage=Usage(prompt, len(tokens), prompt + len(tokens)),
            )
        )
