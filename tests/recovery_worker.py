"""A process that runs one agent run on a store and is killed mid-run, or that
resumes the runs of a killed one (for the crash recovery tests).

``python -m tests.recovery_worker STORE_URL LEDGER start|resume``: ``start`` begins run
``r1`` (a look-up, then a slow payment tool) and prints ``paying`` once the payment has
begun; ``resume`` opens the store with the agent to resume, and waits for ``r1`` to end.
Each tool call appends a line to the LEDGER file as it runs and as it finishes. The run
begins with the shared state ``{"who": "Ann"}``; the look-up adds to it, and the payment
appends the state it read to ``LEDGER.state`` (one JSON line per call).
"""

from __future__ import annotations

import json
import os
import sys

import trio

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from runtime import SharedState, open_runtime

STATE = {"who": "Ann"}


def make_agent(ledger: str, *, killed_in: tuple[str, ...] = ()) -> Agent:
    """The payer, whose slow steps take 0.5 s; a tool named in ``killed_in`` waits to be
    killed as it runs instead (a minute), however loaded the machine: a step that ended
    before its kill arrived broke the test."""

    def lasts(name: str) -> float:
        return 60.0 if name in killed_in else 0.5

    def note(line: str, to: str = ledger) -> None:
        with open(to, "a") as f:
            f.write(line + "\n")

    @tool
    async def look(x: int, state: SharedState) -> str:
        """Look something up (slowly, with SLOW_LOOK set)."""
        note(f"look {x}")
        await state.update({"looked": x})
        if os.environ.get("SLOW_LOOK"):
            print("looking", flush=True)
            await trio.sleep(lasts("look"))
            note(f"look {x} done")
        return f"looked {x}"

    @tool
    async def pay(amount: int, state: SharedState) -> str:
        """Pay (slowly)."""
        note(json.dumps(state.value), ledger + ".state")
        note(f"pay {amount} begun")
        print("paying", flush=True)
        await trio.sleep(lasts("pay"))
        note(f"pay {amount} done")
        return f"paid {amount}"

    model = ScriptedChatModel(
        [
            ScriptedTurn(tool_calls=[ScriptedCall("look", {"x": 1}, id="l1")]),
            ScriptedTurn(tool_calls=[ScriptedCall("pay", {"amount": 5}, id="p1")]),
            ScriptedTurn("all paid"),
        ]
    )
    return Agent(model=model, tools=[look, pay], name="payer")


async def main(url: str, ledger: str, mode: str) -> None:
    killed_in = {"start": ("look", "pay"), "recover-and-wait": ("pay",)}.get(mode, ())
    agent = make_agent(ledger, killed_in=killed_in)
    if mode == "start":
        async with open_runtime(store=url) as rt:
            await rt.ainvoke(agent, "pay five", run_id="r1", state=STATE)
        return
    if mode == "recover-and-wait":  # resume r1, then wait to be killed
        async with open_runtime(store=url, resume=[agent]):
            print("recovering", flush=True)
            await trio.sleep_forever()
    await recover(url, agent)


async def recover(url: str, agent: Agent) -> None:
    """Open the store at ``url`` with ``agent`` to resume, wait for ``r1`` to end, and
    print ``ended`` and its status."""
    async with open_runtime(store=url, resume=[agent]) as rt:
        with trio.fail_after(30):
            async with rt.join("r1") as events:
                async for _ in events:
                    pass
        print("ended", (await rt.get_run("r1")).status, flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3])
