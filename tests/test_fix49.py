"""Four known problems (stop 46): a message holding content that changes in place, an
enum's dict keys and values against the journal, the test server that outlived its
helper, and the viewer's tree under load."""

from __future__ import annotations

import enum
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import pytest

from actors import tool
from actors.cli._workers import START_TIMEOUT
from protocol import (
    AssistantMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
    ToolRequest,
    UserMessage,
    converter,
    matches_known,
    same_json,
    to_json,
    unstructure_any,
)
from protocol._fast import maker
from runtime import (
    Performer,
    ReplayDivergenceError,
    Resume,
    Run,
    RunPaused,
    interrupt,
    open_runtime,
)

from . import ports
from .ports import ROOT, free_port
from .test_review_journal4 import _Taking
from .test_serve_workers import TROUPE

# 1. A message's text fields hold text --------------------------------------------------

TEXT_FIELDS = [
    (SystemMessage, "content", {}),
    (UserMessage, "content", {}),
    (AssistantMessage, "content", {}),
    (ToolMessage, "content", {"tool_call_id": "c1", "name": "look"}),
    (ToolMessage, "tool_call_id", {"content": "seen", "name": "look"}),
    (ToolMessage, "name", {"content": "seen", "tool_call_id": "c1"}),
    (AssistantMessage, "id", {}),
    (AssistantMessage, "finish_reason", {}),
    (AssistantMessage, "model_name", {}),
]


@pytest.mark.parametrize(
    ("cls", "name", "others"), TEXT_FIELDS, ids=[f"{c.__name__}.{n}" for c, n, _ in TEXT_FIELDS]
)
@pytest.mark.parametrize(
    "given",
    [[{"type": "text", "text": "hi"}], ({"type": "text", "text": "hi"},), {"text": "hi"}, 5],
    ids=["list", "tuple", "dict", "int"],
)
def test_a_message_refuses_a_text_field_that_is_not_text(
    cls: Any, name: str, others: dict[str, Any], given: Any
) -> None:
    """A message's identity vouches for its JSON (the journal writes it once and links
    to it after): one made with content parts (OpenAI's and LangChain's multimodal
    list, which Troupe's text-only messages do not take) kept the list, and a part
    added after it was journaled read back without it (the review's finding). Made,
    rebuilt by ``attrs.evolve`` or through its plain function alike, it is refused,
    naming the field."""
    refused = rf"^{cls.__name__}\.{name} must be a str, got {type(given).__name__}"
    for make in (cls, maker(cls)):
        with pytest.raises(TypeError, match=refused):
            make(**others, **{name: given})
    made = cls(**others, **{name: "fine"})
    with pytest.raises(TypeError, match=refused):
        attrs.evolve(made, **{name: given})


def test_the_refusal_of_content_parts_says_what_to_do() -> None:
    with pytest.raises(TypeError, match=r"got list \(messages are text: join its text parts\)"):
        UserMessage([{"type": "text", "text": "hi"}])


def test_a_messages_text_may_be_a_str_subclass_or_none_where_its_type_says() -> None:
    """A ``str`` subclass (an enum's member) is text, kept as it is, and written as
    its text; the optional fields take ``None``; a subclass of a message converts as
    the message does (attrs' own ``__init__``)."""

    class Mood(enum.StrEnum):
        CALM = "calm"

    message = UserMessage(Mood.CALM)
    assert message.content is Mood.CALM
    assert json.loads(to_json(message))["content"] == "calm"
    assert AssistantMessage("x", id=None, finish_reason=None, model_name=None).id is None

    class Mine(UserMessage):
        __slots__ = ()

    assert Mine("hi").content == "hi"
    with pytest.raises(TypeError, match=r"UserMessage\.content must be a str"):
        Mine(["hi"])


class PartsSayer(_Taking[str]):
    """Says a message made with content parts, adds a part, says it again."""

    name = "parts"

    async def perform(self, message: Any, run: Run) -> str:
        parts = [{"type": "text", "text": "hi"}]
        said = UserMessage(parts)
        await run.emit([said])
        parts.append({"type": "text", "text": " there"})
        await run.emit([said])
        return "said"


async def test_a_run_making_a_message_of_content_parts_ends_with_the_error(url: str) -> None:
    """The run that makes such a message ends with an error naming the field, and its
    journal reads back as it streamed (before: it streamed the message twice, the
    second time with the part added, and its journal read back the first part alone,
    both times, as the list's repr)."""
    async with open_runtime(store=url) as rt:
        streamed = []
        async with rt.astream_events(PartsSayer(), "go", run_id="parts") as stream:
            with pytest.raises(TypeError, match=r"UserMessage\.content must be a str, got list"):
                async for event in stream:
                    streamed.append(json.loads(to_json(event)))  # noqa: PERF401  # (until it raises)
        assert [e["event"] for e in streamed] == ["on_chain_start", "on_chain_error"]
        async with rt.join("parts") as joined:
            assert [json.loads(to_json(event)) async for event in joined] == streamed
        record = await rt.get_run("parts")
    assert record.status == "error"
    assert "UserMessage.content must be a str, got list" in (record.error or "")


