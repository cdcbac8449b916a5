"""Replay: a run's performer run again, with every request it already made answered
from its journal.

A run's journal says, for each request the run made (a model turn, a tool call, a
nested run), what was asked (its performer's kind and name, and its input as the start
event shows it) and how it ended. Run again, the performer makes its requests anew;
each is matched to the journaled request it repeats, and one that ended (well, or with
an error) is answered from the journal: not called, and no event of it is made again.
A request the journal holds no answer for runs for real: one that never ended (its
process died: it runs again, at least once), one that paused (it goes on, with the
person's decisions), or one the journal never saw. A request that ran for real and had
made requests of its own is replayed the same way, one level down.

What the run itself streamed before is not streamed again: its first chunks and custom
events are checked against the journal's (a performer that streams otherwise on replay
is not deterministic) and dropped.

A performer is replayable when, given the same answers, it makes the same requests
with the same inputs in the same order (concurrent requests may come in any order) and
streams the same chunks: no clock, randomness or outside state decides what it asks,
and its outputs and inputs are JSON values or protocol objects.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, final

from protocol import SerializationError, StreamEvent, structure_any, unstructure_any

from ._errors import ReplayDivergenceError

INTERRUPTED: Final = "interrupted: "
"""How the error of a run ended because its process died begins: its parent's replay
runs it again."""


def comparable(value: Any) -> Any:
    """``value`` as the journal gives it back (JSON and protocol objects), to compare."""
    try:
        return structure_any(unstructure_any(value))
    except SerializationError:
        return repr(value)


@final
class Step:
    """One journaled request of a run, and how it ended (``status`` ``None``: it never
    did)."""

    __slots__ = ("error", "input", "kind", "name", "output", "replay", "run_id", "status")

    def __init__(self, run_id: str, kind: str, name: str, input: Any) -> None:
        self.run_id = run_id
        self.kind = kind
        self.name = name
        self.input = input
        self.status: str | None = None
        self.output: Any = None
        self.error: str | None = None
        self.replay = Replay(run_id)
        """What this request's own run asked for, if it is run again."""

    @property
    def answered(self) -> bool:
        """Whether the journal answers this request (it ended well, or with a real
        error): if not, it runs for real."""
        if self.status == "ok":
            return True
        return self.status == "error" and not (self.error or "").startswith(INTERRUPTED)

    def describe(self) -> str:
        return f"{self.kind} {self.name!r} with {self.input!r:.200}"


@final
class Replay:
    """The journaled requests and output of one run (see the module's docstring)."""

    __slots__ = ("_emits", "_next_emit", "_taken", "run_id", "steps")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.steps: list[Step] = []
        self._taken: list[bool] = []
        self._emits: list[Any] = []  # chunks and custom events, as the journal has them
        self._next_emit = 0

    @property
    def empty(self) -> bool:
        """Whether there is nothing to replay."""
        return not self.steps and not self._emits

    def take(self, kind: str, name: str, input: Any) -> Step | None:
        """The journaled request this one repeats (consumed), or ``None`` if the
        journal holds none (then see :meth:`check`)."""
        value = comparable(input)
        for index, step in enumerate(self.steps):
            if (
                not self._taken[index]
                and step.kind == kind
                and step.name == name
                and step.input == value
            ):
                self._taken[index] = True
                return step
        return None

    @property
    def answers_left(self) -> bool:
        """Whether requests the journal answers are still to come."""
        return any(s.answered and not t for s, t in zip(self.steps, self._taken, strict=True))

    def check(self, kind: str, name: str, input: Any) -> None:
        """A request the journal holds nothing for runs for real, unless requests the
        journal answers are still to come: then the performer asked otherwise than
        before. (Call it once the requests made at the same time as this one have
        been taken: concurrent requests may come in any order.)

        Raises:
            ReplayDivergenceError: naming this request and the journal's next one.
        """
        for step, taken in zip(self.steps, self._taken, strict=True):
            if step.answered and not taken:
                raise ReplayDivergenceError(
                    f"run {self.run_id!r} replayed from its journal asked for {kind} "
                    f"{name!r} with {comparable(input)!r:.200}, where the journal's next "
                    f"answered request is {step.describe()}: its performer is not "
                    "deterministic (see 'What makes a performer replayable' in "
                    "docs/journal.md)"
                )

    def replays_emit(self, kind: str, chunk: Any) -> bool:
        """Whether a chunk (``kind`` ``chunk``) or custom event (``custom``, the chunk
        a ``(name, data)`` pair) the run makes again was streamed before (then it is
        dropped).

        Raises:
            ReplayDivergenceError: it differs from what the journal holds.
        """
        if self._next_emit >= len(self._emits):
            return False
        expected_kind, expected = self._emits[self._next_emit]
        value = comparable(chunk)
        if expected_kind != kind or expected != value:
            raise ReplayDivergenceError(
                f"run {self.run_id!r} replayed from its journal streamed {kind} "
                f"{value!r:.200} where its journal has {expected_kind} {expected!r:.200}"
            )
        self._next_emit += 1
        return True

    @property
    def replaying(self) -> bool:
        """Whether journaled chunks are still to be streamed again (and dropped)."""
        return self._next_emit < len(self._emits)

    def rerun(self) -> Replay:
        """This run's replay for running it again under a new id (a step that never
        ended, or paused): its requests are answered, but what it streamed is streamed
        again, as the new run's (under the old id, it ended with an error)."""
        again = Replay(self.run_id)
        again.steps = self.steps
        again._taken = [False] * len(self.steps)
        return again

    def then(self, later: Replay) -> Replay:
        """This run's replay followed by that of ``later``, the run that resumed it:
        the answered requests of both (a paused or interrupted one of this run was run
        again by ``later``), and what both streamed."""
        joined = Replay(later.run_id)
        joined.steps = [s for s in self.steps if s.answered] + later.steps
        joined._taken = [False] * len(joined.steps)
        joined._emits = self._emits + later._emits
        return joined


