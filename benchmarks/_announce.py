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
from typing import Any

import trio

import actors.serve._app as app_module
from actors._demo import make_cat_agent


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


async def _main(quick: bool) -> dict[str, Any]:
    sys.path.insert(0, ".")
    from tests.postgres import ClusterUnavailable, start_cluster

    requests, rounds = (5, 1) if quick else (30, 4)
    stores: dict[str, str] = {}
    folder = tempfile.TemporaryDirectory()
    stores["sqlite"] = f"sqlite:///{folder.name}/announce.db"
    cluster = None
    try:
        cluster = start_cluster(fsync=True)
        stores["postgres"] = cluster.new_database()
    except ClusterUnavailable:
        pass
    found: dict[str, dict[str, list[float]]] = {
        name: {"durable": [], "early": []} for name in stores
    }
    try:
        for _ in range(rounds):
            for name, store in stores.items():
                for mode in ("durable", "early"):
                    found[name][mode] += await _round(store, requests, mode == "durable")
    finally:
        if cluster is not None:
            cluster.stop()
        folder.cleanup()
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


if __name__ == "__main__":
    print(json.dumps(trio.run(_main, "--quick" in sys.argv), indent=2))
