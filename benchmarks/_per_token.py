"""What one token costs, in instructions, against the raw trio limit (issue 29).

``python -m benchmarks._per_token [--callgrind ROUNDS]`` runs its sections under
``valgrind --tool=callgrind`` (``PYTHONHASHSEED=0``, trio's scheduler seeded before
each section), which the machine's load does not move, and prints JSON: instructions
per token of ``_shapes``' first row (the cat agent, a new chunk per token, a scheduler
pass every 64, the seed's loop reading every event) and of its limits (the raw
pipeline of ``benchmarks._raw``, a new object per token, its consumer reading; the
same with a cancel point per read, trio's rule; and that one moving Troupe's objects,
a chunk made per token and a stream event made of it and read through its dict face:
:func:`limit_events`), each the slope between one run of
K=2,000 answer tokens and one of K=200, ``RUNS`` runs of each, each round apart.

``--callgrind ROUNDS troupe`` counts Troupe's row alone (``SHAPES``, comma-separated).
``--opcodes [SHAPE]`` counts Python opcodes per token by function instead (``sys.settrace``
with opcode events, the same slope, outside callgrind): where the Python work of a
token is. ``--sections ROUNDS [SCALE]`` runs the sections (sizes divided by
``SCALE``) outside callgrind (the tests run it so).
"""

from __future__ import annotations

import collections
import gc
import json
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import trio

from protocol import AssistantMessageChunk, RunInfo, make_stream_event
from runtime import open_runtime

from ._raw import _take, raw_shaped
from ._timing import callgrind_sections, under_callgrind
from ._workload import cat_agent, read_events, read_run

RUNS: Final = 3
"""Runs in each section (one after another)."""
LOW: Final = 200
HIGH: Final = 2000
SHAPES: Final = ("troupe", "limit", "limit_cancel_points", "limit_events")


async def limit_events(tokens: int) -> int:
    """The limit with a cancel point per read that also moves what Troupe's token
    is: the producer makes an ``AssistantMessageChunk`` per token (as the model does),
    the consumer a ``StreamEvent`` of it (as a stream's reader does) and reads that as
    the seed's loop does. The floor of a token with typed events and their dict face,
    before any of the runtime's own work."""
    info = RunInfo("run-1", "model", "chat_model", ("root",), ("agent_llm",), {}, 1.0)
    name = "on_chat_model_stream"

    async def consume(receive: trio.MemoryReceiveChannel[Any]) -> int:
        seen = seq = 0
        try:
            while True:
                seq += 1
                chunk = await _take(receive, True)
                seen += read_events(make_stream_event(name, info, seq, None, None, None, chunk))
        except trio.EndOfChannel:
            return seen

    return await raw_shaped(
        tokens,
        yield_every=64,
        fresh=True,
        read=True,
        cancel_points=True,
        chunk=AssistantMessageChunk,
        consume=consume,
    )


