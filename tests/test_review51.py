"""A hostile review of stop 46's changes (generated replay walks, text-only messages,
StrEnum keys on the wire, a join waiting for a run's first write, the journal failing
a run alone): stop 47."""

from __future__ import annotations

import json
import re
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Final, NamedTuple

import attrs
import pytest
import trio
from cattrs.errors import ClassValidationError

import runtime._journal
from actors.serve._wire import wire_json
from protocol import (
    VOUCHING_CLASSES,
    AgentAction,
    AgentStep,
    AssistantMessage,
    CompactDecoder,
    FrozenDict,
    InvalidToolCall,
    ToolCall,
    ToolSpec,
    identity_vouches,
    matches_known,
    structure_any,
    to_json,
)
from runtime import JournalError, Run, UnknownRunError, open_runtime
from runtime._replay import read_journal

from .sleeper_worker import Sleeper
from .sse_client import read_sse, serving
from .test_fix50 import Colour
from .test_recovery import journal, killed_when
from .test_review48 import _root_records
from .test_review_journal4 import _Taking

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
        async with AsyncExitStack() as stack:
            with trio.fail_after(5):  # (entering the join waited, before)
                events = await stack.enter_async_context(rt.join("r1"))
                async for event in events:
                    seen.append(event.event)
                    if event.event == "on_chain_stream":
                        break
            assert seen == ["on_chain_start", "on_chain_stream"]
            sleeper.woken.set()  # then followed to its end, as it is written
            with trio.fail_after(20):
                seen += [event.event async for event in events]
    assert seen == ["on_chain_start", "on_chain_stream", "on_chain_end"]


# -- what orjson refuses and json writes, on the wire ----------------------------------


class Score(float):
    """A float subclass (as numpy.float64 is): json writes it as its number."""


class Point(NamedTuple):
    x: int
    y: int


class Opaque:
    """No JSON form: written as its repr."""

    def __repr__(self) -> str:
        return "Opaque()"


class Unshown:
    """No JSON form, and a repr that raises."""

    def __repr__(self) -> str:
        raise ValueError("no repr")


BIG: Final = 2**70
"""An int past orjson's 64 bits (a factorial, a 128-bit id), which json writes."""


class Odd(_Taking[Any]):
    """Streams and ends with values orjson refuses (its metadata holds one too)."""

    name = "odd"
    metadata: dict[str, Any] = {"big": BIG}  # noqa: RUF012

    async def perform(self, message: Any, run: Run) -> Any:
        await run.emit({"n": BIG})
        return {"n": BIG, "score": Score(0.5), "at": Point(1, 2), "what": Opaque()}


ODD_OUTPUT: Final = {"n": BIG, "score": 0.5, "at": [1, 2], "what": "Opaque()"}


def test_what_json_writes_is_written_so_and_the_rest_as_its_repr_in_place() -> None:
    # orjson refuses an int past 64 bits, a subclass of float (numpy.float64, a tool's
    # score) and of tuple (a named tuple), all of which json (the journal's) writes as
    # a number and a list, and stop 46 walked the value again only for StrEnum keys:
    # the whole value became its repr, an event's envelope and all. Now each is
    # written as json writes it, and only what has no JSON form becomes its repr, in
    # its place (a repr that raises too: it was let out).
    value = {"n": BIG, "s": Score(-0.0), "at": Point(1, 2), Colour.RED: [Score(1.5)]}
    assert json.loads(wire_json(value)) == json.loads(json.dumps(value))
    assert json.loads(wire_json(Point(3, 4))) == [3, 4]
    envelope = {"event": "on_chain_end", "data": {"output": [Opaque(), {1: "one"}, BIG]}}
    assert json.loads(wire_json(envelope)) == {
        "event": "on_chain_end",
        "data": {"output": ["Opaque()", "{1: 'one'}", BIG]},
    }
    assert json.loads(wire_json({"x": Unshown()})) == {
        "x": "<tests.test_review51.Unshown whose repr failed>"
    }
    assert json.loads(wire_json(10**5_000)) == "<builtins.int whose repr failed>"


@pytest.mark.parametrize("protocol", ["events", "compact", "ag-ui", "ui-message-stream"])
async def test_every_frame_stays_json_with_what_orjson_refuses(protocol: str) -> None:
    # The events protocol's end frame was the repr of the whole event (a JSON string,
    # no "event" in it), its chunks' the repr of the chunk, and the compact protocol's
    # records a string its decoder cannot read: a run that answered an int past 64
    # bits lost its end for the client.
    async with serving({"odd": Odd()}) as served:
        body = {"performer": "odd", "input": "x", "protocol": protocol}
        waited = await served.client.post("/runs/wait", json=body)
        async with served.client.stream("POST", "/runs/stream", json=body) as response:
            frames = [e.data for e in await read_sse(response)]
    assert waited.status_code == 200 and waited.json()["output"] == ODD_OUTPUT
    read = [json.loads(f) for f in frames if f != "[DONE]"]
    assert all(isinstance(r, dict | list) for r in read), read
    if protocol == "events":
        assert read[-1]["event"] == "on_chain_end"
        assert read[-1]["data"]["output"] == ODD_OUTPUT
        assert read[-2]["data"]["chunk"] == {"n": BIG} and read[-2]["metadata"]["big"] == BIG
    if protocol == "compact":
        decoder = CompactDecoder()
        events = [e for records in read for e in map(decoder.decode, records) if e]
        # (a payload with no JSON form is the codec's repr of it whole, as journaled)
        assert [e.event for e in events][-2:] == ["on_chain_stream", "on_chain_end"]
        assert events[-2].chunk == {"n": BIG}
    if protocol == "ag-ui":
        assert read[-1]["type"] == "RUN_FINISHED" and read[-1]["result"] == ODD_OUTPUT


