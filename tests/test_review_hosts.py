"""Hostile review of hosts-alike (issue 29): joins as hosted streams fed by a task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from runtime import RuntimeClosedError, open_runtime

from .test_hosted import Slow, _until_journaled


async def test_a_runtime_closing_under_an_open_join_ends_it_at_once(tmp_path: Path) -> None:
    """A join opened in a task that outlives its runtime's block (the run it follows goes
    on in another process): the runtime's close ends the join's task at once and its
    reader hears RuntimeClosedError; it does not wait out the subscribers' grace."""
    url = f"sqlite:///{tmp_path}/runs.db"
    got: list[Any] = []
    async with open_runtime(store=url) as host, host.astream_events(Slow(), 1) as stream:
        async for event in stream:
            if event.chunk == "first":
                break
        async with trio.open_nursery() as outer:
            opened = trio.Event()

            async def read(rt: Any) -> None:
                async with rt.join(stream.run_id) as joined:
                    opened.set()
                    try:
                        got.extend([event async for event in joined])
                    except RuntimeClosedError as exc:
                        got.append(exc)

            async with open_runtime(store=url, close_grace=30) as joiner:
                await _until_journaled(joiner, stream.run_id)
                outer.start_soon(read, joiner)
                await opened.wait()
                closing = trio.current_time()
            took = trio.current_time() - closing
            with trio.fail_after(5):
                while not got or not isinstance(got[-1], BaseException):  # noqa: ASYNC110
                    await trio.sleep(0.01)
        stream.cancel()
    assert isinstance(got[-1], RuntimeClosedError)
    assert took < 5, took
