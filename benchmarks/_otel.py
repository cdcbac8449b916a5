"""What OpenTelemetry export costs: the cat agent (K tokens, on a model that streams as a
network does: a new chunk per token and a scheduler pass between tokens; its events read
as the seed's loop reads them) run after run in one runtime, with and without the
exporter attached (a batch span processor, whose exporter
drops what it gets, so that only Troupe's and the SDK's work is measured). Rounds
alternate; the figure is the median ratio of run times (target at most 1.10).

``python -m benchmarks._otel`` prints one JSON object (``--quick``: small sizes).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from typing import Any

import trio

from runtime import open_runtime

from ._timing import ratio_of
from ._workload import cat_agent, seconds_per_read_run


async def _round(runs: int, k: int, exporter: Any) -> float:
    agent = cat_agent(k, network_like=True)
    callbacks = [exporter] if exporter is not None else []
    async with open_runtime(callbacks=callbacks):
        return await seconds_per_read_run(agent, runs)


def main(argv: Sequence[str]) -> dict[str, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from actors.otel import OpenTelemetryExporter

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    quick = "--quick" in argv
    runs, k, rounds = (20, 20, 1) if quick else (200, 200, 9)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    exporter = OpenTelemetryExporter(provider)
    plain: list[float] = []
    exported: list[float] = []
    for _ in range(rounds):
        plain.append(trio.run(_round, runs, k, None))
        exported.append(trio.run(_round, runs, k, exporter))
    provider.shutdown()
    return {
        "runs": runs,
        "tokens": k,
        "ms_per_run_without": statistics.median(plain) * 1000,
        "ms_per_run_with": statistics.median(exported) * 1000,
        **ratio_of(exported, plain),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
