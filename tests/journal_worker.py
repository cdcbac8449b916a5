"""A process that journals generated runs until it is killed (for the crash tests).

``python -m tests.journal_worker STORE_URL SEED`` opens a runtime on the store, prints
``ready``, and keeps running agents of a generated workload: plain runs side by side,
and one run at a time on each of a few threads (the same thread ids in every process,
so conversations go on across crashes). When a run's caller hears of its end it prints
``end RUN_ID STATUS`` (flushed): the crash test checks that the store holds every end
a caller heard of.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from typing import Any

import trio

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from protocol import ChatMessage, ToolMessage, UserMessage
from runtime import open_runtime

THREADS = ("thread-a", "thread-b", "thread-c")
PLAIN_WORKERS = 6
WORDS = ("the", "cat", "sat", "under", "a", "bed", "and", "purred", "😺", "naïve", "\u2028")


@tool
async def work(n: int) -> str:
    """Work a little."""
    await trio.sleep(0.001 * n)
    if n == 7:
        raise ValueError("seven is unlucky")
    return "worked " * n


def make_script(seed: int) -> Any:
    def script(messages: Sequence[ChatMessage]) -> ScriptedTurn:
        last = messages[-1]
        rng = random.Random(f"{seed}:{len(messages)}:{getattr(last, 'content', '')!s:.40}")
        rounds = 0
        for message in reversed(messages):
            if isinstance(message, UserMessage):
                break
            if isinstance(message, ToolMessage):
                rounds += 1
        if rng.random() < 0.03:
            return ScriptedTurn("oops", error="the model broke down")
        if rounds < rng.randint(0, 2):
            calls = [
                ScriptedCall("work", {"n": rng.randint(1, 8)}) for _ in range(rng.randint(1, 2))
            ]
            return ScriptedTurn(tool_calls=calls)
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40)))
        return ScriptedTurn(text, token_delay=rng.choice((0.0, 0.0005, 0.002)))

    return script


async def main(url: str, seed: int) -> None:
    rng = random.Random(seed)
    agent = Agent(
        model=ScriptedChatModel(make_script(seed)),
        tools=[work],
        name="worker",
        system_prompt="Work.",
    )
    counter = iter(range(10**9))

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    async def one(thread_id: str | None, streamed: bool) -> None:
        run_id = f"s{seed}-{next(counter)}"
        question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))
        config = {"run_id": run_id, "thread_id": thread_id}
        try:
            if streamed:
                async with rt.astream_events(agent, question, config) as stream:
                    async for _ in stream:
                        pass
            else:
                await rt.ainvoke(agent, question, config)
        except Exception:
            say(f"end {run_id} error")
        else:
            say(f"end {run_id} ok")

    async def plain() -> None:
        while True:
            await one(None, rng.random() < 0.5)

    async def on_thread(thread_id: str) -> None:
        while True:
            await one(thread_id, rng.random() < 0.5)

    async with open_runtime(store=url) as rt:
        say("ready")
        async with trio.open_nursery() as nursery:
            for _ in range(PLAIN_WORKERS):
                nursery.start_soon(plain)
            for thread_id in THREADS:
                nursery.start_soon(on_thread, thread_id)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]))
