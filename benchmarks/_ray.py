"""Troupe across a Ray cluster's edge: hosts run the models, this process (the driver)
reads the events, as a user's loop reads them (``event["data"]["chunk"].content``).

- events/s for one run and for 100 concurrent runs of a model that streams as a network
  does (a new chunk per token, a scheduler pass between tokens), beside the same runs in
  process;
- per-event latency at 100 tokens/s (a model stamping each token with its production
  time; the driver compares on arrival; one machine, one clock), for 1 and 100 streams;
- how long a driver's cancel takes to come back as the run's ``cancelled`` end (an upper
  bound of the time it takes to reach the host's run);
- the host actor's RSS.

A local cluster (``ray.init(num_cpus=2)``) on this machine: host and driver share its
cores. ``python -m benchmarks._ray`` prints one JSON object (``--quick``: small sizes).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import trio
from attrs import frozen

from actors import ChunkSink, ScriptedChatModel, ScriptedTurn
from protocol import AssistantMessageChunk, ChatMessage, ChatRequest
from runtime import open_runtime

from ._workload import NetworkLikeModel, answer_tokens

REGISTRY = "benchmarks._ray:performers"
RATE = 100.0
"""Tokens per second of the paced model."""


@frozen(eq=False)
class StampingModel(ScriptedChatModel):
    """Makes ``RATE`` tokens a second, each one's text its production time."""

    async def generate(self, request: ChatRequest, sink: ChunkSink) -> None:
        turn = self.turn_for(request.messages)
        count = len(turn.token_list())
        start = trio.current_time()
        for index in range(count):
            await trio.sleep_until(start + index / RATE)
            await sink.send(AssistantMessageChunk(repr(time.time())))


def _tokens(k: int) -> Any:
    def script(messages: Sequence[ChatMessage]) -> ScriptedTurn:
        return ScriptedTurn(tokens=answer_tokens(k))

    return script


def performers() -> dict[str, Any]:
    """What the benchmark's hosts run."""
    return {
        "model_20000": NetworkLikeModel(_tokens(20_000), name="Model"),
        "model_2000": NetworkLikeModel(_tokens(2_000), name="Model"),
        "model_200": NetworkLikeModel(_tokens(200), name="Model"),
        "stamping_500": StampingModel(_tokens(500), name="Stamping"),
        "stamping_100": StampingModel(_tokens(100), name="Stamping"),
    }


async def _read(stream: Any) -> int:
    events = 0
    async with stream:
        async for event in stream:
            if event["event"] == "on_chat_model_stream":
                _ = event["data"]["chunk"].content
            events += 1
    return events


async def _events_per_second(start_stream: Any, runs: int) -> float:
    counts: list[int] = []

    async def one() -> None:
        counts.append(await _read(start_stream()))

    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(runs):
            nursery.start_soon(one)
    return sum(counts) / (time.perf_counter() - began)


async def _latencies(start_stream: Any, runs: int) -> list[float]:
    latencies: list[float] = []

    async def one() -> None:
        async with start_stream() as stream:
            async for event in stream:
                if event["event"] == "on_chat_model_stream":
                    made = float(event["data"]["chunk"].content)
                    latencies.append((time.time() - made) * 1000)

    async with trio.open_nursery() as nursery:
        for _ in range(runs):
            nursery.start_soon(one)
    return latencies


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "latency_ms_p50": statistics.median(ordered),
        "latency_ms_p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    }


async def _cancel_ms(rt: Any, times: int) -> dict[str, float]:
    waits = []
    for _ in range(times):
        async with rt.astream_events("stamping_500", "go") as stream:
            async for event in stream:
                if event["event"] == "on_chat_model_stream":
                    break
            began = time.perf_counter()
            stream.cancel()
            try:
                async for _ in stream:
                    pass
            except Exception:  # RunCancelledError: what the run ended with
                waits.append((time.perf_counter() - began) * 1000)
    ordered = sorted(waits)
    return {
        "cancel_ms_p50": statistics.median(ordered),
        "cancel_ms_max": ordered[-1],
    }


async def _host_rss_kib(rt: Any) -> int:
    from actors.ray._driver import ray_result

    status = await ray_result(rt.links[0].handle.status.remote())
    return int(status["rss_kib"])


async def measure(quick: bool) -> dict[str, Any]:
    from actors.ray import open_ray_runtime

    local_models = performers()
    single = "model_2000" if quick else "model_20000"
    many, many_runs = ("model_200", 10) if quick else ("model_2000", 100)
    paced, paced_runs = ("stamping_100", (1, 10)) if quick else ("stamping_500", (1, 100))
    report: dict[str, Any] = {}
    async with open_runtime() as local:
        report["local_events_per_second_one_run"] = await _events_per_second(
            lambda: local.astream_events(local_models[single], "go"), 1
        )
        report["local_events_per_second_concurrent"] = await _events_per_second(
            lambda: local.astream_events(local_models[many], "go"), many_runs
        )
    async with open_ray_runtime(
        registry=REGISTRY, init_options={"num_cpus": 2, "include_dashboard": False}
    ) as rt:
        await _read(rt.astream_events("model_200", "go"))  # warm-up
        report["host_rss_kib_idle"] = await _host_rss_kib(rt)
        report["events_per_second_one_run"] = await _events_per_second(
            lambda: rt.astream_events(single, "go"), 1
        )
        report["concurrent_runs"] = many_runs
        report["events_per_second_concurrent"] = await _events_per_second(
            lambda: rt.astream_events(many, "go"), many_runs
        )
        report["host_rss_kib_after"] = await _host_rss_kib(rt)
        report["paced"] = []
        for streams in paced_runs:
            latencies = await _latencies(lambda: rt.astream_events(paced, "go"), streams)
            report["paced"].append(
                {"streams": streams, "tokens_per_second": RATE, **_percentiles(latencies)}
            )
        report.update(await _cancel_ms(rt, 5 if quick else 50))
    return report


def main(argv: Sequence[str]) -> dict[str, Any]:
    return trio.run(measure, "--quick" in argv)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
