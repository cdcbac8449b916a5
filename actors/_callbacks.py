"""LangChain-style callback handlers, run as subscriber actors.

Subclass :class:`AsyncCallbackHandler` (or :class:`BaseCallbackHandler`) and override
any of the ``on_*`` methods, sync or async, with LangChain's signatures and argument
types: ``run_id`` and ``parent_run_id`` are :class:`uuid.UUID`, ``on_llm_end`` gets an
:class:`LLMResult`, ``on_llm_new_token`` a :class:`ChatGenerationChunk`, error calls the
exception the run raised, and the ``ignore_*`` switches are honoured.

Unlike LangChain's, handlers observe runs and do not gate them: each runs as a task of
its own, fed the run's events, so a slow or failing handler never holds a run up or
breaks it (an error a handler raises is logged and kept in ``handler_errors``). An exit
is no error: a ``KeyboardInterrupt`` (Ctrl-C striking the handler's code),
``SystemExit``, ``GeneratorExit`` or other ``BaseException`` that is not an
``Exception`` stops the runtime, which raises it as itself, so Ctrl-C still stops the
program. Every call, end and error calls too, gets the complete run: ``run_id``,
``parent_run_id``, ``tags``, ``metadata`` and ``name``, plus ``parent_ids`` and ``kind``.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

from attrs import field, frozen

from protocol import (
    CUSTOM_EVENT,
    ActionsChunk,
    AgentAction,
    AssistantMessage,
    AssistantMessageChunk,
    FinishChunk,
    StreamEvent,
)

from ._errors import RunFailedError

# -- LangChain's argument shapes -----------------------------------------------------------


@frozen
class ChatGeneration:
    """One answer of a chat model, as LangChain's ``ChatGeneration``."""

    message: AssistantMessage
    generation_info: dict[str, Any] = field(factory=dict)

    @property
    def text(self) -> str:
        """The answer's text."""
        return self.message.content


@frozen
class ChatGenerationChunk:
    """One streamed piece of an answer, as LangChain's ``ChatGenerationChunk``."""

    message: AssistantMessageChunk

    @property
    def text(self) -> str:
        """The piece's text."""
        return self.message.content


@frozen
class LLMResult:
    """What ``on_llm_end`` gets, as LangChain's ``LLMResult``:
    ``response.generations[0][0].message`` is the answer, ``response.llm_output`` holds
    ``token_usage`` and ``model_name``."""

    generations: list[list[ChatGeneration]]
    llm_output: dict[str, Any] | None = None


@frozen
class AgentFinish:
    """What ``on_agent_finish`` gets, as LangChain's ``AgentFinish``."""

    return_values: dict[str, Any]
    log: str = ""


# -- the handler ------------------------------------------------------------------------------

_IGNORED_BY: Final[dict[str, str]] = {
    "on_llm_start": "ignore_llm",
    "on_llm_new_token": "ignore_llm",
    "on_llm_end": "ignore_llm",
    "on_llm_error": "ignore_llm",
    "on_chat_model_start": "ignore_chat_model",
    "on_chain_start": "ignore_chain",
    "on_chain_end": "ignore_chain",
    "on_chain_error": "ignore_chain",
    # as in LangChain, tool callbacks are the agent's
    "on_tool_start": "ignore_agent",
    "on_tool_end": "ignore_agent",
    "on_tool_error": "ignore_agent",
    "on_agent_action": "ignore_agent",
    "on_agent_finish": "ignore_agent",
    "on_retriever_start": "ignore_retriever",
    "on_retriever_end": "ignore_retriever",
    "on_retriever_error": "ignore_retriever",
    "on_retry": "ignore_retry",
    "on_custom_event": "ignore_custom_event",
    "on_text": "",
}
CALLBACK_METHODS: Final = frozenset(_IGNORED_BY)
"""Every callback method a handler may define (as LangChain's ``BaseCallbackHandler``)."""

_BY_EVENT: Final[dict[str, str]] = {
    "on_chain_start": "on_chain_start",
    "on_chain_end": "on_chain_end",
    "on_chain_error": "on_chain_error",
    "on_chat_model_start": "on_chat_model_start",
    "on_chat_model_stream": "on_llm_new_token",
    "on_chat_model_end": "on_llm_end",
    "on_chat_model_error": "on_llm_error",
    "on_tool_start": "on_tool_start",
    "on_tool_end": "on_tool_end",
    "on_tool_error": "on_tool_error",
    CUSTOM_EVENT: "on_custom_event",
}


