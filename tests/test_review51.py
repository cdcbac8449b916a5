"""A hostile review of stop 46's changes (generated replay walks, text-only messages,
StrEnum keys on the wire, a join waiting for a run's first write, the journal failing
a run alone): stop 47."""

from __future__ import annotations

from pathlib import Path

import trio

from runtime import open_runtime

from .sleeper_worker import Sleeper
from .test_recovery import journal, killed_when

# -- a join of a run this process took over from a dead one ---------------------------


def _killed_asleep(url: str) -> None:
    """A process runs ``r1`` (a :class:`Sleeper`) on the store at ``url``, and is killed
    with SIGKILL as it sleeps (its chunk journaled)."""
    killed_when(
        ["tests.sleeper_worker", url],
        "asleep",
        lambda: any(e.event == "on_chain_stream" for e in journal(url)),
    )


async def test_a_join_of_a_run_taken_over_reads_its_journal_at_once(
    tmp_path: Path, troupe_watchdog: None
) -> None:
    # Since stop 46 a join of a run of this runtime waits for the run's first write
    # (Journal.recorded), which comes after its stream's first events. A run taken over
    # from a dead process (or a resume's claim) has its record and journal in the store
    # already, and its next write may be far off: here the run, recovered, sleeps as
    # it did when its process was killed, and the join read nothing until it woke
    # (for ever): it failed after 5 s before, it reads the journal at once now.
    url = f"sqlite:///{tmp_path}/runs.db"
    _killed_asleep(url)

    sleeper = Sleeper()
    async with open_runtime(store=url, resume=[sleeper]) as rt:
        with trio.fail_after(30):
            await sleeper.asleep.wait()  # recovered (the journal was told of it)
        seen: list[str] = []
        with trio.fail_after(5):
            async with rt.join("r1") as events:
                async for event in events:
                    seen.append(event.event)
                    if event.event == "on_chain_stream":
                        break
        sleeper.woken.set()
    assert seen == ["on_chain_start", "on_chain_stream"]
