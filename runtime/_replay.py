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
from operator import is_
from typing import Any, Final, final

from protocol import (
    COMPACT_IDENTITY as IDENTITY,
)
from protocol import (
    COMPACT_WHOLE as WHOLE,
)
from protocol import (
    CUSTOM_EVENT,
    STATE_EVENT,
    TYPE_KEY,
    VOUCHING_CLASSES,
    CompactError,
    CompactLinks,
    CompactSlots,
    Paused,
    SerializationError,
    compact_chunk_from_flat,
    compact_extended_input,
    identity_vouches,
    matches_known,
    same_json,
    shown_repr,
    structure_any,
    unstructure_any,
    unstructure_known,
)

from ._errors import ReplayDivergenceError

_PLAIN: Final = (str, bool, int, float, dict, list, tuple, type(None))
"""JSON values and containers, which :meth:`Replay._json` reads each time."""


_STILL: Final = frozenset((*VOUCHING_CLASSES, str, int, float, bool, type(None)))
"""Types whose objects never change in place: messages and scalars (a request's items
mostly are: one set operation tells it)."""


def _mutable(items: tuple[Any, ...]) -> bool:
    """Whether one of ``items`` may change in place (by its type: one pass in C; else
    each asked: an agent's action made with a plain dict may)."""
    kinds = set(map(type, items))
    if kinds <= _STILL:
        return False
    return not all(map(identity_vouches, items))


INTERRUPTED: Final = "interrupted: "
RESUMES_KEY: Final = "troupe_resumes"
"""In the local metadata of a step run again by a replay: the id of the step's first run
(its interrupts are named by that id, along a chain of resumes)."""
"""How the error of a run ended because its process died begins: its parent's replay
runs it again."""


_NO_PREFIX: Final[dict[str, int]] = {}
"""A request's checked items when none are (see ``Replay._prefix``: never changed)."""

_NO_PATCHES: Final[list[Any]] = []
"""A step's patches until it has one (a read journal makes no list per step)."""


def comparable(value: Any) -> Any:
    """``value`` in its JSON form, as the journal holds it, to compare."""
    try:
        return unstructure_any(value)
    except SerializationError:
        return shown_repr(value)


def first_difference(value: Any, journaled: Any, path: str = "input") -> str:
    """Where the JSON value ``value`` first differs from ``journaled`` (as
    :func:`protocol.same_json` tells them apart), and how: for a divergence's error."""
    if isinstance(value, list) and type(journaled) is list:
        for index, (item, wanted) in enumerate(zip(value, journaled, strict=False)):
            if not same_json(item, wanted):
                return first_difference(item, wanted, f"{path}[{index}]")
        if len(value) != len(journaled):
            return f"{path} has {len(value)} items where the journal's has {len(journaled)}"
    elif isinstance(value, dict) and type(journaled) is dict:
        for key, item in value.items():
            if key not in journaled:
                return f"{path}[{key!r}] is not in the journal's"
            if not same_json(item, journaled[key]):
                return first_difference(item, journaled[key], f"{path}[{key!r}]")
        for key in journaled:
            if key not in value:
                return f"{path}[{key!r}] is missing (the journal's is {journaled[key]!r:.100})"
    return f"{path} is {value!r:.100} where the journal has {journaled!r:.100}"


