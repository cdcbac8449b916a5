"""``troupe serve``'s own work per paced token event, in instructions (issue 29).

The paced rows of ``benchmarks._http`` measure the server's CPU over loopback, which a
shared machine moves by tens of per cent from one round to the next. This counts what
the machine's load does not move: instructions (``valgrind --tool=callgrind``), in one
process, on trio's virtual clock (``trio.testing.MockClock``, jumping whenever every
task waits), with no sockets. Each section is ``streams`` streams at once of a model of
20 tokens and the same of 2 tokens; what a token event costs is the difference over
the tokens between, per stream (a stream's start and end are not in it). The streams
start a token's tenth of a second apart spread evenly, as independent clients do, so
that each token wakes its server alone.

Sections (``--sections``, all by default, in turn every round):

- ``serve``: ``troupe serve``'s app (``actors.serve.asgi_app``, the clock agent of
  ``benchmarks._http``) taking ``POST /runs/stream``; the server's ``send`` yields to
  the scheduler twice, as hypercorn's trio worker's does for a write the socket takes
  at once (its send lock's acquire, then the socket's send: each a checkpoint that
  yields; ``--send-yields 1`` for one).
- ``floor``: the paced rows' floor, the bare ASGI app of ``benchmarks._http`` that
  writes the same bytes (headers, starts, a token a tenth of a second, the ends), with
  the same ``send``.
- ``serve_nosend``: ``serve`` with a ``send`` that does not yield.
- ``events``: the same runs read through ``astream_events`` without the HTTP edge
  (each event's frame made as ``troupe serve`` makes it, nothing written).
- ``sleep``: a lone ``trio.sleep`` per token.

``python -m benchmarks._serve_cpu --callgrind [--rounds 3] [--streams 50]
[--sections serve,floor] [--send-yields 2]`` runs itself under ``valgrind --tool=callgrind``
(``PYTHONHASHSEED=0``), each section's count dumped by itself (``os.getppid`` opens a
section and ``os.getpgrp`` closes it: the two libc calls are the marks, as nothing
else in the process makes them, ``--zero-before=getppid --dump-before=getpgrp``), and
prints the instructions per token event of every section and round, each round's ratio
to the floor's of the same round, and the medians. Without ``--callgrind`` it prints
CPU seconds per token event instead (which the machine's load moves).
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import trio
import trio.testing

from actors.serve import PROTOCOLS, asgi_app
from actors.serve._server import tune_collector
from runtime import open_runtime

from ._http import clock_agent, floor_app, stream_script
from ._timing import callgrind_sections, under_callgrind
from ._workload import QUESTION

LONG: Final = 20
SHORT: Final = 2
SECTIONS: Final = ("serve", "floor", "serve_nosend", "events", "sleep")
ASGI = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def _scope(body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/runs/stream",
        "raw_path": b"/runs/stream",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _request(app: ASGI, performer: str, yields: int, out: list[int]) -> None:
    """One ``POST /runs/stream``, read to its end; the bytes written go to ``out``. The
    server's ``send`` yields ``yields`` times."""
    body = json.dumps({"performer": performer, "input": QUESTION}).encode()
    sent = [False]
    gone = trio.Event()
    written = 0

    async def receive() -> dict[str, Any]:
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()  # a client that stays until the response ends
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal written
        if message["type"] == "http.response.body":
            written += len(message.get("body", b""))
        for _ in range(yields):
            await trio.lowlevel.cancel_shielded_checkpoint()

    await app(_scope(body), receive, send)
    gone.set()
    out.append(written)


async def _lifespan(app: ASGI, nursery: trio.Nursery) -> Callable[[], Awaitable[None]]:
    """Start ``app``'s lifespan; returns what ends it."""
    to_app: trio.MemorySendChannel[dict[str, Any]]
    to_app, from_server = trio.open_memory_channel[dict[str, Any]](1)
    to_server, from_app = trio.open_memory_channel[dict[str, Any]](1)
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}

    async def send(message: dict[str, Any]) -> None:
        await to_server.send(message)

    nursery.start_soon(app, scope, from_server.receive, send)
    await to_app.send({"type": "lifespan.startup"})
    assert (await from_app.receive())["type"] == "lifespan.startup.complete"

    async def end() -> None:
        await to_app.send({"type": "lifespan.shutdown"})
        await from_app.receive()

    return end


async def _staggered(streams: int, one: Callable[[], Awaitable[None]]) -> None:
    async with trio.open_nursery() as nursery:
        for _ in range(streams):
            nursery.start_soon(one)
            await trio.sleep(0.1 / streams)


def _section_http(app: ASGI, performer: str, streams: int, yields: int) -> Callable[[], Any]:
    async def load() -> None:
        out: list[int] = []
        await _staggered(streams, lambda: _request(app, performer, yields, out))
        assert len(out) == streams and min(out) > 0, out

    return load