def _runners(scale: int) -> dict[tuple[str, int], Callable[[], Awaitable[int]]]:
    out: dict[tuple[str, int], Callable[[], Awaitable[int]]] = {}
    for k in (HIGH // scale, LOW // scale):
        agent = cat_agent(k, network_like=True, yield_every=64)

        def troupe(agent: Any = agent) -> Awaitable[int]:
            return read_run(agent)

        def limit(k: int = k) -> Awaitable[int]:
            return raw_shaped(k, yield_every=64, fresh=True, read=True)

        def checked(k: int = k) -> Awaitable[int]:
            return raw_shaped(k, yield_every=64, fresh=True, read=True, cancel_points=True)

        def floor(k: int = k) -> Awaitable[int]:
            return limit_events(k)

        out["troupe", k] = troupe
        out["limit", k] = limit
        out["limit_cancel_points", k] = checked
        out["limit_events", k] = floor
    return out


async def _sections(rounds: int, scale: int, shapes: Sequence[str] = SHAPES) -> None:
    from trio._core import _run  # its scheduler's random batches, seeded per section

    runners = _runners(scale)
    async with open_runtime():
        for run in runners.values():  # warm-up
            await run()
        for _ in range(rounds):
            for shape in shapes:
                for k in (HIGH // scale, LOW // scale):
                    run = runners[shape, k]
                    gc.collect()
                    _run._r.seed(0)
                    os.getppid()  # callgrind: zero the counts
                    for _ in range(RUNS):
                        await run()
                    os.getpgrp()  # callgrind: dump them


def read_counts(
    counted: Sequence[int], rounds: int, shapes: Sequence[str] = SHAPES
) -> list[dict[str, float]]:
    """Instructions per token of each shape, round by round, from the sections'
    counts in the order :func:`_sections` ran them."""
    out = []
    at = 0
    for _ in range(rounds):
        got = {}
        for shape in shapes:
            high, low = counted[at], counted[at + 1]
            at += 2
            got[shape] = (high - low) / RUNS / (HIGH - LOW)
        if len(got) == len(SHAPES):
            got["over_limit_cancel_points"] = got["troupe"] / got["limit_cancel_points"]
            got["over_limit"] = got["troupe"] / got["limit"]
            got["over_limit_events"] = got["troupe"] / got["limit_events"]
        out.append(got)
    assert at == len(counted), (at, len(counted))
    return out


def instructions(rounds: int, shapes: Sequence[str] = SHAPES) -> list[dict[str, float]]:
    """The sections of ``shapes`` under callgrind, ``rounds`` rounds (see the module)."""
    with tempfile.TemporaryDirectory() as folder:
        prefix = f"{folder}/cg"
        argv = ["-m", "benchmarks._per_token", "--sections", str(rounds), "1", ",".join(shapes)]
        under_callgrind(prefix, argv)
        return read_counts(callgrind_sections(prefix), rounds, shapes)


def opcodes(shape: str = "troupe", scale: int = 1) -> dict[str, float]:
    """Python opcodes per token of ``shape``, by function (``file:line name``), the
    largest first: one run of K=2,000 less one of K=200 (sizes divided by ``scale``)."""
    runners = _runners(scale)
    high, low = HIGH // scale, LOW // scale
    counts: dict[int, collections.Counter[str]] = {}
    counting: collections.Counter[str] = collections.Counter()

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counting[
                f"{code.co_filename.rsplit('/', 2)[-1]}:{code.co_firstlineno} {code.co_name}"
            ] += 1
        return tracer

    async def main() -> None:
        nonlocal counting
        async with open_runtime():
            for k in (high, low):
                await runners[shape, k]()  # warm-up
            for k in (high, low):
                counting = counts[k] = collections.Counter()
                sys.settrace(tracer)
                await runners[shape, k]()
                sys.settrace(None)

    trio.run(main)
    per_token = {
        name: (counts[high][name] - counts[low][name]) / (high - low)
        for name in counts[high].keys() | counts[low].keys()
    }
    ordered = sorted(per_token.items(), key=lambda item: -item[1])
    return {name: round(value, 2) for name, value in ordered if abs(value) >= 0.05}


def main(argv: Sequence[str]) -> None:
    if argv[:1] == ["--sections"]:
        scale = int(argv[2]) if len(argv) > 2 else 1
        shapes = argv[3].split(",") if len(argv) > 3 else SHAPES
        trio.run(_sections, int(argv[1]), scale, shapes)
        return
    if argv[:1] == ["--opcodes"]:
        got = opcodes(argv[1] if len(argv) > 1 else "troupe")
        print(json.dumps({"total": round(sum(got.values()), 1), "by_function": got}, indent=2))
        return
    rounds = int(argv[1]) if argv[:1] == ["--callgrind"] and len(argv) > 1 else 2
    shapes = argv[2].split(",") if argv[:1] == ["--callgrind"] and len(argv) > 2 else SHAPES
    print(json.dumps(instructions(rounds, shapes), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
