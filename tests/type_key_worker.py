"""A process that runs one agent run whose tools return plain dicts with a ``"$type"``
key (and put one in the shared state), and is killed as its last tool runs; or that
recovers that run (tests/test_type_key_dicts_runs.py).

``python -m tests.type_key_worker STORE_URL LEDGER start|resume``: ``start`` begins run
``r1`` and prints ``paying`` once its last tool (``pay``) has begun, then waits to be
killed; ``resume`` opens the store with the agent to recover ``r1``, waits for it to
end and prints ``ended`` and its status. ``pay`` appends the output it was handed (as
the model's call carries it) and the shared state it read to LEDGER, one JSON line each.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import trio

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from runtime import SharedState, open_runtime

from .recovery_worker import recover

FITS = {"$type": "UserMessage", "content": "hi"}
FITS_NOT = {"$type": "UserMessage", "text": "hi"}


def make_agent(ledger: str, *, killed: bool = False) -> Agent:
    """An agent that fetches (two tools that return such dicts, one of which puts one in
    the state), then pays (60 s if ``killed``: it waits to be killed)."""

    def note(line: str) -> None:
        with open(ledger, "a") as file:
            file.write(line + "\n")

    @tool
    async def fetch() -> dict[str, Any]:
        """Fetch a dict that fits the class its tag names."""
        return dict(FITS)

    @tool
    async def odd(state: SharedState) -> Any:
        """Fetch dicts that do not fit, nested."""
        await state.update({"seen": dict(FITS), "odd": [dict(FITS_NOT)]})
        return {"$type": 5, "inner": [dict(FITS_NOT), {"$type": "NoSuchClass"}]}

    @tool
    async def pay(amount: int, state: SharedState) -> str:
        """Pay, noting the state it read."""
        note(json.dumps({"state": state.value}))
        print("paying", flush=True)
        if killed:
            await trio.sleep(60)
        return f"paid {amount}"

    model = ScriptedChatModel(
        [
            ScriptedTurn(
                tool_calls=[ScriptedCall("fetch", {}, id="f1"), ScriptedCall("odd", {}, id="o1")]
            ),
            ScriptedTurn(tool_calls=[ScriptedCall("pay", {"amount": 5}, id="p1")]),
            ScriptedTurn("all paid"),
        ]
    )
    return Agent(model=model, tools=[fetch, odd, pay], name="payer")


async def main(url: str, ledger: str, mode: str) -> None:
    if mode == "start":
        async with open_runtime(store=url) as rt:
            await rt.ainvoke(make_agent(ledger, killed=True), "pay", run_id="r1", state={})
        return
    await recover(url, make_agent(ledger))


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3])