@final
class Step:
    """One journaled request of a run, and how it ended (``status`` ``None``: it never
    did)."""

    __slots__ = (
        "_base",
        "_counts",
        "_given",
        "_replay",
        "_whole",
        "error",
        "error_type",
        "kind",
        "live",
        "name",
        "origin",
        "patches",
        "raw_output",
        "run_id",
        "status",
    )

    def __init__(
        self,
        run_id: str,
        kind: str,
        name: str,
        input: Any,
        origin: str | None = None,
        *,
        base: Step | None = None,
        counts: dict[str, int] | None = None,
    ) -> None:
        self.run_id = run_id
        self.origin = origin or run_id
        """The id of this step's first run (a step run again says which it repeats)."""
        self.kind = kind
        self.name = name
        # Its input (JSON) as journaled: whole, or (with a ``base``) given by reference:
        # each list of ``counts`` after the first ``count`` items of the base's.
        self._given = input
        self._base = base
        self._counts = counts or {}
        self._whole: Any = None
        self.live: dict[str, tuple[Any, ...]] | None = None
        """The lists of a request found to ask for this input, if none of their items
        can change in place (then they vouch for the same items of a later request)."""
        self.status: str | None = None
        self.raw_output: Any = None
        self.error: str | None = None
        self.error_type: str | None = None
        """The qualified name of the error's type, where the journal holds it."""
        self._replay: Replay | None = None  # made when asked for (most never are)
        self.patches: list[Any] = _NO_PATCHES
        """The shared state's patches this request's runs made, in order (a request the
        journal answers makes them again; see ``StateCell.rebuild``); not to be changed
        (:meth:`patched` adds one)."""

    @property
    def replay(self) -> Replay:
        """What this request's own run asked for, if it is run again."""
        replay = self._replay
        if replay is None:
            replay = self._replay = Replay(self.run_id)
        return replay

    def patched(self, patch: Any) -> None:
        """One more patch its runs made."""
        if self.patches is _NO_PATCHES:
            self.patches = []
        self.patches.append(patch)

    @property
    def input(self) -> Any:
        """What the request asked for (JSON, as journaled), whole."""
        if self._base is None:
            return self._given
        if self._whole is None:
            chain: list[Step] = []
            step: Step = self
            while step._base is not None and step._whole is None:
                chain.append(step)
                step = step._base
            whole = step.input
            for later in reversed(chain):
                whole = compact_extended_input(later._given, whole, later._counts)
            self._whole = whole
        return self._whole

    @property
    def output(self) -> Any:
        """What the request returned (protocol objects and JSON values)."""
        return structure_any(self.raw_output)

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

    __slots__ = (
        "_emits",
        "_first",
        "_memo",
        "_next_emit",
        "_prefix",
        "_taken",
        "run_id",
        "steps",
    )

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.steps: list[Step] = []
        self._taken: list[bool] = []
        self._first = 0  # the steps before it are all taken
        self._emits: list[Any] = []  # chunks and custom events, as the journal has them
        self._next_emit = 0
        # The JSON of the objects requests were made of, by identity: a conversation
        # grows by a message a turn and each turn's request holds the same message
        # objects, so each is turned into JSON once (not once per turn: O(n) not O(n²)).
        self._memo: dict[int, tuple[Any, Any]] = {}
        # Of the request :meth:`_asks` last found to ask for a step given by reference:
        # how many first items of each list are its base's very (immutable) objects
        # (read, never changed).
        self._prefix: dict[str, int] = _NO_PREFIX

    @property
    def known(self) -> dict[int, tuple[Any, Any]]:
        """The JSON of the objects it has seen (by ``id``: the object and its JSON): its
        answers, as journaled, and the requests' and streamed chunks' objects. The run's
        own journal reuses it (it fills as the run goes)."""
        return self._memo

    def _json(self, value: Any) -> Any:
        """:func:`comparable`, with the JSON of objects seen before reused."""
        try:
            return unstructure_known(value, self._memo)
        except SerializationError:
            return shown_repr(value)

    def _equal(self, value: Any, journaled: Any) -> bool:
        """Whether ``value``'s JSON (:meth:`_json`) equals ``journaled``: walked
        together (``matches_known``: no JSON made, the objects found equal known by
        the journal's JSON after), and the JSON made only where that cannot tell."""
        if matches_known(value, journaled, self._memo):
            return True
        return same_json(self._json(value), journaled)

    @property
    def empty(self) -> bool:
        """Whether there is nothing to replay."""
        return not self.steps and not self._emits

    def take(self, kind: str, name: str, input: Any) -> Step | None:
        """The journaled request this one repeats (consumed), or ``None`` if the
        journal holds none (then see :meth:`check`)."""
        shown: list[Any] = []  # the request's JSON, once needed
        unanswered: int | None = None
        steps, taken = self.steps, self._taken
        for index in range(self._first, len(steps)):
            step = steps[index]
            if (
                not taken[index]
                and step.kind == kind
                and step.name == name
                and self._asks(step, input, shown)
            ):
                if step.answered:
                    return self._take(index, input, self._prefix)
                if unanswered is None:
                    unanswered = index
        # None answered: the first that never ended (a step interrupted by a crash, and
        # run again after it by a process that died too, is in the journal twice).
        if unanswered is not None:
            return self._take(unanswered, input, _NO_PREFIX)
        return None

    def _take(self, index: int, input: Any, checked: dict[str, int]) -> Step:
        """Take step ``index``, asked for by ``input``, whose lists begin with
        ``checked``'s count of objects known to be immutable."""
        step = self.steps[index]
        self._taken[index] = True
        if step._base is not None:
            step._base.live = None  # its slot's next request is taken: nothing else asks
        while self._first < len(self._taken) and self._taken[self._first]:
            self._first += 1
        if isinstance(input, dict):
            # Copies (a list changed in place vouches for nothing), of items that cannot
            # change in place either (protocol objects, strings, numbers): of each list,
            # the items after those checked already (a conversation's new messages).
            lists: dict[str, tuple[Any, ...]] = {}
            for key, value in input.items():
                if isinstance(value, list | tuple):
                    items = lists[key] = value if type(value) is tuple else tuple(value)
                    if _mutable(items[checked.get(key, 0) :]):
                        return step
            step.live = lists
        return step

    def _asks(self, step: Step, input: Any, shown: list[Any]) -> bool:
        """Whether the request ``input`` asks for ``step``'s input (its JSON equal to
        the journal's). A step whose input the journal gives by reference to an earlier
        one, which a request was found to ask for, is compared by its new items alone
        where the request's others are that request's very objects."""
        self._prefix = _NO_PREFIX
        base = step._base
        if base is not None and base.live is not None and isinstance(input, dict):
            found = self._asks_by_reference(step, input, base.live)
            if found is not None:
                return found
        if matches_known(input, step.input, self._memo):
            return True
        if not shown:
            shown.append(self._json(input))
        return same_json(step.input, shown[0])

    def _asks_by_reference(
        self, step: Step, input: dict[Any, Any], known: dict[str, tuple[Any, ...]]
    ) -> bool | None:
        """:meth:`_asks` for a step given by reference whose base was asked for with
        ``known``'s lists; ``None`` if that cannot tell (then the whole JSON is
        compared)."""
        given = step._given
        if not isinstance(given, dict) or input.keys() != given.keys():
            return False
        for key, value in input.items():
            count = step._counts.get(key)
            if count is None:
                if not self._equal(value, given[key]):
                    return False
                continue
            before = known.get(key)
            if before is None or len(before) < count or not isinstance(value, list | tuple):
                return None
            if len(value) != count + len(given[key]):
                return False
            # (``map`` stops at the shorter: the first ``count`` items alone, unsliced)
            if not all(map(is_, value, before if len(before) == count else before[:count])):
                return None
            if not self._equal(value[count:], given[key]):
                return False
        self._prefix = step._counts  # (read, never changed)
        return True

    def answer(self, step: Step) -> Any:
        """What the journaled request ``step`` (taken) returned, structured. Its JSON
        is the journal's: a later request that holds it (the next model turn holds the
        last one's message) is compared without turning it into JSON again."""
        value = step.output
        if not isinstance(value, _PLAIN) and identity_vouches(value):
            self._memo[id(value)] = (value, step.raw_output)  # (else it may change in place)
        return value

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
                shown = comparable(input)
                where = ""
                if (step.kind, step.name) == (kind, name):
                    where = f" (the first difference: {first_difference(shown, step.input)})"
                raise ReplayDivergenceError(
                    f"run {self.run_id!r} replayed from its journal asked for {kind} "
                    f"{name!r} with {shown!r:.200}, where the journal's next "
                    f"answered request is {step.describe()}{where}: its performer is not "
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
        if isinstance(expected, str) and getattr(chunk, "content", None) == expected:
            value: Any = expected  # a chat model's chunk of text alone, as the codec keeps it
        elif matches_known(chunk, expected, self._memo):
            value = expected  # (the messages it holds are known: answers, requests)
        else:
            value = self._json(chunk)
        if expected_kind != kind or not same_json(expected, value):
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
        "end_output",
        "end_status",
        "events",
        "fresh",
        "last_seq",
        "position",
        "raw_input",
        "replay",
        "start",
    )

    def __init__(
        self,
        raw_input: Any,
        start: float,
        replay: Replay,
        *,
        last_seq: int = 0,
        fresh: bool = False,
    ) -> None:
        self.raw_input = raw_input
        self.start = start
        """When the root run started."""
        self.replay = replay
        self.last_seq = last_seq
        """The seq of the root's last journaled event."""
        self.fresh = fresh
        """Whether the run never started (its journal is empty): a resume whose process
        died first; its input is then that of the run it resumes."""
        self.end_status: str | None = None
        self.end_output: Any = None
        """The root's end: its status and output (JSON) if it ended."""
        self.events = 0
        self.position = 0
        """How many records its journal holds (set by whoever read them)."""
        self.decisions: dict[str, Any] = {}
        """The decisions the runs it resumed (and it) were given, by request id."""

    @property
    def input(self) -> Any:
        """The root's input, as its start event shows it."""
        return structure_any(self.raw_input)

    @property
    def paused(self) -> Paused | None:
        """What the run waits for, if it ended paused."""
        if self.end_status != "paused":
            return None
        output = structure_any(self.end_output)
        return output if isinstance(output, Paused) else None