# -- the text fields of a message's tool calls --------------------------------------------

CALL_TEXT_FIELDS: Final = [
    (ToolCall, "id", {"name": "look", "args": {}}),
    (ToolCall, "name", {"id": "c1", "args": {}}),
    (InvalidToolCall, "id", {"name": "look", "args": "{", "error": "bad"}),
    (InvalidToolCall, "name", {"id": "c1", "args": "{", "error": "bad"}),
    (InvalidToolCall, "args", {"id": "c1", "name": "look", "error": "bad"}),
    (InvalidToolCall, "error", {"id": "c1", "name": "look", "args": "{"}),
]


@pytest.mark.parametrize(
    ("cls", "name", "others"),
    CALL_TEXT_FIELDS,
    ids=[f"{c.__name__}.{n}" for c, n, _ in CALL_TEXT_FIELDS],
)
@pytest.mark.parametrize("given", [["a"], {"text": "hi"}, 5, None], ids=repr)
def test_a_tool_calls_text_is_text_made_or_structured(
    cls: Any, name: str, others: dict[str, Any], given: Any
) -> None:
    # Stop 46 made a message's own text fields text alone (made, evolved and structured),
    # not those of the tool calls an AssistantMessage holds, whose identity vouches for
    # them as well: ToolCall(id=["a"]) was kept, and structured from JSON cattrs' hook
    # for str made ["x"] the name "['x']", 7 the id "7" and null the error "None".
    refused = f"{cls.__name__}.{name} must be a str, got {type(given).__name__}"
    with pytest.raises(TypeError, match=re.escape(refused)):
        cls(**others, **{name: given})
    with pytest.raises(TypeError, match=re.escape(refused)):
        attrs.evolve(cls(**others, **{name: "fine"}), **{name: given})
    call = {"$type": cls.__name__, **others, name: given}
    message: dict[str, Any] = {"$type": "AssistantMessage", "content": ""}
    message["invalid_tool_calls" if cls is InvalidToolCall else "tool_calls"] = [call]
    for json_value in (call, message):
        with pytest.raises(ClassValidationError) as info:
            structure_any(json_value)
        assert refused in str(_leaves(info.value))


def _leaves(error: BaseException) -> list[str]:
    """The messages of the errors a cattrs validation error groups, at any depth."""
    if isinstance(error, BaseExceptionGroup):
        return [m for inner in error.exceptions for m in _leaves(inner)]
    return [str(error)]


def test_a_tool_calls_text_may_be_a_str_subclass() -> None:
    call = ToolCall(Colour.RED, Colour.RED, {})
    assert call.name is Colour.RED
    assert structure_any(json.loads(to_json(AssistantMessage(tool_calls=[call])))).tool_calls == (
        ToolCall("red", "red", {}),
    )


# -- a join of a run whose journal failed --------------------------------------------------


class _Huge(_Taking[str]):
    """Streams a chunk, then an int of more digits than Python writes (its journal
    cannot encode it)."""

    name = "huge"

    async def perform(self, message: Any, run: Run) -> str:
        await run.emit("first")
        await trio.sleep(0.2)  # (the run's record and first chunk written)
        await run.emit({"n": 10**5_000})
        return "done"


class _Fine(_Taking[str]):
    """Streams a chunk and answers."""

    name = "fine"

    async def perform(self, message: Any, run: Run) -> str:
        await run.emit("first")
        return "done"


async def test_a_join_of_a_run_whose_journal_failed_says_why(
    tmp_path: Path, troupe_watchdog: None
) -> None:
    # A join of a run whose journal failed said "the journal of run ... ends before the
    # run did (it is error)", where the run's record holds the cause.
    async with open_runtime(store=f"sqlite:///{tmp_path}/runs.db") as rt:
        with pytest.raises(JournalError, match="cannot encode"):
            await rt.ainvoke(_Huge(), "go", run_id="h")
        with pytest.raises(JournalError) as info:
            async with rt.join("h") as events:
                async for _ in events:
                    pass
    said = str(info.value)
    assert said.startswith("the journal of run 'h' ends before the run did (it is error): ")
    assert "cannot encode on_chain_stream: ValueError: Exceeds the limit" in said


