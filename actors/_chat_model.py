"""The chat-model performer: turns a conversation into a streamed assistant turn."""

from __future__ import annotations

import functools
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final, Unpack

import trio

from protocol import (
    AssistantMessage,
    AssistantMessageChunk,
    ChatRequest,
    SystemMessage,
    ToolMessage,
    UserMessage,
    coerce_messages,
    merge_chunks,
)
from runtime import SCHEDULE_EVERY, Performer, Run

if TYPE_CHECKING:
    from runtime import ChunkStream, RunConfig, StreamOptions

_MESSAGE_TYPES = (SystemMessage, UserMessage, AssistantMessage, ToolMessage)

_SCHEDULE_LAST: Final = SCHEDULE_EVERY - 1
# Module names: paid per token, each of trio.lowlevel.x's two lookups costs.
_cancel_point = trio.lowlevel.checkpoint_if_cancelled
_schedule_point = trio.lowlevel.cancel_shielded_checkpoint

TEXT_BLOCK: Final = 32
"""A model run keeps its streamed text joined in blocks of this many tokens."""


@functools.lru_cache(maxsize=1024)
def _ls_items(items: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    return dict(items)


def ls_metadata(**items: Any) -> dict[str, Any]:
    """A model run's ``ls_*`` metadata, one shared (read-only) dict per distinct set:
    thousands of model runs may be open at once, and theirs are nearly all alike."""
    return _ls_items(tuple(items.items()))


class ChunkSink:
    """Where a model puts the chunks of the turn it generates, in order.

    Each chunk becomes an ``on_chat_model_stream`` event; together they make the
    run's output (:meth:`message`), so the streamed text always equals the final
    message's text. Only the text and the few chunks that carry more than text are
    kept, so a streamed chunk is freed once its subscribers have read it.
    """

    __slots__ = (
        "_blocks",
        "_emit_nowait",
        "_run",
        "_special",
        "_text",
        "_to_yield",
        "actor_state",
        "context",
    )

    def __init__(self, run: Run) -> None:
        self._run = run
        self.actor_state = run.actor_state
        """What the model's ``open_actor`` yielded (e.g. its HTTP client)."""
        self.context = run.context
        """The run's context (its id, parents, metadata)."""
        self._emit_nowait = run.emit_nowait
        # The text so far: the latest tokens, and the ones before joined in blocks. Off
        # a network each token is a string of its own (about 55 bytes); kept one by one
        # until the run's end, they were most of what an open run with a long answer
        # cost (a 300-token answer: 36 KiB per open run, 20 with blocks).
        self._text: list[str] = []
        self._blocks: list[str] = []
        self._special: list[AssistantMessageChunk] = []
        self._to_yield = _SCHEDULE_LAST  # sends left before the next schedule point

    async def send(self, chunk: AssistantMessageChunk) -> None:
        """Stream one chunk (waits only when the tracer is far behind). As
        :meth:`Run.emit <runtime.Run.emit>`: a cancel point on every call, a schedule
        point at least once every ``SCHEDULE_EVERY`` calls."""
        await _cancel_point()
        text = self._text  # _keep, inline: this is paid per token
        text.append(chunk.content)
        if len(text) == TEXT_BLOCK:
            self._blocks.append("".join(text))
            text.clear()
        if chunk.tool_call_chunks or chunk.usage is not None or chunk.finish_reason is not None:
            self._special.append(chunk)
        if not self._emit_nowait(chunk):
            self._to_yield = _SCHEDULE_LAST
            await self._run.flush()  # always a checkpoint
            return
        left = self._to_yield  # a countdown: per token, the cheapest test
        if left:
            self._to_yield = left - 1
        else:
            self._to_yield = _SCHEDULE_LAST
            await _schedule_point()

    async def send_many(self, chunks: Sequence[AssistantMessageChunk]) -> None:
        """Stream several chunks, in order, as one message to the tracer: for a model
        that has a run of chunks ready at once. Checkpoints as :meth:`send` (counting
        calls)."""
        await _cancel_point()
        keep = self._keep
        for chunk in chunks:
            keep(chunk)
        if not self._run.emit_many_nowait(chunks):
            self._to_yield = _SCHEDULE_LAST
            await self._run.flush()  # always a checkpoint
            return
        left = self._to_yield
        if left:
            self._to_yield = left - 1
        else:
            self._to_yield = _SCHEDULE_LAST
            await _schedule_point()

    def _keep(self, chunk: AssistantMessageChunk) -> None:
        text = self._text
        text.append(chunk.content)
        if len(text) == TEXT_BLOCK:
            self._blocks.append("".join(text))
            text.clear()
        if chunk.tool_call_chunks or chunk.usage is not None or chunk.finish_reason is not None:
            self._special.append(chunk)

    def message(self, model_name: str | None = None) -> AssistantMessage:
        """The complete message the chunks sent so far make; its ``id`` is the server's,
        else ``run-{run_id}`` as LangChain's."""
        merged = merge_chunks(self._special)
        # Made afresh rather than by attrs.evolve (1.2 µs against 3.0; once per model run)
        return AssistantMessage(
            content="".join([*self._blocks, *self._text]),
            tool_calls=merged.tool_calls,
            invalid_tool_calls=merged.invalid_tool_calls,
            usage=merged.usage,
            finish_reason=merged.finish_reason,
            id=merged.id or f"run-{self.context.run_id}",
            model_name=model_name,
        )


class ChatModel(Performer[ChatRequest, AssistantMessage]):
    """Base of chat models. Subclasses implement :meth:`generate`.

    ``ainvoke`` takes a string, a list of messages or a :class:`ChatRequest` and
    returns the :class:`AssistantMessage`; ``astream`` yields its chunks. A model that
    cannot stream sends the whole turn as one chunk.
    """

    __slots__ = ()
    run_kind = "chat_model"

    @abstractmethod
    async def generate(self, request: ChatRequest, sink: ChunkSink) -> None:
        """Produce the next turn of ``request``'s conversation into ``sink``.

        Raises:
            ModelError: the model could not produce a turn.
        """

    def coerce_input(self, value: Any) -> ChatRequest:
        """Accept a string, a message, a list of messages (Troupe's, ``{"role",
        "content"}`` dicts or ``(role, content)`` tuples) or a :class:`ChatRequest`.

        Raises:
            TypeError: anything else, naming the message at fault.
        """
        if isinstance(value, ChatRequest):
            return value
        if isinstance(value, str):
            return ChatRequest((UserMessage(value),))
        if isinstance(value, _MESSAGE_TYPES):
            return ChatRequest((value,))
        if isinstance(value, Sequence) and not isinstance(value, bytes):
            try:
                return ChatRequest(coerce_messages(value))
            except TypeError as exc:
                raise TypeError(f"model {self.name!r}: {exc}") from None
        raise TypeError(
            f"model {self.name!r} takes a string, a list of chat messages or a ChatRequest, "
            f"got {type(value).__name__}"
        )

    if TYPE_CHECKING:

        def astream(
            self,
            input: Any,
            config: RunConfig | Mapping[str, Any] | None = None,
            **kw: Unpack[StreamOptions],
        ) -> ChunkStream[AssistantMessageChunk]:
            """The answer's chunks, as they stream."""

    provider: ClassVar[str] = "troupe"
    """Who serves the model (``ls_provider`` in its runs' metadata, as LangChain's)."""

    @property
    def native_response_format(self) -> bool:
        """Whether this model honours :attr:`ChatRequest.response_format
        <protocol.ChatRequest.response_format>` itself; if not, an agent with an
        ``output_type`` asks for the JSON shape in its system prompt."""
        return False

    @property
    def model_name(self) -> str:
        """The model's name as its server knows it (``ls_model_name``)."""
        return self.name

    def event_input(self, message: ChatRequest) -> Any:
        return {"messages": list(message.messages)}

    def local_metadata(self, message: ChatRequest) -> dict[str, Any]:
        """``ls_model_name`` and ``ls_provider``, as LangChain's chat models put them."""
        return ls_metadata(ls_model_name=self.model_name, ls_provider=self.provider)

    async def perform(self, message: ChatRequest, run: Run) -> AssistantMessage:
        sink = ChunkSink(run)
        await self.generate(message, sink)
        return sink.message(self.model_name)
