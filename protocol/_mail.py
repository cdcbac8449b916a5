"""Actor mail: what the agent, chat models and tools ask of each other, and the
step chunks an agent streams (LangChain AgentExecutor's ``astream`` chunks, typed)."""

from __future__ import annotations

from typing import Any

from attrs import field, frozen

from ._chat import ChatMessage, ToolCall, ToolMessage, ToolSpec, Usage
from ._fast import fast_new
from ._view import AddableView, DictView


def _history(value: Any) -> tuple[ChatMessage, ...]:
    return tuple(value)


def _specs(value: Any) -> tuple[ToolSpec, ...]:
    return tuple(value)


def _names(value: Any) -> tuple[str, ...]:
    return tuple(value)


@frozen
class AgentRequest:
    """Ask an agent to answer ``input``, after the conversation ``chat_history``.

    ``input`` ``None``: go on with the conversation as it stands (it ends with the
    results of tool calls the caller carried out). ``client_tools``: tools the caller
    carries out itself (a frontend's), offered to the model beside the agent's own; a
    call of one ends the run (``finish_reason`` ``"client_tool_calls"``), and its result
    comes back as a tool message in the next request.
    """

    input: str | None
    chat_history: tuple[ChatMessage, ...] = field(default=(), converter=_history)
    client_tools: tuple[ToolSpec, ...] = field(default=(), converter=_specs)
    handoffs: tuple[str, ...] = field(default=(), converter=_names)
    """The agents that handed this conversation on to the one asked, first to last
    (empty: the user asked it directly)."""


@frozen
class ResponseFormat:
    """The shape a model's answer must have: a JSON schema, named (OpenAI's
    ``response_format`` of type ``json_schema``)."""

    name: str
    schema: dict[str, Any]
    strict: bool = False


@fast_new
@frozen
class ChatRequest:
    """Ask a chat model for its next turn of a conversation; with ``response_format``,
    an answer in that JSON shape (a model that cannot be asked natively is asked by
    the agent's prompt instead)."""

    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...] = ()
    response_format: ResponseFormat | None = None


@fast_new
@frozen
class ToolRequest:
    """Ask a tool to carry out one call."""

    call: ToolCall


@fast_new
@frozen
class AgentAction(DictView):
    """The model asked for ``tool`` with ``tool_input``."""

    _view_keys = ("tool", "tool_input", "tool_call_id", "log")
    tool: str
    tool_input: dict[str, Any] = field(factory=dict)
    tool_call_id: str = ""
    log: str = ""


@fast_new
@frozen
class AgentStep(DictView):
    """An action and what the tool answered (``observation``)."""

    _view_keys = ("action", "observation", "is_error")
    action: AgentAction
    observation: str
    is_error: bool = False


@fast_new
@frozen
class ActionsChunk(AddableView):
    """Step chunk: the tool calls of one model turn, with the model's message."""

    _view_keys = ("actions", "messages")
    actions: tuple[AgentAction, ...]
    messages: tuple[ChatMessage, ...]


@fast_new
@frozen
class StepsChunk(AddableView):
    """Step chunk: the tool results of one turn, with the tool messages."""

    _view_keys = ("steps", "messages")
    steps: tuple[AgentStep, ...]
    messages: tuple[ToolMessage, ...]


@fast_new
@frozen
class FinishChunk(AddableView):
    """Step chunk: the final answer, with the final message and why the loop stopped."""

    _view_keys = ("output", "messages", "finish_reason")
    output: str
    messages: tuple[ChatMessage, ...]
    finish_reason: str = "stop"


StepChunk = ActionsChunk | StepsChunk | FinishChunk
"""What an agent's step stream yields."""


@frozen
class AgentOutput(DictView):
    """An agent run's result: ``output["output"]`` is the answer.

    ``finish_reason`` is ``"stop"`` when the model answered, ``"max_iterations"`` when the
    loop hit its limit first. ``messages`` is the whole conversation (the history given,
    the question, every model turn and tool message, the answer); ``usage`` adds up the
    agent's model turns (``None`` if no turn reported usage). ``structured`` is the
    answer validated and made an instance of the agent's ``output_type`` (``None``
    without one); in events and on the wire it is its JSON form.
    """

    _view_keys = ("input", "output", "finish_reason", "iterations", "messages", "usage")
    input: str
    output: str
    finish_reason: str = "stop"
    iterations: int = 0
    messages: tuple[ChatMessage, ...] = field(default=(), converter=_history)
    usage: Usage | None = None
    structured: Any = None
