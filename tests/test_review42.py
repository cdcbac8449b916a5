"""A hostile review of stop 41 (schema 5's thread segments, quick structuring, the
viewer board's first-token mode)."""

from __future__ import annotations

import trio

from runtime import open_runtime
from tests.test_subscriber_pacing import DELAY, TOKENS, Recorder, model


async def test_a_first_only_subscriber_gets_one_stream_event_per_run_while_another_flips(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The viewer board switches what it takes as pages come and go; the tracer routes
    # the open runs afresh. Another subscriber that takes each run's first stream event
    # only (the OpenTelemetry exporter) must not be given a second one each time.
    first_only = Recorder(stream_events="first")
    switching = Recorder(stream_events="first")
    async with open_runtime() as rt:
        await rt.subscribe(first_only)
        attachment = await rt.subscribe(switching)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(model().ainvoke, "go")
            for _ in range(3):  # a page opens and closes, three times, mid-run
                await trio.sleep(TOKENS * DELAY / 8)
                await attachment.stream_events("all")
                await trio.sleep(TOKENS * DELAY / 8)
                await attachment.stream_events("first")
        await trio.sleep(0.1)
    streamed = [e.seq for _, e in first_only.seen if e.phase == "stream"]
    assert streamed == [1]
    assert [e.phase for _, e in first_only.seen if e.phase != "stream"] == ["start", "end"]