# 2. Enums and other subclasses of JSON's types against the journal ----------------------


class Key(enum.StrEnum):
    X = "x"


class OldKey(str, enum.Enum):  # noqa: UP042  # (older code's: str() "OldKey.X", JSON "x")
    X = "x"


class Text(str):
    pass


class Number(enum.IntEnum):
    ONE = 1


class Real(float):
    pass


@pytest.mark.parametrize(
    "live",
    [
        {Key.X: 1},
        {OldKey.X: 1},
        {Text("x"): 1},
        {"x": {Key.X: [Key.X, Number.ONE]}},
        ToolCall("c", "look", {Key.X: 1}),
        ToolRequest(ToolCall("c", "look", {"deep": {OldKey.X: Real(1.5)}})),
    ],
    ids=["StrEnum key", "str Enum key", "str subclass key", "nested", "tool call", "request"],
)
def test_a_value_matches_its_json_read_back_with_enum_and_str_subclass_keys(live: Any) -> None:
    """What a replay compares with its journal is walked with the journal's JSON
    (``matches_known``): a dict key that is a ``str`` but not exactly one (an
    ``enum.StrEnum`` member; ``json.dumps`` writes its text) was never found in the
    JSON read back, and the walk said "differ". The replay then made the JSON of the
    whole request to compare it, and a protocol object holding such a key was never
    known by the journal's JSON (its every later turn made again)."""
    read_back = json.loads(json.dumps(unstructure_any(live)))
    known: dict[int, tuple[Any, Any]] = {}
    assert same_json(unstructure_any(live), read_back)
    assert matches_known(live, read_back, known)
    if attrs.has(type(live)):
        assert known[id(live)] == (live, read_back)


@pytest.mark.parametrize(
    ("live", "journaled"),
    [
        ({"x": Number.ONE}, {"x": True}),
        ({"x": Number.ONE}, {"x": 1.0}),
        ({"x": Real(1.0)}, {"x": 1}),
        ({Key.X: Number.ONE}, {"x": True}),
        (ToolCall("c", "look", {"x": Number.ONE}), None),
    ],
    ids=["IntEnum and true", "IntEnum and 1.0", "float subclass and 1", "both", "in a call"],
)
def test_an_int_or_float_subclass_matches_only_json_of_its_type(live: Any, journaled: Any) -> None:
    """An ``int`` subclass (an ``enum.IntEnum`` member) is written as a JSON integer,
    a ``float`` subclass (numpy's ``float64``) as a real: the walk compared them with
    ``==`` (``1 == True == 1.0``), where a replay compares JSON types (stop 45)."""
    if journaled is None:  # the call's JSON with its argument written as true
        journaled = json.loads(json.dumps(converter.unstructure(live, ToolCall)))
        journaled["args"]["x"] = True
    known: dict[int, tuple[Any, Any]] = {}
    assert not same_json(unstructure_any(live), journaled)
    assert not matches_known(live, journaled, known)
    assert not known


def _pausing(asks: list[Any]) -> tuple[Performer[Any, Any], list[Any]]:
    """A performer that calls ``look`` with the arguments ``asks`` gives in turn (the
    last again), then asks a person; and the arguments ``look`` ran with."""
    ran: list[Any] = []

    @tool
    async def look(x: Any) -> str:  # (Any: the arguments it is given are its own)
        """Look something up."""
        ran.append(x)
        return "seen"

    @tool
    async def ask(question: str) -> str:
        """Ask."""
        return str(await interrupt(question))

    looking: Any = look  # (mypy takes a tool, as the tests' own, for no Bindable)
    asking: Any = ask

    class Pausing(_Taking[str]):
        name = "pausing"
        rounds = 0

        async def perform(self, message: Any, run: Run) -> str:
            args = asks[min(self.rounds, len(asks) - 1)]
            self.rounds += 1
            await run.request(looking, ToolRequest(ToolCall("c1", "look", args)))
            question = ToolRequest(ToolCall(id="q", name="ask", args={"question": "?"}))
            return str(await run.request(asking, question))

    return Pausing(), ran


