"""A process that runs generated agents with approvals and interrupts on a store, and
resumes what a killed one left (for the generated crash tests of replay).

``python -m tests.replay_worker STORE_URL LEDGER SEED [final]`` opens a runtime on the
store that resumes the agent's runs whose process died, prints ``ready``, and keeps a
few conversations going: each run that pauses is resumed with decisions drawn at
random (approve, deny, edit the arguments; an interrupt's answer), until it ends.
``final``: only finish what the store holds (resume the paused runs nobody resumed,
wait for the runs being recovered), then exit.

Every tool call appends ``begin CALL_ID TIME`` and ``done CALL_ID TIME`` lines to the
LEDGER file (flushed at once), so the test can tell whether a call ran after its
result was journaled.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Sequence

import trio

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from protocol import ChatMessage, Decision, ToolMessage, UserMessage
from runtime import RunPaused, RunRecord, Store, interrupt, open_runtime
from runtime._store import RunState

CONVERSATIONS = 4


def make_agent(ledger: str) -> Agent:
    def note(what: str, call_id: str) -> None:
        with open(ledger, "a") as f:
            f.write(f"{what} {call_id} {time.time()!r}\n")

    @tool
    async def work(n: int, call: str) -> str:
        """Work a little."""
        note("begin", call)
        await trio.sleep(0.002 * n)
        note("done", call)
        return f"worked {n}"

    @tool(needs_approval=lambda args: args["amount"] > 10)
    async def pay(amount: int, call: str) -> str:
        """Pay."""
        note("begin", call)
        await trio.sleep(0.005)
        note("done", call)
        return f"paid {amount}"

    @tool
    async def ask(question: str, call: str) -> str:
        """Ask a person."""
        note("begin", call)
        answer = await interrupt({"question": question})
        note("done", call)
        return f"answer: {answer}"

    def script(messages: Sequence[ChatMessage]) -> ScriptedTurn:
        question = next(m.content for m in messages if isinstance(m, UserMessage))
        rounds = sum(1 for m in messages if isinstance(m, ToolMessage))
        rng = random.Random(f"{question}:{len(messages)}")
        if rounds >= 4 or rng.random() < 0.25:
            return ScriptedTurn(f"done after {rounds} calls", token_delay=0.001)
        calls = []
        for i in range(rng.randint(1, 2)):
            call = f"{question}-{len(messages)}-{i}"
            kind = rng.choice(("work", "work", "pay", "ask"))
            if kind == "work":
                calls.append(ScriptedCall("work", {"n": rng.randint(1, 5), "call": call}, id=call))
            elif kind == "pay":
                args = {"amount": rng.choice((5, 50)), "call": call}
                calls.append(ScriptedCall("pay", args, id=call))
            else:
                calls.append(ScriptedCall("ask", {"question": "ok?", "call": call}, id=call))
        return ScriptedTurn(tool_calls=calls)

    return Agent(model=ScriptedChatModel(script), tools=[work, pay, ask], name="worker")


def runs_in(store: Store, status: RunState) -> list[RunRecord]:
    return store.list_runs(status=status, limit=10**9)


def decide(rng: random.Random, paused: RunPaused) -> dict[str, object]:
    decisions: dict[str, object] = {}
    for request in paused.pending:
        if request.kind == "interrupt":
            decisions[request.id] = rng.choice(("yes", "no"))
            continue
        choice = rng.random()
        if choice < 0.6:
            decisions[request.id] = True
        elif choice < 0.8:
            decisions[request.id] = Decision(approve=False, reason="not now")
        else:
            args = dict(request.arguments)
            args["amount"] = 11
            decisions[request.id] = Decision(arguments=args)
    return decisions


async def main(url: str, ledger: str, seed: int, final: bool) -> None:
    rng = random.Random(seed)
    agent = make_agent(ledger)
    counter = iter(range(10**9))

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    async def conversation() -> None:
        while True:
            question = f"q{seed}x{next(counter)}"
            try:
                await rt.ainvoke(agent, question, run_id=question)
            except RunPaused as paused:
                await settle(paused)
            except Exception:
                pass

    async def settle(paused: RunPaused) -> None:
        while True:
            try:
                assert paused.run_id is not None
                await rt.resume(agent, paused.run_id, decide(rng, paused))
                return
            except RunPaused as again:
                paused = again
            except Exception:
                return

    async with open_runtime(store=url, resume=[agent]) as rt:
        say("ready")
        if final:
            journal = rt.journal
            assert journal is not None
            with trio.fail_after(60):
                while True:
                    running = await trio.to_thread.run_sync(runs_in, journal.store, "running")
                    paused = await trio.to_thread.run_sync(runs_in, journal.store, "paused")
                    waiting = [r for r in paused if r.resumed_by is None]
                    if not running and not waiting:
                        break
                    for record in waiting:
                        _, journaled = await journal.read_run(record.run_id)
                        waits = journaled.paused
                        assert waits is not None
                        await settle(RunPaused(waits.pending, record.run_id))
                    await trio.sleep(0.05)
            say("settled")
            return
        async with trio.open_nursery() as nursery:
            for _ in range(CONVERSATIONS):
                nursery.start_soon(conversation)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:] == ["final"])
