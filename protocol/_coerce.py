"""Chat messages from the shapes users write them in: Troupe's messages, OpenAI-style
``{"role": ..., "content": ...}`` dicts, LangChain's ``(role, content)`` tuples."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ._chat import (
    AssistantMessage,
    ChatMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
)

MESSAGE_TYPES: Final = (SystemMessage, UserMessage, AssistantMessage, ToolMessage)
_ROLES: Final = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "tool": "tool",
}
_KEYS: Final = {
    "system": {"role", "content"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "tool_calls", "name"},
    "tool": {"role", "content", "tool_call_id", "name"},
}


def coerce_message(value: Any, where: str = "a message") -> ChatMessage:
    """One chat message from a Troupe message, a ``{"role", "content"}`` dict (OpenAI's
    roles or LangChain's ``human``/``ai``) or a ``(role, content)`` tuple.

    Raises:
        TypeError: ``value`` is none of these; the message names ``where`` and why.
    """
    if isinstance(value, MESSAGE_TYPES):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        return _from_dict({"role": value[0], "content": value[1]}, where)
    if isinstance(value, Mapping):
        return _from_dict(value, where)
    raise TypeError(
        f"{where} must be a chat message, a {{'role': ..., 'content': ...}} dict or a "
        f"(role, content) tuple, got {type(value).__name__}: {value!r:.80}"
    )


def coerce_messages(values: Any, where: str = "messages") -> tuple[ChatMessage, ...]:
    """A conversation from a list of anything :func:`coerce_message` takes.

    Raises:
        TypeError: ``values`` is not a list, or one of its items is not a message.
    """
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
        raise TypeError(f"{where} must be a list of messages, got {type(values).__name__}")
    return tuple(coerce_message(v, f"{where}[{i}]") for i, v in enumerate(values))


def _from_dict(data: Mapping[str, Any], where: str) -> ChatMessage:
    raw_role = data.get("role", data.get("type"))
    role = _ROLES.get(raw_role) if isinstance(raw_role, str) else None
    if role is None:
        raise TypeError(f"{where} has role {raw_role!r}; the roles are {', '.join(sorted(_ROLES))}")
    unknown = set(data) - _KEYS[role] - {"type"}
    if unknown:
        raise TypeError(
            f"{where} ({role}) has keys it cannot take: {sorted(unknown)}; "
            f"it takes {sorted(_KEYS[role])}"
        )
    content = data.get("content")
    if content is None and role == "assistant":
        content = ""
    if not isinstance(content, str):
        raise TypeError(f"{where} needs text content, got {type(content).__name__}")
    if role == "system":
        return SystemMessage(content)
    if role == "user":
        return UserMessage(content)
    if role == "tool":
        call_id, name = data.get("tool_call_id"), data.get("name")
        if not isinstance(call_id, str) or not isinstance(name, str):
            raise TypeError(f"{where} (tool) needs string 'tool_call_id' and 'name'")
        return ToolMessage(content, call_id, name)
    calls = data.get("tool_calls") or []
    if not isinstance(calls, list | tuple):
        raise TypeError(f"{where} has tool_calls that are not a list")
    return AssistantMessage(
        content, tuple(_tool_call(c, f"{where}.tool_calls[{i}]") for i, c in enumerate(calls))
    )


def _tool_call(value: Any, where: str) -> ToolCall:
    if isinstance(value, ToolCall):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"{where} must be a dict, got {type(value).__name__}")
    function = value.get("function")
    if isinstance(function, Mapping):  # OpenAI's shape
        name, args = function.get("name"), function.get("arguments", "{}")
        if isinstance(args, str):
            try:
                args = json.loads(args or "{}")
            except json.JSONDecodeError as exc:
                raise TypeError(f"{where} has arguments that are not JSON: {exc.msg}") from None
    else:  # LangChain's shape
        name, args = value.get("name"), value.get("args", {})
    call_id = value.get("id")
    if not isinstance(name, str) or not isinstance(call_id, str) or not isinstance(args, dict):
        raise TypeError(f"{where} needs a string 'id', a string 'name' and object arguments")
    return ToolCall(call_id, name, args)
