"""What the tests serve with ``troupe mcp tests.mcp_servers.performers:performers``."""

from __future__ import annotations

from typing import Any

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from runtime import Runnable
from tests.slow_model import slow_agent


@tool
async def shout(text: str) -> str:
    """Say it louder."""
    return text.upper()


@tool
async def fail(text: str) -> str:
    """Always fails."""
    raise ValueError(f"cannot {text}")


def _agent() -> Agent:
    model = ScriptedChatModel(
        [
            ScriptedTurn(tool_calls=[ScriptedCall("shout", {"text": "meow"})]),
            ScriptedTurn("The cat said MEOW."),
        ]
    )
    return Agent(model, [shout], name="cat")


performers: dict[str, Runnable[Any]] = {
    "cat": _agent(),
    "shout": shout,
    "fail": fail,
    "slow": slow_agent(),
}