@pytest.mark.parametrize("reopened", [False, True], ids=["same runtime", "reopened"])
@pytest.mark.parametrize(
    "args",
    [{Key.X: 1}, {OldKey.X: Number.ONE}, {Text("x"): Real(2.5)}],
    ids=["StrEnum key", "enum key and IntEnum value", "str and float subclasses"],
)
async def test_a_resume_answers_a_call_with_enum_arguments_from_the_journal(
    url: str, args: dict[Any, Any], reopened: bool
) -> None:
    """A replay asks again with the same arguments (the journal holds their JSON, its
    keys plain strings): the call is answered from the journal and the tool runs once,
    in the process that ran it or another that reads the store."""
    performer, ran = _pausing([args])
    async with open_runtime(store=url) as rt:
        with pytest.raises(RunPaused) as paused:
            await rt.ainvoke(performer, "go", run_id="first")
        if not reopened:
            resume = Resume("first", {paused.value.pending[0].id: "yes"})
            assert await rt.ainvoke(performer, None, resume=resume) == "yes"
    if reopened:
        async with open_runtime(store=url) as rt:
            resume = Resume("first", {paused.value.pending[0].id: "yes"})
            assert await rt.ainvoke(performer, None, resume=resume) == "yes"
    assert ran == [next(iter(args.values()))]


async def test_a_replay_asking_an_intenum_where_the_journal_has_true_diverges(url: str) -> None:
    """Asked with ``{"x": true}`` before and ``{"x": Number.ONE}`` (JSON ``1``) on
    replay: a different request, as ``1`` and ``true`` are (stop 45), where the walk
    found them equal and answered it from the journal."""
    performer, ran = _pausing([{"x": True}, {"x": Number.ONE}])
    async with open_runtime(store=url) as rt:
        with pytest.raises(RunPaused) as paused:
            await rt.ainvoke(performer, "go", run_id="first")
        resume = Resume("first", {paused.value.pending[0].id: "yes"})
        with pytest.raises(ReplayDivergenceError, match=r"tool 'look'"):
            await rt.ainvoke(performer, None, resume=resume)
    assert ran == [True]


# 3. A server stops promptly on SIGTERM, and the tests' helper reaps it ----------------


def test_a_supervisor_signalled_while_its_workers_start_stops_them_at_once(
    tmp_path: Path,
) -> None:
    """``troupe serve --workers N`` read SIGTERM (and SIGINT) only once every worker
    served: a signal that came while one was starting (up to a minute each,
    ``START_TIMEOUT``) waited for it, then the server said it served, and only then
    stopped. Now it stops the workers it started (the slow one mid-import) and exits
    cleanly, never saying it serves. (Before: after START_TIMEOUT, "did not start".)"""
    marker = tmp_path / "starting"
    env = {**os.environ, "SLOW_START_MARKER": str(marker), "SLOW_START": "600"}
    command = [*TROUPE, "serve", "tests.slow_start:performers", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--store", f"sqlite:///{tmp_path}/runs.db", "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():  # a worker is importing its target, slowly
            assert process.poll() is None and time.monotonic() < deadline, process.poll()
            time.sleep(0.05)
        worker = int(marker.read_text())
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=START_TIMEOUT - 10)  # (a bound, not a time)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err.decode()
    assert b"serving on" not in out and not err, (out, err)
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)  # (reaped by the supervisor: not even a zombie)


def _stubborn(seconds: float) -> list[str]:
    """A server of the tests' helper that listens and ignores SIGTERM for ``seconds``."""
    source = (
        "import signal, socket, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
        f"time.sleep({seconds})\n"
    )
    return [sys.executable, "-c", source]


def test_the_tests_helper_reaps_a_server_that_ignores_sigterm() -> None:
    """``tests.ports.serving`` sent SIGTERM and waited 20 s for the server's end: one
    that did not end in time raised ``TimeoutExpired`` and was left running (and its
    port taken). It is killed and reaped, and the block fails saying so."""
    port = free_port()
    stubborn = ports.serving([*_stubborn(600), str(port)], port, stop_timeout=0.5)
    refused = r"did not stop within 0\.5 s of SIGTERM: killed"
    with pytest.raises(RuntimeError, match=refused), stubborn as up:
        pass
    assert up.process.returncode == -signal.SIGKILL


def test_the_tests_helper_keeps_the_blocks_own_error() -> None:
    """A block that failed keeps its own error; the server is reaped all the same."""
    port = free_port()
    stubborn = ports.serving([*_stubborn(600), str(port)], port, stop_timeout=0.5)
    with pytest.raises(KeyError, match="the block's"), stubborn as up:
        raise KeyError("the block's")
    assert up.process.returncode == -signal.SIGKILL
