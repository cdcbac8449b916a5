"""Handoffs: an agent hands the conversation on to another agent, as a tool the model
calls (``transfer_to_<agent>``), as the OpenAI Agents SDK does.

The agent taking over runs as a child of the one handing on, so the event tree shows
who speaks: each model run's nearest agent run is the agent speaking, and an agent run
that took a conversation over says from whom in its (local) metadata,
``handoff_from``. Its final answer is the answer of the whole run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Final

from attrs import field, frozen

from protocol import AgentRequest, AssistantMessage, ChatMessage, ToolMessage, ToolSpec

from ._errors import HandoffError

DEFAULT_MAX_HANDOFFS: Final = 8
"""How often one conversation may be handed on before the run fails (a loop of
handoffs is a bug of the prompts, and would otherwise never end)."""
HANDOFF_FROM: Final = "handoff_from"
"""The local metadata key of an agent run that took a conversation over."""

HistoryFilter = Callable[[tuple[ChatMessage, ...]], Sequence[ChatMessage]]
"""What of the conversation before the user's question the next agent gets."""


def _tool_name(agent_name: str) -> str:
    words = re.sub(r"[^0-9A-Za-z]+", "_", agent_name).strip("_").lower() or "agent"
    return f"transfer_to_{words}"[:64]


@frozen(eq=False)
class Handoff:
    """A handoff an agent may make: to ``target`` (an agent, or a function of no
    arguments that returns one, for agents that hand back and forth), through the tool
    ``tool_name``. ``history`` filters the conversation the next agent gets."""

    target: Any = field(repr=False)
    tool_name: str
    description: str
    history: HistoryFilter | None = field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.tool_name, str) or not self.tool_name.isidentifier():
            raise ValueError(f"a handoff's tool_name must be an identifier, got {self.tool_name!r}")

    @property
    def spec(self) -> ToolSpec:
        """The tool the model calls to hand the conversation on."""
        return ToolSpec(
            self.tool_name,
            self.description,
            {"type": "object", "properties": {}, "additionalProperties": False},
        )

    def resolve(self) -> Any:
        """The agent to hand on to (the check that it is one is the agent's).

        Raises:
            HandoffError: the target's function raised.
        """
        if callable(self.target) and not hasattr(self.target, "perform"):
            try:
                return self.target()
            except Exception as exc:
                raise HandoffError(
                    f"handoff {self.tool_name!r}: finding the agent raised {exc!r}"
                ) from exc
        return self.target


def handoff(
    target: Any,
    *,
    tool_name: str | None = None,
    description: str | None = None,
    history: HistoryFilter | None = None,
) -> Handoff:
    """A handoff to ``target``: an agent, or a function of no arguments returning one
    (then ``tool_name`` is needed: the agent is not known yet).

    Raises:
        TypeError: a function target without ``tool_name``.
    """
    name = getattr(target, "name", None) if hasattr(target, "perform") else None
    if tool_name is None:
        if name is None:
            raise TypeError(
                "handoff(): a target given as a function needs tool_name= (the model "
                "must be told the tool's name before the agent is known)"
            )
        tool_name = _tool_name(name)
    if description is None:
        who = f"the agent {name!r}" if name else "another agent"
        description = f"Hand the conversation over to {who}, who will answer the user."
    return Handoff(target, tool_name, description, history)


def handoff_tuple(value: Any) -> tuple[Handoff, ...]:
    """An agent's ``handoffs`` setting: handoffs, or agents (each a default handoff)."""
    items = tuple(h if isinstance(h, Handoff) else handoff(h) for h in value)
    names = [h.tool_name for h in items]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"handoff tool names must be unique, repeated: {repeated}")
    return items


def without_tool_calls(history: tuple[ChatMessage, ...]) -> list[ChatMessage]:
    """A history filter: the conversation without tool calls and tool results (the
    next agent sees only what the user and the agents said)."""
    out: list[ChatMessage] = []
    for message in history:
        if isinstance(message, ToolMessage):
            continue
        if isinstance(message, AssistantMessage) and (
            message.tool_calls or message.invalid_tool_calls
        ):
            if message.content:
                out.append(AssistantMessage(message.content))
            continue
        out.append(message)
    return out


def next_request(chosen: Handoff, request: AgentRequest, speaker: str, limit: int) -> AgentRequest:
    """What the next agent is asked: the user's question, after the conversation
    before it (filtered), with the chain of agents that handed it on.

    Raises:
        HandoffError: the conversation was handed on ``limit`` times already.
    """
    chain = (*request.handoffs, speaker)
    if len(chain) > limit:
        raise HandoffError(
            f"the conversation was handed on more than {limit} times (max_handoffs): "
            f"{' -> '.join(chain)} -> ..."
        )
    history = request.chat_history
    if chosen.history is not None:
        history = tuple(chosen.history(history))
    return AgentRequest(request.input, history, request.client_tools, chain)