class BaseCallbackHandler:
    """Receives a run's events as LangChain callback calls (see the module's docs).

    Override the ``on_*`` methods you need (each may be sync or async). A method whose
    name is close to a callback's but not one (``on_llm_new_tokens``) is a
    ``TypeError`` when the class is made. Set an ``ignore_*`` attribute to ``True`` to
    skip a group of calls, as in LangChain.

    Attach a handler to one run (``agent.ainvoke(x, {"callbacks": [handler]})``, or
    ``callbacks=[handler]`` on any stream) or to a whole runtime
    (``open_runtime(callbacks=[handler])``). A handler attached to a run and again to a
    run inside it (``model.with_config(callbacks=[handler])``) is called once per event.
    """

    ignore_llm: bool = False
    ignore_chat_model: bool = False
    ignore_chain: bool = False
    ignore_agent: bool = False
    ignore_retriever: bool = False
    ignore_retry: bool = False
    ignore_custom_event: bool = False
    raise_error: bool = False
    """Accepted for LangChain's sake; a handler's error never reaches the run here (an
    exit, such as ``KeyboardInterrupt``, stops the runtime whatever this says)."""
    run_inline: bool = False
    """Accepted for LangChain's sake; handlers always run as tasks of their own."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in vars(cls):
            if name.startswith("on_") and name not in CALLBACK_METHODS and name != "on_event":
                close = difflib.get_close_matches(name, CALLBACK_METHODS, n=1, cutoff=0.8)
                if close:
                    raise TypeError(
                        f"{cls.__name__}.{name} is not a callback: did you mean {close[0]}?"
                    )

    def _method(self, name: str) -> Callable[..., Any] | None:
        """The handler's ``name`` method, ``None`` if it is the base's (which does
        nothing) or its group is ignored."""
        method = getattr(self, name, None)
        if method is None or getattr(method, "__func__", None) is _DECLARED.get(name):
            return None
        switch = _IGNORED_BY[name]
        if switch and getattr(self, switch, False):
            return None
        return cast(Callable[..., Any], method)

    async def on_event(self, event: StreamEvent) -> None:
        """Turn one event into the matching ``on_*`` calls this handler makes."""
        method_name = _BY_EVENT.get(event.event)
        if method_name is None:
            if event.phase == "stream":
                await self._agent_calls(event)
            return
        method = self._method(method_name)
        if method is None:
            return
        args, extra = _arguments(event)
        await _call(method, args, {**_identity(event), **extra})

    async def _agent_calls(self, event: StreamEvent) -> None:
        chunk = event.chunk
        if isinstance(chunk, ActionsChunk):
            method = self._method("on_agent_action")
            if method is not None:
                identity = _identity(event)
                for action in chunk.actions:
                    await _call(method, (action,), identity)
        elif isinstance(chunk, FinishChunk):
            method = self._method("on_agent_finish")
            if method is not None:
                finish = AgentFinish({"output": chunk.output}, chunk.output)
                await _call(method, (finish,), _identity(event))

    # LangChain's callbacks, declared so that a type checker checks overrides. The
    # handler calls only those a subclass overrides.

    def on_chain_start(
        self, serialized: dict[str, Any], inputs: Any, *, run_id: uuid.UUID, **kwargs: Any
    ) -> Any:
        """A chain (an agent, any performer that is not a model or a tool) started."""

    def on_chain_end(self, outputs: Any, *, run_id: uuid.UUID, **kwargs: Any) -> Any:
        """A chain ended; ``outputs`` is its output."""

    def on_chain_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> Any:
        """A chain failed (the exception it raised) or was cancelled (a
        :class:`RunFailedError` with ``status="cancelled"``)."""

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        *,
        run_id: uuid.UUID,
        **kwargs: Any,
    ) -> Any:
        """A chat model was asked for a turn of ``messages[0]``."""

    def on_llm_start(
        self, serialized: dict[str, Any], prompts: list[str], *, run_id: uuid.UUID, **kwargs: Any
    ) -> Any:
        """LangChain's completion models; Troupe's models are chat models (never called)."""

    def on_llm_new_token(
        self,
        token: str,
        *,
        chunk: ChatGenerationChunk | None = None,
        run_id: uuid.UUID,
        **kwargs: Any,
    ) -> Any:
        """A chat model streamed a piece (``chunk.message``) of its answer."""

    def on_llm_end(self, response: LLMResult, *, run_id: uuid.UUID, **kwargs: Any) -> Any:
        """A chat model answered: ``response.generations[0][0].message``."""

    def on_llm_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> Any:
        """A chat model failed (the exception it raised) or was cancelled."""

    def on_tool_start(
        self, serialized: dict[str, Any], input_str: str, *, run_id: uuid.UUID, **kwargs: Any
    ) -> Any:
        """A tool started; ``inputs`` (a keyword) holds its arguments."""

    def on_tool_end(self, output: Any, *, run_id: uuid.UUID, **kwargs: Any) -> Any:
        """A tool returned ``output``."""

    def on_tool_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> Any:
        """A tool raised ``error`` (its own exception) or was cancelled."""

    def on_agent_action(self, action: AgentAction, *, run_id: uuid.UUID, **kwargs: Any) -> Any:
        """The agent is about to call a tool (``action.tool`` with ``action.tool_input``)."""

    def on_agent_finish(self, finish: AgentFinish, *, run_id: uuid.UUID, **kwargs: Any) -> Any:
        """The agent answered: ``finish.return_values["output"]``."""

    def on_custom_event(self, name: str, data: Any, *, run_id: uuid.UUID, **kwargs: Any) -> Any:
        """Code working for the run dispatched a custom event."""

    def on_text(self, text: str, *, run_id: uuid.UUID, **kwargs: Any) -> Any:
        """LangChain's text callback (never called)."""

    def on_retry(self, retry_state: Any, *, run_id: uuid.UUID, **kwargs: Any) -> Any:
        """LangChain's retry callback (never called)."""

    def on_retriever_start(
        self, serialized: dict[str, Any], query: str, *, run_id: uuid.UUID, **kwargs: Any
    ) -> Any:
        """LangChain's retrievers (never called)."""

    def on_retriever_end(
        self, documents: Sequence[Any], *, run_id: uuid.UUID, **kwargs: Any
    ) -> Any:
        """LangChain's retrievers (never called)."""

    def on_retriever_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> Any:
        """LangChain's retrievers (never called)."""


