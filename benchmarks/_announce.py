"""What it costs to answer a streamed run's id only once its record is journaled (issue
30): the time to a ``POST /runs/stream`` response's headers (its ``x-troupe-run-id``),
with the wait for the record (``durable``) and without it (``early``: the wait made a
no-op, as before), alternating in rounds in one process, on SQLite (``synchronous=full``)
and on PostgreSQL (fsync on). The floor is ``early`` itself: the difference is the
added latency to the first byte. Medians over every request of every round.

``python -m benchmarks._announce`` prints one JSON object (``--quick``: fewer requests).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import trio

import actors.serve._app as app_module
from actors._demo import make_cat_agent

from ._stores import on_postgres


async def _no_wait(server: Any, run_id: str) -> None:
    await trio.lowlevel.checkpoint()


async def _round(store: str, requests: int, durable: bool) -> list[float]:
    from tests.sse_client import serving

    waited = app_module._known_everywhere
    if not durable:
        app_module._known_everywhere = _no_wait
    try:
        async with serving(make_cat_agent(), store=store) as served:
            times: list[float] = []
            for _ in range(requests):
                began = time.perf_counter()
                async with served.client.stream(
                    "POST", "/runs/stream", json={"input": "where is the cat?"}
                ) as response:
                    times.append(time.perf_counter() - began)
                    assert response.headers["x-troupe-run-id"]
                    await response.aread()
            served.shutdown.set()
        return times
    finally:
        app_module._known_everywhere = waited


async def _measure(stores: dict[str, str], quick: bool) -> dict[str, Any]:
    requests, rounds = (5, 1) if quick else (30, 4)
    found: dict[str, dict[str, list[float]]] = {
        name: {"durable": [], "early": []} for name in stores
    }
    for _ in range(rounds):
        for name, store in stores.items():
            for mode in ("durable", "early"):
                found[name][mode] += await _round(store, requests, mode == "durable")
    result: dict[str, Any] = {}
    for name, modes in found.items():
        durable = statistics.median(modes["durable"]) * 1e3
        early = statistics.median(modes["early"]) * 1e3
        result[name] = {
            "headers_durable_ms": round(durable, 3),
            "headers_early_ms": round(early, 3),
            "added_ms": round(durable - early, 3),
            "n": len(modes["durable"]),
        }
    return result


def main(argv: Sequence[str]) -> dict[str, Any]:
    """The figures on SQLite, and on a throwaway PostgreSQL cluster (``fsync`` on) or
    why it was skipped."""
    quick = "--quick" in argv
    with tempfile.TemporaryDirectory() as folder:
        sqlite = trio.run(_measure, {"sqlite": f"sqlite:///{folder}/announce.db"}, quick)
    postgres = on_postgres(
        lambda new_database: trio.run(_measure, {"postgres": new_database()}, quick), argv
    )
    return {**sqlite, **({} if "skipped" in postgres else postgres)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
