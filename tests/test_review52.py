"""A hostile review of stop 47's changes (SQLite claims in shared transactions, the
HTTP edge writing what orjson refuses, the journal feed's token path, ...): stop 48."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from http import HTTPStatus
from typing import Any, Final

import pytest

from actors.serve._wire import WireJSONResponse, chunk_json, wire_json
from protocol import AssistantMessageChunk
from runtime import Run

from .sse_client import read_sse, serving
from .test_review_journal4 import _Taking

# -- the HTTP edge: an int subclass beside what orjson refuses ---------------------------

STATUS_OUTPUT: Final = {"status": HTTPStatus.OK, "price": Decimal("1.5"), "n": 2**70}
"""A tool's answer: an IntEnum (an HTTP status) beside values orjson refuses."""
BIG: Final = 2**70
"""An int past orjson's 64 bits."""
WRITTEN: Final = {"status": 200, "price": "Decimal('1.5')", "n": 2**70}


def _written_in_child(value: str) -> Any:
    """``wire_json`` of the value the Python expression ``value`` makes (this module's
    names in reach), made in a child process given 60 s: a walk in C that holds the
    GIL, no watchdog in this process could end."""
    code = (
        "import sys\n"
        "from actors.serve._wire import wire_json\n"
        "from tests.test_review52 import STATUS_OUTPUT, Decimal, _Big\n"
        f"sys.stdout.write(wire_json({value}).decode())\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"wire_json({value}) did not return within 60 s")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class _Big(int):
    """An int subclass whose repr raises: written as its digits."""

    def __repr__(self) -> str:
        raise ValueError("no repr")


def test_an_int_subclass_beside_what_orjson_refuses_is_written_at_once() -> None:
    # wire_json walks a value orjson refused; stop 47 tested an int's range with
    # ``value not in range(-2**63, 2**64)``, which for an int subclass (an IntEnum
    # member: HTTPStatus.OK) is no arithmetic test but a walk of the range from -2**63:
    # the serving process's trio thread spun for ever (every stream and request of the
    # server stopped) on a tool's answer {"status": HTTPStatus.OK, "price": Decimal(..)}.
    assert _written_in_child("STATUS_OUTPUT") == WRITTEN
    assert _written_in_child("[_Big(2**70), _Big(-3), _Big(-(2**64)), Decimal(2)]") == [
        2**70,
        -3,
        -(2**64),
        "Decimal('2')",
    ]


class Status(_Taking[Any]):
    """Streams and answers an HTTP status beside a Decimal (orjson refuses it)."""

    name = "status"

    async def perform(self, message: Any, run: Run) -> Any:
        await run.emit(STATUS_OUTPUT)
        return STATUS_OUTPUT


async def _waited_and_streamed(served: Any, performer: str, protocol: str) -> tuple[Any, list[Any]]:
    """``performer`` run by /runs/wait, then by /runs/stream in ``protocol``: the
    first's response and the second's frames read as JSON."""
    body = {"performer": performer, "input": "x", "protocol": protocol}
    waited = await served.client.post("/runs/wait", json=body)
    async with served.client.stream("POST", "/runs/stream", json=body) as response:
        frames = [e.data for e in await read_sse(response)]
    return waited, [json.loads(f) for f in frames if f != "[DONE]"]


@pytest.mark.parametrize("protocol", ["events", "compact", "ag-ui", "ui-message-stream"])
async def test_every_edge_answers_a_tool_s_http_status(
    protocol: str, troupe_watchdog: None
) -> None:
    async with serving({"status": Status()}) as served:
        waited, read = await _waited_and_streamed(served, "status", protocol)
        root = waited.json()["run_id"]
        tree = await served.client.get(f"/viewer/runs/{root}/tree")
        record = await served.client.get(f"/viewer/runs/{root}/record")
    assert waited.status_code == 200 and waited.json()["output"] == WRITTEN
    assert tree.status_code == 200 and record.status_code == 200
    if protocol == "events":
        assert read[-1]["event"] == "on_chain_end" and read[-1]["data"]["output"] == WRITTEN
    if protocol == "ag-ui":
        assert read[-1]["type"] == "RUN_FINISHED" and read[-1]["result"] == WRITTEN


# -- the HTTP edge: a container whose own iteration raises --------------------------------


class _Unlisted(list):  # type: ignore[type-arg]
    """A list whose own ``__iter__`` raises (orjson reads its items without it)."""

    def __iter__(self) -> Any:
        raise ValueError("not listed")


class _Unmapped(dict):  # type: ignore[type-arg]
    """A dict whose own ``items()`` raises."""

    def items(self) -> Any:
        raise ValueError("not mapped")


class _Untupled(tuple):  # type: ignore[type-arg]
    __slots__ = ()

    def __iter__(self) -> Any:
        raise ValueError("not tupled")


class _Unfloated(float):
    """A float subclass whose ``__float__`` raises: json writes its number all the same."""

    def __float__(self) -> float:
        raise ValueError("not floated")


def test_a_container_whose_iteration_raises_is_its_repr_in_place() -> None:
    # wire_json is "never raising", but its walk of a value orjson refused (an int
    # past 64 bits inside) iterated a list, dict or tuple subclass through its own
    # __iter__ / items(): what they raised went out, and the frame with it (the events
    # stream ended in an error for a run that succeeded, /runs/wait answered 500).
    value = {
        "l": _Unlisted([BIG]),
        "d": _Unmapped(a=BIG),
        "t": _Untupled((1,)),
        "f": _Unfloated(0.5),
        "n": BIG,
    }
    assert json.loads(wire_json(value)) == {
        "l": f"[{BIG}]",
        "d": f"{{'a': {BIG}}}",
        "t": "(1,)",
        "f": 0.5,
        "n": BIG,
    }


class Unlisting(_Taking[Any]):
    """Answers a list whose own iteration raises, beside an int past 64 bits."""

    name = "unlisting"

    async def perform(self, message: Any, run: Run) -> Any:
        return {"items": _Unlisted([1, 2]), "n": BIG}


@pytest.mark.parametrize("protocol", ["events", "ag-ui"])
async def test_a_run_answering_an_odd_list_ends_well_on_the_wire(
    protocol: str, troupe_watchdog: None
) -> None:
    answer = {"items": "[1, 2]", "n": BIG}
    async with serving({"unlisting": Unlisting()}) as served:
        waited, read = await _waited_and_streamed(served, "unlisting", protocol)
    assert waited.status_code == 200 and waited.json()["output"] == answer
    if protocol == "events":
        assert read[-1]["event"] == "on_chain_end" and read[-1]["data"]["output"] == answer
    else:
        assert read[-1]["type"] == "RUN_FINISHED" and read[-1]["result"] == answer


# -- SQLite: closed while resumes' claims, writes and reads are on its connections ------

_CLOSED_WHILE_USED: Final = """
import sys, tempfile, threading
from runtime import RunRecord, StoreError
from runtime._sqlite_store import SQLiteStore
from runtime._store import RunEnd, WriteBatch

def run(run_id):
    return RunRecord(run_id=run_id, performer="p", kind="chain", owner="o", created_at=1.0)

for trial in range(int(sys.argv[1])):
    store = SQLiteStore(f"sqlite:///{tempfile.mkdtemp()}/closed.db")
    store.open()
    paused = [f"p{n}" for n in range(48)]
    store.write(WriteBatch(runs=[run(p) for p in paused]))
    store.write(WriteBatch(ends=[RunEnd(p, "paused", 2.0) for p in paused]))
    answers = {}
    go = threading.Event()

    def use(paused_id, n):
        go.wait()
        try:
            if n % 3 == 0:
                answers[n] = store.get_run(paused_id)
            elif n % 3 == 1:
                answers[n] = store.write(WriteBatch(runs=[run(f"w{n}")]))
            else:
                answers[n] = store.mark_resumed(paused_id, run(f"by{n}"))
        except StoreError as exc:
            answers[n] = exc

    workers = [threading.Thread(target=use, args=(p, n)) for n, p in enumerate(paused)]
    for worker in workers:
        worker.start()
    go.set()
    store.close()
    for worker in workers:
        worker.join(30)
    assert not any(w.is_alive() for w in workers) and len(answers) == len(paused)
    # each claim won, or refused as the store closed: none told won and left undone
    store.open()
    for n, p in enumerate(paused):
        if n % 3 == 2 and answers[n] is True:
            assert store.get_run(p).resumed_by == f"by{n}" and store.get_run(f"by{n}")
    store.close()
print("ok")
"""


def test_an_sqlite_store_closed_while_in_use_refuses_what_comes_after() -> None:
    # SQLiteStore.close() closed its connections as other threads' statements ran on
    # them (resumes' claims waiting for the writer, a write, a read): the process died
    # of SIGSEGV in sqlite3. close() now waits for the transaction or read on them.
    # (In a child process: the crash would end this one.)
    done = subprocess.run(
        [sys.executable, "-c", _CLOSED_WHILE_USED, "25"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr[-2000:]


# -- the HTTP edge: a text with a lone surrogate ------------------------------------------


class HalfEmoji(_Taking[Any]):
    """Streams an emoji in two tokens, one half of its surrogate pair each (as a server
    that slices text by UTF-16 code units sends it), and answers a file's name as
    ``os.fsdecode`` makes one of bytes that are not UTF-8."""

    name = "half_emoji"

    async def perform(self, message: Any, run: Run) -> Any:
        await run.emit(AssistantMessageChunk("\ud83d"))
        await run.emit(AssistantMessageChunk("\ude00"))
        return {"files": ["caf\udce9.txt", "b.txt"]}


def test_a_text_with_a_lone_surrogate_is_written_as_json_writes_it() -> None:
    # orjson refuses a lone surrogate; stop 47 wrote such a text as its repr, in its
    # place: the token "\ud83d" reached the client as the text "'\\ud83d'" (quotes and
    # a backslash shown in the chat), a file's name "caf\udce9.txt" as
    # "'caf\\udce9.txt'". json (the journal) writes the \\udXXX escape, which a
    # client's JSON.parse reads back as the same code unit (two halves joined: 😀).
    value = {"files": ["caf\udce9.txt"], "token": "\ud83d", "n": BIG}
    assert json.loads(wire_json(value)) == json.loads(json.dumps(value))
    assert json.loads(chunk_json(AssistantMessageChunk("\ude00")))["content"] == "\ude00"
    # the app's JSON responses (/runs/wait, a thread's history, the viewer's runs) too:
    # starlette's made text no UTF-8 holds of it, a 500
    assert json.loads(bytes(WireJSONResponse({"said": "\ud83d"}).body)) == {"said": "\ud83d"}


async def test_a_token_of_half_an_emoji_streams_as_its_text(troupe_watchdog: None) -> None:
    async with serving({"half_emoji": HalfEmoji()}) as served:
        waited, read = await _waited_and_streamed(served, "half_emoji", "events")
    assert waited.json()["output"] == {"files": ["caf\udce9.txt", "b.txt"]}
    said = [r["data"]["chunk"]["content"] for r in read if r["event"] == "on_chain_stream"]
    assert "".join(said) == "\ud83d\ude00"
    assert read[-1]["data"]["output"] == {"files": ["caf\udce9.txt", "b.txt"]}