async def _main_async(
    rounds: int, streams: int, sections: Sequence[str], floors: dict[int, ASGI], yields: int
) -> list[dict[str, Any]]:
    serve_app = asgi_app({f"clock{n}": clock_agent(n) for n in (LONG, SHORT)})
    results: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:
        end = await _lifespan(serve_app, nursery)
        async with open_runtime() as runtime:
            agents = {n: clock_agent(n) for n in (LONG, SHORT)}

            async def read_events(n: int) -> None:
                async with runtime.astream_events(agents[n], QUESTION) as stream:
                    root = None
                    encoder = None
                    position = 0
                    async for event in stream:
                        if encoder is None:
                            root = event.run_id
                            encoder = PROTOCOLS["events"](root, root)
                        position += 1
                        b"".join(encoder.encode(position, event))

            async def sleeper(n: int) -> None:
                for _ in range(n):
                    await trio.sleep(0.1)

            def load(section: str, n: int) -> Callable[[], Awaitable[None]]:
                if section == "serve":
                    return _section_http(serve_app, f"clock{n}", streams, yields)
                if section == "serve_nosend":
                    return _section_http(serve_app, f"clock{n}", streams, 0)
                if section == "floor":
                    return _section_http(floors[n], "floor", streams, yields)
                if section == "events":
                    return lambda: _staggered(streams, lambda: read_events(n))
                return lambda: _staggered(streams, lambda: sleeper(n))

            # a warm-up of each, uncounted
            for section in sections:
                await load(section, SHORT)()
            for round_ in range(rounds):
                for section in sections:
                    for n in (LONG, SHORT):
                        run = load(section, n)
                        gc.collect()
                        start = time.process_time()
                        os.getppid()  # callgrind: zero the counts
                        await run()
                        os.getpgrp()  # callgrind: dump them
                        cpu = time.process_time() - start
                        results.append(
                            {"round": round_, "section": section, "tokens": n, "cpu": cpu}
                        )
        await end()
    return results


def _per_token(results: list[dict[str, Any]], key: str, streams: int) -> dict[str, list[float]]:
    """Each section's cost per token event, one figure a round."""
    by: dict[tuple[int, str, int], float] = {
        (r["round"], r["section"], r["tokens"]): r[key] for r in results
    }
    out: dict[str, list[float]] = {}
    for (round_, section, n), value in sorted(by.items()):
        if n != LONG:
            continue
        short = by[(round_, section, SHORT)]
        out.setdefault(section, []).append((value - short) / (streams * (LONG - SHORT)))
    return out


def _summary(per: dict[str, list[float]]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        k: {"median": statistics.median(v), "rounds": v} for k, v in per.items()
    }
    if "floor" in per:
        for section, values in per.items():
            if section != "floor":
                ratios = [a / b for a, b in zip(values, per["floor"], strict=True)]
                summary[section]["over_floor"] = statistics.median(ratios)
                summary[section]["over_floor_rounds"] = ratios
    return summary


def read_dumps(prefix: str) -> dict[str, Any]:
    """The instructions of each section from callgrind's dumps ``prefix.N`` (and the
    plan the run saved beside them, ``prefix.plan.json``)."""
    with open(prefix + ".plan.json") as file:
        plan = json.load(file)
    counted = callgrind_sections(prefix)
    results = plan["results"]
    assert len(counted) == len(results), (len(counted), len(results))
    for result, instructions in zip(results, counted, strict=True):
        result["instructions"] = instructions
    return _summary(_per_token(results, "instructions", plan["streams"]))


def _under_callgrind(argv: Sequence[str]) -> dict[str, Any]:
    """Run this module under callgrind with ``argv``; the instructions per token event."""
    with tempfile.TemporaryDirectory() as folder:
        prefix = f"{folder}/cg"
        under_callgrind(
            prefix, ["-m", "benchmarks._serve_cpu", "--plan", prefix + ".plan.json", *argv]
        )
        return read_dumps(prefix)


def main(argv: Sequence[str]) -> None:
    if argv[:1] == ["--callgrind"]:
        print(json.dumps(_under_callgrind(argv[1:]), indent=2))
        return
    rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 3
    streams = int(argv[argv.index("--streams") + 1]) if "--streams" in argv else 50
    sections: Sequence[str] = SECTIONS
    if "--sections" in argv:
        sections = argv[argv.index("--sections") + 1].split(",")
    tune_collector()  # as troupe serve sets the collector (and the floor's server)
    clock = trio.testing.MockClock(autojump_threshold=0)
    floors = {n: floor_app(stream_script(n)) for n in (LONG, SHORT)}
    yields = int(argv[argv.index("--send-yields") + 1]) if "--send-yields" in argv else 2
    results = trio.run(_main_async, rounds, streams, sections, floors, yields, clock=clock)
    plan = {"streams": streams, "results": results}
    if "--plan" in argv:
        with open(argv[argv.index("--plan") + 1], "w") as file:
            json.dump(plan, file)
    print(json.dumps(_summary(_per_token(results, "cpu", streams)), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
