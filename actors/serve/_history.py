"""What a frontend sends as its conversation, as Troupe's messages, whole and in order.

Two shapes arrive in a body's ``messages``:

- **AG-UI** messages (``@ag-ui/client``'s ``HttpAgent``): ``user``, ``assistant`` (with
  ``toolCalls``), ``tool`` (with ``toolCallId``), ``system`` and ``developer`` (taken as
  system), each with ``content``.
- **AI SDK** ``UIMessage``s (``useChat``): a role and ``parts``. ``text`` parts are the
  text; ``step-start`` begins a new model turn within an assistant message;
  ``tool-<name>`` and ``dynamic-tool`` parts are the turn's tool calls, and, once their
  ``state`` is ``output-available`` or ``output-error``, their results.

What Troupe cannot represent is refused with an error naming it, never dropped: files
and binary content, a tool call still without its result, a result for a call that
never happened, an unknown role or part. Three kinds of AI SDK part are left out on
purpose, because a model is not given them back: ``reasoning`` (a model's own
thoughts), ``source-*`` (citations it made) and ``data-*`` (the app's own data).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Final

from protocol import (
    AssistantMessage,
    ChatMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
    coerce_message,
)

from ._errors import BadRequest

_AG_UI_ROLES: Final = {
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "system": "system",
    "developer": "system",
}
_PLAIN: Final[dict[str, Callable[[str], ChatMessage]]] = {
    "user": UserMessage,
    "system": SystemMessage,
}
_LEFT_OUT: Final = ("reasoning", "source-", "data-")
"""AI SDK part types a model is not given back (see the module's docs)."""
_RESULTS: Final = ("output-available", "output-error")


def conversation(messages: object) -> list[ChatMessage]:
    """``messages`` (AG-UI's or the AI SDK's) as Troupe's chat messages, in order
    (made here, checked: a performer's ``coerce_input`` takes them as they are).

    Raises:
        BadRequest: a 422 naming the message (``messages[i]``) and what is wrong.
    """
    return [message for _, message in traced_conversation(messages)]


def traced_conversation(messages: object) -> list[tuple[int, ChatMessage]]:
    """:func:`conversation`, each message with the index of the body's message it
    came from (an AI SDK assistant message may become several).

    Raises:
        BadRequest: a 422 naming the message (``messages[i]``) and what is wrong.
    """
    if not isinstance(messages, list) or not messages:
        raise BadRequest(422, "give the run an input, or a non-empty list of messages", "messages")
    out: list[tuple[int, ChatMessage]] = []
    calls: dict[str, str] = {}  # tool call id -> tool name, for AG-UI's results
    seen_ids: set[str] = set()
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise BadRequest(422, f"{where} is not an object", where)
        message_id = message.get("id")
        if isinstance(message_id, str):
            if message_id in seen_ids:
                raise BadRequest(422, f"{where} repeats the id {message_id[:60]!r}", where)
            seen_ids.add(message_id)
        converted = (
            _ui_message(message, where)
            if "parts" in message
            else _ag_ui_message(message, where, calls)
        )
        out += [(index, one) for one in converted]
    return out


def new_messages(body: list[tuple[int, ChatMessage]], stored: Sequence[Any], thread_id: str) -> int:
    """Where the new messages of a frontend's conversation (``body``, from
    :func:`traced_conversation`) begin, on a thread that holds ``stored`` (protocol
    messages): after the thread's messages when the body begins with them (a frontend
    sends its whole history); at the start when the body is one message (a frontend
    that sends only its last one). System messages are left out of the comparison
    (the app's context comes again with each request). A message compares by its
    role, its text and its tool call ids (a tool result by its call's id).

    Raises:
        BadRequest: a 409 naming the first message that differs from the thread's
            (the history was edited: start a new thread to branch), or saying that
            the body holds nothing new.
    """
    said = [at for at, (_, message) in enumerate(body) if message.role != "system"]
    kept = [message for message in stored if getattr(message, "role", None) != "system"]
    for step, message in enumerate(kept):
        if step >= len(said) or _key(body[said[step]][1]) != _key(message):
            if len(said) == 1:
                return 0  # only the next message
            if len({body[at][0] for at in said}) == 1:
                # only the last message, an AI SDK assistant message that ends the
                # thread's last turn with the results of the client's tools
                return said[_overlap([_key(body[at][1]) for at in said], kept)]
            if step >= len(said):
                raise BadRequest(
                    409,
                    f"the messages stop before thread {thread_id!r}'s {len(kept)} messages "
                    "do: send its whole history and a new message, or only the new message "
                    "(to branch, start a new thread)",
                    "messages",
                )
            where = f"messages[{body[said[step]][0]}]"
            raise BadRequest(
                409,
                f"{where} differs from message {step} of thread {thread_id!r}: a thread's "
                "history cannot be edited (to branch, start a new thread)",
                where,
            )
    if len(said) <= len(kept):
        raise BadRequest(
            409,
            f"the messages hold nothing after thread {thread_id!r}'s {len(kept)} messages",
            "messages",
        )
    return said[len(kept)]


def _overlap(said: list[tuple[object, ...]], kept: Sequence[Any]) -> int:
    """How many of ``said`` (message keys) the end of ``kept`` already holds: the
    longest such run, but never all of them (0 if none)."""
    kept_keys = [_key(message) for message in kept[-len(said) :]]
    for length in range(min(len(said) - 1, len(kept_keys)), 0, -1):
        if kept_keys[-length:] == said[:length]:
            return length
    return 0


def _key(message: Any) -> tuple[object, ...]:
    role = getattr(message, "role", None)
    ids = tuple(call.id for call in getattr(message, "tool_calls", ()))
    text = "" if role == "tool" else getattr(message, "content", None)
    return (role, text, ids, getattr(message, "tool_call_id", None))


def context_messages(context: object) -> list[dict[str, Any]]:
    """AG-UI's ``context`` (``[{"description", "value"}]``, what the frontend knows: the
    page, the user, the selection) as one system message before the conversation.

    Raises:
        BadRequest: a 422 naming the item that is not a description and a value.
    """
    if context is None or context == []:
        return []
    if not isinstance(context, list):
        raise BadRequest(422, "context must be a list of {description, value}", "context")
    lines = []
    for i, item in enumerate(context):
        ok = isinstance(item, dict) and isinstance(item.get("description"), str)
        if not ok or not isinstance(item.get("value"), str):
            raise BadRequest(422, f"context[{i}] needs a string description and value", "context")
        lines.append(f"- {item['description']}: {item['value']}")
    return [{"role": "system", "content": "Context from the app:\n" + "\n".join(lines)}]


def _text(content: object, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # AG-UI's input content parts
        texts = []
        for i, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text" or not isinstance(part.get("text"), str):
                raise BadRequest(
                    422, f"{where}.content[{i}] is a {kind!r} part: only text is taken", where
                )
            texts.append(part["text"])
        return "".join(texts)
    raise BadRequest(422, f"{where}.content must be text", where)


def _ag_ui_message(message: dict[str, Any], where: str, calls: dict[str, str]) -> list[ChatMessage]:
    raw_role = message.get("role")
    role = _AG_UI_ROLES.get(raw_role) if isinstance(raw_role, str) else None
    if role is None:
        raise BadRequest(
            422, f"{where} has the role {raw_role!r}; the roles are {sorted(_AG_UI_ROLES)}", where
        )
    content = _text(message.get("content"), where)
    if role == "tool":
        call_id = message.get("toolCallId")
        if not isinstance(call_id, str) or call_id not in calls:
            raise BadRequest(
                422, f"{where} answers a tool call that never happened ({call_id!r})", where
            )
        return [ToolMessage(content, call_id, calls[call_id])]
    if role != "assistant":
        return [_PLAIN[role](content)]
    tool_calls = message.get("toolCalls") or []
    if not isinstance(tool_calls, list):
        raise BadRequest(422, f"{where}.toolCalls must be a list", where)
    for i, call in enumerate(tool_calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str):
            raise BadRequest(422, f"{where}.toolCalls[{i}] needs an id and a function", where)
        calls[call["id"]] = str(function.get("name"))
    if not tool_calls:
        return [AssistantMessage(content)]
    try:  # (OpenAI's shape of a call, its arguments JSON text: the protocol reads it)
        said = {"role": "assistant", "content": content, "tool_calls": tool_calls}
        return [coerce_message(said, where)]
    except TypeError as exc:
        raise BadRequest(422, str(exc), where) from None


def _ui_message(message: dict[str, Any], where: str) -> list[ChatMessage]:
    role = message.get("role")
    parts = message.get("parts")
    if role not in ("user", "assistant", "system"):
        raise BadRequest(
            422, f"{where} has the role {role!r}; the roles are assistant, system, user", where
        )
    if not isinstance(parts, list):
        raise BadRequest(422, f"{where}.parts must be a list", where)
    if role != "assistant":
        texts = []
        for i, part in enumerate(parts):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif not (isinstance(kind, str) and kind.startswith(_LEFT_OUT)):
                raise BadRequest(
                    422, f"{where}.parts[{i}] is a {kind!r} part: a {role} gives text", where
                )
        return [_PLAIN[role]("".join(texts))]
    out: list[ChatMessage] = []
    turns: list[list[tuple[int, dict[str, Any]]]] = [[]]
    for i, part in enumerate(parts):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise BadRequest(422, f"{where}.parts[{i}] has no type", where)
        if part["type"] == "step-start":
            if turns[-1]:
                turns.append([])
        else:
            turns[-1].append((i, part))
    for turn in turns:
        if turn:
            out += _assistant_turn(turn, where)
    return out


def _assistant_turn(turn: list[tuple[int, dict[str, Any]]], where: str) -> list[ChatMessage]:
    texts: list[str] = []
    tool_calls: list[ToolCall] = []
    results: list[ChatMessage] = []
    for i, part in turn:
        kind: str = part["type"]
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind.startswith("tool-") or kind == "dynamic-tool":
            name = part.get("toolName") if kind == "dynamic-tool" else kind[5:]  # "tool-"
            call_id = part.get("toolCallId")
            if not isinstance(call_id, str) or not isinstance(name, str) or not name:
                at = f"{where}.parts[{i}]"
                raise BadRequest(422, f"{at} needs a toolCallId and a tool name", at)
            state = part.get("state")
            if state not in _RESULTS:
                at = f"{where}.parts[{i}]"
                raise BadRequest(
                    422,
                    f"{at}: the call {call_id!r} to {name!r} has no result yet (state "
                    f"{state!r}); send it once its output is available",
                    at,
                )
            args = part.get("input")
            tool_calls.append(ToolCall(call_id, name, args if isinstance(args, dict) else {}))
            if state == "output-available":
                output = part.get("output")
                content = output if isinstance(output, str) else json.dumps(output)
            else:
                content = f"Error: {part.get('errorText') or 'the tool failed'}"
            results.append(ToolMessage(content, call_id, name))
        elif not kind.startswith(_LEFT_OUT):
            at = f"{where}.parts[{i}]"
            raise BadRequest(422, f"{at} is a {kind!r} part, which Troupe cannot represent", at)
    return [AssistantMessage("".join(texts), tuple(tool_calls)), *results]