def _operation(op: Any) -> Any:
    """A journaled state patch's operation (JSON) as the run made it: a dict, typed so
    (not escaped), its values read back as :func:`structure_any` reads them."""
    if type(op) is not dict:
        return op  # (not an operation: applying it says so, as live)
    return {key: structure_any(value) for key, value in op.items()}


def read_journal(root_id: str, records: Iterable[Any]) -> JournaledRun:
    """The replay of root run ``root_id`` from its journal's compact records, in order
    (read as JSON: a replay structures only the answers it gives; the records are its
    own: the messages they link to are put in place in them).

    Raises:
        ValueError: the journal does not begin with the root's start, or a record is
            malformed.
    """
    replays: dict[str, Replay] = {}
    steps: dict[str, Step] = {}
    slots = CompactSlots()  # the last step of each kind and name, under each run
    resolve = CompactLinks().resolve_in_place  # the messages written once, linked to after
    # number: id, kind, name, parents, and whether it is the root
    runs: dict[int, tuple[str, str, str, tuple[str, ...], bool]] = {}
    origins: dict[str, str] = {}  # run id: the step's first run, for a step run again
    journaled: JournaledRun | None = None
    emits: list[Any] = []  # what the root streamed (its replay's, once its identity is read)
    root_number: int | None = None  # the root's number, once its identity is read
    # (the root's, kept here until the end: its last seq, input and end)
    last_seq: Any = 0
    raw_input: Any = None
    end: tuple[Any, Any] | None = None
    count = 0
    try:
        for record in records:
            count += 1
            head = record[0]
            size = len(record)
            if size == 3 and head != root_number and head in runs:
                continue  # a request's own chunk, which links nothing (see below)
            if head == IDENTITY:
                number, run_id, metadata = record[1], record[2], record[7]
                root = run_id == root_id
                runs[number] = (run_id, record[4], record[3], tuple(record[5]), root)
                if isinstance(metadata, dict):
                    first = metadata.get(RESUMES_KEY)
                    if isinstance(first, str):
                        origins[run_id] = first
                if root and journaled is None:
                    journaled = JournaledRun(None, record[8], Replay(run_id))
                    replays[run_id] = journaled.replay
                    emits = journaled.replay._emits
                    root_number = number
                continue
            given: Any = None
            error_type: Any = None
            if head == WHOLE:
                event = record[1]
                run_id, name, seq = event["run_id"], event["name"], event["seq"]
                parents = tuple(event["parent_ids"])
                kind, data, status = event["kind"], event["data"], event["status"]
                root = run_id == root_id and journaled is not None
                if root and seq > last_seq:
                    last_seq = seq
                if event["event"] == CUSTOM_EVENT:
                    if root:
                        emits.append(("custom", [name, data]))
                    if (
                        name == STATE_EVENT
                        and isinstance(data, dict)
                        and data.get(TYPE_KEY) == "StateDelta"
                    ):
                        # Its operations as the live run made them (their values read
                        # back: a dict with a "$type" key is escaped in the journal)
                        patch = [_operation(op) for op in data["patch"]]
                        for made_by in (run_id, *parents):  # every step it was made inside
                            if made_by in steps:
                                steps[made_by].patched(patch)
                    continue
                start = False
            else:
                run_id, kind, name, parents, root = runs[head]
                root = root and journaled is not None
                seq = record[1]
                if size <= 4:
                    chunk = record[2]
                    if size == 4:  # (the messages it defines are linked to after)
                        chunk = resolve(count - 1, chunk, record[3])
                    # What the root streamed is checked on replay; a request's own
                    # chunks are not (answered, it is not run; run again, it streams
                    # anew: see Replay.rerun): they are not kept.
                    if root:
                        if type(chunk) is list and kind == "chat_model":  # (a flat one)
                            chunk = unstructure_any(compact_chunk_from_flat(chunk))
                        emits.append(("chunk", chunk))
                        last_seq = seq
                    continue
                if size < 6:
                    raise IndexError(f"an event's record of {size} values")
                data, status = record[3], record[4]
                if size > 6:
                    given = record[6]
                    if size > 7:
                        error_type = record[7]
                        if size > 8 and record[8] is not None:
                            data = resolve(count - 1, data, record[8])
                if root and seq > last_seq:
                    last_seq = seq
                start = status is None and seq == 0
            if start:
                if root:
                    raw_input = data.get("input")
                    continue
                if run_id == root_id:
                    continue
                parent = replays.get(parents[-1]) if parents else None
                if parent is None:
                    owner = steps.get(parents[-1]) if parents else None
                    if owner is None:
                        continue
                    parent = replays[owner.run_id] = owner.replay  # it asked in turn
                if given is None:
                    step = Step(run_id, kind, name, data.get("input"), origins.get(run_id))
                else:  # its input given by reference (a delta journal's)
                    number, counts = given
                    if not isinstance(counts, dict):
                        raise ValueError(f"a reference's counts are {counts!r:.100}")
                    for n in counts.values():  # (no generator made: one count, mostly)
                        if type(n) is not int or n <= 0:
                            raise ValueError(f"a reference's counts are {counts!r:.100}")
                    step = Step(
                        run_id,
                        kind,
                        name,
                        data.get("input"),
                        origins.get(run_id),
                        base=slots.base(parents, kind, name, number),
                        counts=counts,
                    )
                steps[run_id] = step
                slots.started(parents, kind, name, head, step)
                parent.steps.append(step)
                parent._taken.append(False)
                continue
            if status is None:  # a stream event written whole
                if root:
                    emits.append(("chunk", data.get("chunk")))
                continue
            if root:
                end = (status, data.get("output"))
            slots.ended(run_id)
            ended = steps.get(run_id)
            if ended is not None:
                ended.status = status
                ended.raw_output = data.get("output")
                ended.error = data.get("error")
                ended.error_type = error_type if isinstance(error_type, str) else None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, CompactError) as exc:
        raise ValueError(f"the journal of run {root_id!r} has a malformed record: {exc}") from None
    if journaled is None:
        raise ValueError(f"the journal of run {root_id!r} does not begin with its start")
    journaled.events = count
    journaled.last_seq = last_seq
    journaled.raw_input = raw_input
    if end is not None:
        journaled.end_status, journaled.end_output = end
    return journaled