async def test_a_join_of_a_run_never_written_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, troupe_watchdog: None
) -> None:
    # A run whose journal failed before its first write (its input has no JSON form
    # the journal can write) is not in the store: a join said only "no run 'h' in the
    # store", as for an id never used, though this runtime ran it and knew why.
    async with open_runtime(store=f"sqlite:///{tmp_path}/runs.db") as rt:
        with pytest.raises(JournalError, match="cannot encode") as failed:
            await rt.ainvoke(_Huge(), {"n": 10**5_000}, run_id="h")
        with pytest.raises(UnknownRunError) as info:
            async with rt.join("h"):
                pass
        said = str(info.value)
        assert said.startswith("no run 'h' in the store (it ran here, and the run journal failed")
        assert str(failed.value) in said
        with pytest.raises(UnknownRunError) as other:
            async with rt.join("never"):
                pass
        assert str(other.value) == "no run 'never' in the store"
        # Remembered for the last runs alone (UNWRITTEN_KEPT), not for the process's life.
        monkeypatch.setattr(runtime._journal, "UNWRITTEN_KEPT", 1)
        with pytest.raises(JournalError):
            await rt.ainvoke(_Huge(), {"n": 10**5_000}, run_id="h2")
        for run_id, why in (("h", False), ("h2", True)):
            with pytest.raises(UnknownRunError) as info:
                async with rt.join(run_id):
                    pass
            assert ("it ran here" in str(info.value)) is why
        # A run of the id again, which is written, is joined as any other.
        assert await rt.ainvoke(_Fine(), "go", run_id="h2") == "done"
        async with rt.join("h2") as events:
            assert [e async for e in events][-1].event == "on_chain_end"


# -- a replay's memo of what a protocol object's JSON is ---------------------------------


def _action() -> AgentAction:
    return AgentAction("look", {"x": 1}, "c1", "")


def _schema() -> ToolSpec:
    return ToolSpec("look", "looks", {"type": "object"})


@pytest.mark.parametrize(
    ("make", "change"),
    [
        (_action, lambda action: action.tool_input.update(x=2)),
        (lambda: [_action()], lambda actions: actions[0].tool_input.update(x=2)),
        (lambda: AgentStep(_action(), "seen"), lambda step: step.action.tool_input.update(x=2)),
        (_schema, lambda spec: spec.parameters.update(type="array")),
    ],
    ids=["action", "list of actions", "step", "tool spec"],
)
def test_a_replay_sees_a_protocol_object_changed_in_place(make: Any, change: Any) -> None:
    # A replay keeps the JSON of each protocol object it found equal to the journal's
    # (by identity), and a request's lists of protocol objects (to compare the next
    # request by reference): an object that holds a plain dict (an agent's action made
    # with one, a tool's schema) changed in place was taken for what it was, and a
    # request that differs from the journal's was answered from it (a payment of
    # another amount, not made). Messages, and actions whose input is read-only (as
    # an agent makes them), are still known by identity.
    journaled = read_journal("root", _root_records({"a": make()}, {"a": make()})).replay
    asked = make()
    assert journaled.take("tool", "look", {"a": asked}) is not None
    change(asked)
    assert journaled.take("tool", "look", {"a": asked}) is None
    known: dict[int, tuple[Any, Any]] = {}
    asked = make()
    shown = json.loads(to_json(asked))
    assert matches_known(asked, shown, known)
    change(asked)
    assert not matches_known(asked, shown, known)


def test_what_vouches_by_its_identity() -> None:
    frozen = AgentAction("look", FrozenDict(x=1), "c1", "")
    assert identity_vouches(frozen) and identity_vouches(AgentStep(frozen, "seen"))
    assert not identity_vouches(_action()) and not identity_vouches(_schema())
    message = AssistantMessage("hi", tool_calls=[ToolCall("c1", "look", {"x": [1]})])
    assert identity_vouches(message) and AssistantMessage in VOUCHING_CLASSES
    known: dict[int, tuple[Any, Any]] = {}
    assert matches_known(message, json.loads(to_json(message)), known)
    assert known[id(message)][0] is message


@pytest.mark.parametrize(
    ("field", "given", "said"),
    [
        ("tool_calls", [{"name": "look", "args": {}, "id": "c1"}], "holds a dict, not a ToolCall"),
        ("tool_calls", ["look"], "holds a str, not a ToolCall"),
        ("tool_calls", "look", "holds a str, not a ToolCall"),
        ("invalid_tool_calls", [{"name": "look"}], "holds a dict, not an InvalidToolCall"),
    ],
)
def test_a_messages_tool_calls_are_tool_calls(field: str, given: Any, said: str) -> None:
    # AssistantMessage(tool_calls=[{...}]) (LangChain's dict, as its AIMessage takes
    # it) kept the dict, in a message whose identity vouches for its JSON: the message
    # could not be written, "'dict' object has no attribute 'id'" where it was
    # journaled (its run's journal failed) or sent.
    with pytest.raises(TypeError, match=f"^AssistantMessage.{field} {said}"):
        AssistantMessage(**{field: given})
    with pytest.raises(TypeError, match=f"^AssistantMessage.{field} {said}"):
        attrs.evolve(AssistantMessage("hi"), **{field: given})
    call = ToolCall("c1", "look", {})
    assert AssistantMessage(tool_calls=[call]).tool_calls == (call,)