class AsyncCallbackHandler(BaseCallbackHandler):
    """The same as :class:`BaseCallbackHandler`; the name LangChain's async code uses."""


_DECLARED: Final[dict[str, Any]] = {
    name: getattr(BaseCallbackHandler, name) for name in CALLBACK_METHODS
}


async def _call(method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    result = method(*args, **kwargs)
    if inspect.isawaitable(result):
        await result


@functools.lru_cache(maxsize=4096)
def _uuid(run_id: str) -> uuid.UUID | str:
    """A run id as LangChain's ``UUID`` (a run id given by hand that is not one stays
    a string)."""
    try:
        return uuid.UUID(run_id)
    except ValueError:
        return run_id


def _identity(event: StreamEvent) -> dict[str, Any]:
    parent = event.parent_id
    return {
        "run_id": _uuid(event.run_id),
        "parent_run_id": _uuid(parent) if parent is not None else None,
        "parent_ids": list(event.parent_ids),
        "tags": list(event.tags),
        "metadata": event.metadata,
        "name": event.name,
        "kind": event.kind,
    }


def _llm_result(message: Any) -> LLMResult:
    if not isinstance(message, AssistantMessage):
        return LLMResult([[]], None)
    info = {"finish_reason": message.finish_reason} if message.finish_reason else {}
    output: dict[str, Any] = {}
    if message.usage is not None:
        output["token_usage"] = {
            "prompt_tokens": message.usage.prompt_tokens,
            "completion_tokens": message.usage.completion_tokens,
            "total_tokens": message.usage.total_tokens,
        }
    if message.model_name is not None:
        output["model_name"] = message.model_name
    return LLMResult([[ChatGeneration(message, info)]], output)


def _error(event: StreamEvent) -> BaseException:
    if event.exception is not None:
        return event.exception
    return RunFailedError(event.data.error or "", status=event.status or "error")


def _arguments(event: StreamEvent) -> tuple[tuple[Any, ...], dict[str, Any]]:
    data = event.data
    phase = event.phase
    serialized = {"name": event.name, "kind": event.kind}
    if phase == "custom":
        return (event.name, data.chunk), {}
    if phase == "error":
        return (_error(event),), {"inputs": data.input}
    if event.kind == "chat_model":
        if phase == "start":
            messages = data.input.get("messages", []) if isinstance(data.input, dict) else []
            return (serialized, [list(messages)]), {"inputs": data.input}
        if phase == "stream":
            chunk = data.chunk
            content = getattr(chunk, "content", "")
            wrapped = (
                ChatGenerationChunk(chunk) if isinstance(chunk, AssistantMessageChunk) else None
            )
            return (content,), {"chunk": wrapped}
        return (_llm_result(data.output),), {"inputs": data.input}
    if event.kind == "tool":
        if phase == "start":
            return (serialized, str(data.input)), {"inputs": data.input}
        return (data.output,), {"inputs": data.input}
    if phase == "start":
        return (serialized, data.input), {}
    return (data.output,), {"inputs": data.input}
