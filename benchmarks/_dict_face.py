"""What an event's LangChain dict face costs, in instructions (issue 29).

``python -m benchmarks._dict_face [--callgrind ROUNDS]`` runs its sections under
``valgrind --tool=callgrind`` (``PYTHONHASHSEED=0``, trio's scheduler seeded before
each section), which the machine's load does not move, and prints JSON:

- ``per_event``: a stream event made as a stream's reader makes it (its chunk alone),
  then read, alone in a loop, instructions per event: ``made`` (made only),
  ``seed_loop`` (made and read as the seed's loop reads it: ``event["event"]``,
  ``event["name"]``, ``event["data"]["chunk"].content``), ``typed`` (made and read
  through the attributes: ``event.event``, ``event.name``, ``event.chunk.content``),
  and ``plain_dicts`` (LangChain's own event dicts, with their lists and data dict,
  made and read by the same loop);
- ``per_run``: the cat agent (a new chunk per token, a scheduler pass every 64, the
  seed's loop reading every event), instructions per run at K=200 and K=1 answer tokens
  (300 runs at once less 100, divided by 200: what one run more costs), and per token
  (one run at K=2,000 less one at K=200, divided by 1,800), each round apart.

``--sections ROUNDS [SCALE]`` runs the sections (sizes divided by ``SCALE``) outside
callgrind (the marks, ``os.getppid`` and ``os.getpgrp``, are then harmless calls; the
tests run it so).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any, Final

import trio

from protocol import AssistantMessageChunk, RunInfo, StreamEvent, make_stream_event
from runtime import open_runtime

from ._timing import callgrind_sections, under_callgrind
from ._workload import cat_agent, read_events, read_run

EVENTS: Final = 20_000
"""Events made in each per-event section."""

EVENT_SECTIONS: Final = ("empty", "made", "seed_loop", "typed", "plain_dicts")
RUN_SECTIONS: Final = (
    ("runs", 300, 200),
    ("runs", 100, 200),
    ("runs", 300, 1),
    ("runs", 100, 1),
    ("one", 3, 2000),
    ("one", 3, 200),
)
"""Each per-run section: runs at once (``runs``) or one after another (``one``), how
many, and the answer's tokens."""


def _event_loops(count: int) -> dict[str, Callable[[], int]]:
    info = RunInfo("run-1", "model", "chat_model", ("root",), ("agent_llm",), {"k": 1}, 1.0)
    chunks = [AssistantMessageChunk(f" w{i % 11}") for i in range(count)]
    name = "on_chat_model_stream"

    def empty() -> int:
        n = 0
        for seq, _chunk in enumerate(chunks):
            n += seq
        return n

    def made() -> int:
        n = 0
        for seq, chunk in enumerate(chunks):
            make_stream_event(name, info, seq, None, None, None, chunk)
            n += seq
        return n

    def seed_loop() -> int:
        n = 0
        for seq, chunk in enumerate(chunks):
            n += read_events(make_stream_event(name, info, seq, None, None, None, chunk))
        return n

    def typed() -> int:
        n = 0
        for seq, chunk in enumerate(chunks):
            event: StreamEvent = make_stream_event(name, info, seq, None, None, None, chunk)
            if event.event == name and event.name:
                n += 1 if event.chunk.content else 0
        return n

    def plain_dicts() -> int:
        n = 0
        for seq, chunk in enumerate(chunks):
            event: Any = {
                "event": name,
                "name": info.name,
                "run_id": info.run_id,
                "parent_ids": list(info.parent_ids),
                "tags": list(info.tags),
                "metadata": info.metadata,
                "data": {"chunk": chunk},
                "seq": seq,
            }
            n += read_events(event)
        return n

    loops = {
        "empty": empty,
        "made": made,
        "seed_loop": seed_loop,
        "typed": typed,
        "plain_dicts": plain_dicts,
    }
    assert tuple(loops) == EVENT_SECTIONS
    return loops


def _sections(rounds: int, events: int, scale: int = 1) -> None:
    """Every section, each between the marks, ``rounds`` times (after one warm-up
    pass, uncounted); ``scale`` divides the per-run sections' sizes (for the tests)."""
    loops = _event_loops(events)
    for loop in loops.values():
        loop()  # warm-up
    for _ in range(rounds):
        for loop in loops.values():
            os.getppid()  # callgrind: zero the counts
            loop()
            os.getpgrp()  # callgrind: dump them
    trio.run(_run_sections, rounds, scale)


async def _run_sections(rounds: int, scale: int) -> None:
    from trio._core import _run  # its scheduler's random batches, seeded per section

    agents = {k: cat_agent(k, network_like=True, yield_every=64) for k in (1, 200, 2000)}

    async def section(kind: str, count: int, tokens: int) -> None:
        agent = agents[tokens]
        if kind == "one":
            for _ in range(count):
                await read_run(agent)
            return
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(read_run, agent)

    async with open_runtime():
        for kind, count, tokens in RUN_SECTIONS:  # warm-up
            await section(kind, max(1, count // 15 // scale), tokens)
        for _ in range(rounds):
            for kind, count, tokens in RUN_SECTIONS:
                gc.collect()
                _run._r.seed(0)
                os.getppid()
                await section(kind, max(1, count // scale), tokens)
                os.getpgrp()


def read_counts(counted: Sequence[int], rounds: int, events: int) -> dict[str, Any]:
    """The figures from the sections' instructions, in the order :func:`_sections` ran
    them."""
    per_event: list[dict[str, float]] = []
    per_run: list[dict[str, float]] = []
    at = 0
    for _ in range(rounds):
        got = dict(zip(EVENT_SECTIONS, counted[at : at + len(EVENT_SECTIONS)], strict=True))
        at += len(EVENT_SECTIONS)
        per_event.append(
            {k: (got[k] - got["empty"]) / events for k in EVENT_SECTIONS if k != "empty"}
        )
    for _ in range(rounds):
        s = counted[at : at + len(RUN_SECTIONS)]
        at += len(RUN_SECTIONS)
        per_run.append(
            {
                "K200": (s[0] - s[1]) / 200,
                "K1": (s[2] - s[3]) / 200,
                "per_token": (s[4] - s[5]) / 3 / 1800,
            }
        )
    assert at == len(counted), (at, len(counted))
    return {"per_event": per_event, "per_run": per_run}


def instructions(rounds: int) -> dict[str, Any]:
    """The sections under callgrind, ``rounds`` rounds (see the module)."""
    with tempfile.TemporaryDirectory() as folder:
        prefix = f"{folder}/cg"
        under_callgrind(prefix, ["-m", "benchmarks._dict_face", "--sections", str(rounds)])
        return read_counts(callgrind_sections(prefix), rounds, EVENTS)


def main(argv: Sequence[str]) -> None:
    if argv[:1] == ["--sections"]:
        rounds = int(argv[1])
        scale = int(argv[2]) if len(argv) > 2 else 1
        _sections(rounds, EVENTS // scale, scale)
        return
    rounds = int(argv[1]) if argv[:1] == ["--callgrind"] and len(argv) > 1 else 2
    print(json.dumps(instructions(rounds), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
