"""LangChain-style callback handlers, run as subscriber actors.

Subclass :class:`AsyncCallbackHandler` (or :class:`BaseCallbackHandler`) and define
any of the ``on_*`` methods, sync or async, with LangChain's signatures. Unlike
LangChain's, every call (end and error calls too) gets the complete run: ``run_id``,
``parent_run_id``, ``tags``, ``metadata`` and ``name``, plus ``parent_ids`` and ``kind``.
"""

from __future__ import annotations

import inspect
from typing import Any

from protocol import CUSTOM_EVENT, StreamEvent

from ._errors import RunFailedError

# event -> (method, how its first positional arguments come from the event)
_CALLS: dict[str, str] = {
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
    """Receives a run's events as LangChain callback calls.

    Override any of: ``on_chain_start(serialized, inputs, **kw)``,
    ``on_chain_end(outputs, **kw)``, ``on_chain_error(error, **kw)``,
    ``on_chat_model_start(serialized, messages, **kw)``,
    ``on_llm_new_token(token, *, chunk, **kw)``, ``on_llm_end(response, **kw)``,
    ``on_llm_error(error, **kw)``, ``on_tool_start(serialized, input_str, *, inputs, **kw)``,
    ``on_tool_end(output, **kw)``, ``on_tool_error(error, **kw)``,
    ``on_custom_event(name, data, **kw)``. Each may be sync or async.

    ``kw`` always holds ``run_id``, ``parent_run_id``, ``parent_ids``, ``tags``,
    ``metadata``, ``name`` and ``kind``. Errors arrive as :class:`RunFailedError`
    (``status`` is ``"error"`` or ``"cancelled"``).

    Attach a handler to one run (``agent.ainvoke(x, {"callbacks": [handler]})``, or
    ``callbacks=[handler]`` on any stream) or to a whole runtime
    (``open_runtime(callbacks=[handler])``).
    """

    async def on_event(self, event: StreamEvent) -> None:
        """Turn one event into the matching ``on_*`` call, if this handler has one."""
        method_name = _CALLS.get(event.event)
        if method_name is None:
            return
        method = getattr(self, method_name, None)
        if method is None:
            return
        args, extra = _arguments(event)
        result = method(*args, **_identity(event), **extra)
        if inspect.isawaitable(result):
            await result


class AsyncCallbackHandler(BaseCallbackHandler):
    """The same as :class:`BaseCallbackHandler`; the name LangChain's async code uses."""


def _identity(event: StreamEvent) -> dict[str, Any]:
    return {
        "run_id": event.run_id,
        "parent_run_id": event.parent_id,
        "parent_ids": list(event.parent_ids),
        "tags": list(event.tags),
        "metadata": event.metadata,
        "name": event.name,
        "kind": event.kind,
    }


def _arguments(event: StreamEvent) -> tuple[tuple[Any, ...], dict[str, Any]]:
    data = event.data
    phase = event.phase
    serialized = {"name": event.name, "kind": event.kind}
    if phase == "custom":
        return (event.name, data.chunk), {}
    if phase == "error":
        error = RunFailedError(data.error or "", status=event.status or "error")
        return (error,), {"inputs": data.input}
    if event.kind == "chat_model":
        if phase == "start":
            messages = data.input.get("messages", []) if isinstance(data.input, dict) else []
            return (serialized, [list(messages)]), {"inputs": data.input}
        if phase == "stream":
            return (getattr(data.chunk, "content", ""),), {"chunk": data.chunk}
        return (data.output,), {"inputs": data.input}
    if event.kind == "tool":
        if phase == "start":
            return (serialized, str(data.input)), {"inputs": data.input}
        return (data.output,), {"inputs": data.input}
    if phase == "start":
        return (serialized, data.input), {}
    return (data.output,), {"inputs": data.input}