@final
class JournaledRun:
    """A root run's journal, read: its replay, and where its events stand."""

    __slots__ = (
        "decisions",
        "end",
        "events",
        "fresh",
        "last_seq",
        "position",
        "replay",
        "root",
        "start",
    )

    def __init__(
        self,
        root: StreamEvent,
        replay: Replay,
        last_seq: int,
        events: int,
        end: StreamEvent | None,
        *,
        fresh: bool = False,
    ) -> None:
        self.root = root
        self.fresh = fresh
        """Whether the run never started (its journal is empty): a resume whose process
        died first; ``root`` is then the start of the run it resumes."""
        self.replay = replay
        self.last_seq = last_seq
        self.events = events
        self.start = root.start_time
        self.end = end
        """The root's terminal event, if it ended."""
        self.position = 0
        """How many records its journal holds (set by whoever read them)."""
        self.decisions: dict[str, Any] = {}
        """The decisions the runs it resumed (and it) were given, by request id."""

    @property
    def input(self) -> Any:
        """The root's input, as its start event shows it."""
        return self.root.data.input


def read_journal(root_id: str, events: Iterable[StreamEvent]) -> JournaledRun:
    """The replay of root run ``root_id`` from its journal's events, in order.

    Raises:
        ValueError: the journal does not begin with the root's start.
    """
    replays: dict[str, Replay] = {}
    steps: dict[str, Step] = {}
    root_start: StreamEvent | None = None
    root_end: StreamEvent | None = None
    last_seq = 0
    count = 0
    for event in events:
        count += 1
        run_id = event.run.run_id
        if event.event.endswith("_start") and event.seq == 0 and event.status is None:
            if run_id == root_id:
                root_start = event
                replays[run_id] = Replay(run_id)
                continue
            parent = replays.get(event.run.parent_ids[-1]) if event.run.parent_ids else None
            if parent is None:
                continue
            step = steps[run_id] = Step(run_id, event.kind, event.name, event.data.input)
            replays[run_id] = step.replay
            parent.steps.append(step)
            parent._taken.append(False)
            continue
        if run_id == root_id:
            last_seq = max(last_seq, event.seq)
        owner = replays.get(run_id)
        if event.phase == "custom":
            if owner is not None:
                owner._emits.append(("custom", comparable((event.name, event.data.chunk))))
            continue
        if event.status is None:
            if owner is not None:
                owner._emits.append(("chunk", event.data.chunk))
            continue
        if run_id == root_id:
            root_end = event
        ended = steps.get(run_id)
        if ended is not None:
            step = ended
            step.status = event.status
            step.output = event.data.output
            step.error = event.data.error
    if root_start is None:
        raise ValueError(f"the journal of run {root_id!r} does not begin with its start")
    return JournaledRun(root_start, replays[root_id], last_seq, count, root_end)
