"""A server left running: ``troupe serve --store ... --retention ...`` soaked over HTTP.

``benchmarks/_soak.py`` soaks one runtime in process, without a store. This one starts
``troupe serve`` as a team leaves it running (a subprocess on 127.0.0.1, its store on
SQLite or on a throwaway PostgreSQL cluster, a retention shorter than the soak) and
drives it over real HTTP, for a given time, with users doing what users do:

- threads made, run on (streamed and waited for), read (the thread, its history, the
  list) and deleted, or left for retention to delete;
- runs streamed to the end, left mid-stream (the client disconnects, which cancels
  them), started detached and joined, left, and joined again with ``Last-Event-ID``,
  cancelled; finished runs joined from the store;
- runs that pause for a person's approval, resumed approved or denied (streamed or
  waited for), and some never resumed;
- AG-UI's and the AI SDK's endpoints (their threads too; resumable chats left,
  rejoined and stopped); a run interrupted or enqueued on a busy thread;
- the run viewer watched, then closed;
- bad requests: 400s, 404s, 409s and 422s.

The server process is sampled from outside along the way: resident memory, open file
descriptors (``/proc/PID/fd``), threads, the store's size (SQLite: the database file,
its WAL and its rows per table; PostgreSQL: rows and bytes per table, the server's
connections), and, asked of the server itself through a performer it serves
(``probe``), its trio task count, the objects its collector tracks, Python's memory
blocks, the C heap (in use, and held free by malloc), the runtime's actors and open
runs, and the size of every table its long-lived objects keep. Every answer is
checked (each request's expected status, each stream's last frame); what was not
expected is counted and kept. After the users stop, a last sample is taken once a
retention has gone by: the store then holds only the samples' own runs. The report
is the curve and each figure's growth over the second half (the median of the second
half of the samples against the first's, the warm-up left out:
:func:`benchmarks._soak.growth`). With a retention shorter than the
soak, the store must plateau too.

``python -m benchmarks._serve_soak [--seconds S] [--store sqlite|postgres|both]
[--retention SECONDS] [--users N] [--samples N] [--workers N] [--quick]`` prints one
JSON object (``--quick``: a few seconds of each, a smoke). With ``--workers N`` the
server is ``troupe serve --workers N`` (a supervisor and N worker processes sharing the
store): a run started through one worker is joined and cancelled through another (the
store's joins, its cancel requests, PostgreSQL's ``NOTIFY``), and each figure is the
workers' added up.

To find what grows, ask the probe (``POST /runs/wait`` with ``{"performer": "probe",
"input": ...}``): ``{"held": "TypeName"}`` says what holds that type's objects, and
``{"traced": "start"}`` then ``{"traced": "grown"}`` where Python's allocations grew in
between (``tracemalloc``, started on demand).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import functools
import gc
import itertools
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final

import trio
from attrs import field, frozen

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from protocol import ChatMessage, ToolMessage
from runtime import Performer, Run, current_runtime

from ._soak import growth
from ._workload import QUESTION, cat_agent

# What the soaked server serves (``troupe serve benchmarks._serve_soak:PERFORMERS``).


@tool(needs_approval=True)
async def pay(amount: int) -> str:
    """Pay an amount (a person approves each payment first)."""
    return f"paid {amount}"


def _payer_script(messages: Sequence[ChatMessage]) -> ScriptedTurn:
    if any(isinstance(m, ToolMessage) for m in messages[-1:]):
        return ScriptedTurn("done, as you decided")
    return ScriptedTurn(tool_calls=[ScriptedCall("pay", {"amount": 5})])


@frozen(eq=False)
class Probe(Performer[Any, dict[str, Any]]):
    """What the server's process holds, asked of it from inside: its trio tasks, the
    objects its collector tracks (after a collection), the runtime's actors and open
    runs, and the most numerous types."""

    name: str = "probe"
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(factory=dict)
    max_concurrency: int | None = None

    def coerce_input(self, value: Any) -> Any:
        return value

    async def perform(self, message: Any, run: Run) -> dict[str, Any]:
        gc.collect()
        objects = gc.get_objects()
        if isinstance(message, dict) and isinstance(message.get("held"), str):
            return {"held_by": held_by(objects, message["held"])}
        if isinstance(message, dict) and message.get("traced") in ("start", "grown"):
            return {"pid": os.getpid(), "traced": traced(message["traced"])}
        kinds = collections.Counter(type(o).__qualname__ for o in objects)
        runtime = current_runtime()
        return {
            "pid": os.getpid(),
            "tasks": _tasks(trio.lowlevel.current_root_task()),
            "objects": len(objects),
            "python_blocks": sys.getallocatedblocks(),
            **_heap(),
            "actors": runtime.actors if runtime is not None else None,
            "open_runs": runtime.open_runs if runtime is not None else None,
            "types": dict(kinds.most_common(40)),
            "tables": tables(_holders(trio.lowlevel.current_root_task())),
        }


HOLDERS: Final = frozenset(
    {"Runtime", "Journal", "Tracer", "Server", "LiveRuns", "RunBoard", "ThreadLocks"}
)
"""The long-lived objects of a server (the runtime, its journal and tracer, the app's
server, its live runs, the viewer's board, the threads' locks) whose tables
:func:`tables` measures."""


def _attributes(one: object) -> dict[str, Any]:
    names = list(getattr(one, "__dict__", ()))
    kind = type(one)
    names += [n for k in kind.__mro__ for n in getattr(k, "__slots__", ()) if n != "__dict__"]
    return {name: getattr(one, name, None) for name in names}


def _holders(root: trio.lowlevel.Task | None) -> list[Any]:
    """The :data:`HOLDERS` of this process: found in the locals of its trio tasks'
    coroutines (``troupe serve`` freezes what exists when it starts out of the
    collector's sight, so ``gc`` does not list them), and in their attributes."""
    found: dict[int, Any] = {}
    waiting: list[Any] = []
    tasks = [root] if root is not None else []
    while tasks:
        task = tasks.pop()
        tasks += [child for nursery in task.child_nurseries for child in nursery.child_tasks]
        coroutine: Any = task.coro
        while coroutine is not None and getattr(coroutine, "cr_frame", None) is not None:
            waiting += coroutine.cr_frame.f_locals.values()
            coroutine = coroutine.cr_await
    while waiting:
        one = waiting.pop()
        kind = type(one)
        if id(one) in found or kind.__qualname__ not in HOLDERS:
            continue
        if not kind.__module__.startswith(("runtime.", "actors.serve.")):
            continue
        found[id(one)] = one
        waiting += _attributes(one).values()
    return list(found.values())


def tables(holders: list[Any]) -> dict[str, int]:
    """The size of every table (anything with a length but strings) that the long-lived
    objects of the server (:data:`HOLDERS`) keep as attributes, by ``Class.attribute``,
    and the bytes they count (``*_size``, ``*_bytes``): a table that grows along a soak
    is a leak, however few objects each entry is, unless it is bounded."""
    found: dict[str, int] = {}
    for one in holders:
        for name, value in _attributes(one).items():
            key = f"{type(one).__qualname__}.{name}"
            if isinstance(value, int) and name.endswith(("_size", "_bytes")):
                found[key] = found.get(key, 0) + value  # (what a table's entries weigh)
            elif hasattr(value, "__len__") and not isinstance(value, str | bytes):
                found[key] = found.get(key, 0) + len(value)
    return found


_TRACED: list[Any] = []


def traced(what: str) -> list[str]:
    """``start``: trace Python's allocations from now on (``tracemalloc``, 8 frames)
    and keep a snapshot; ``grown``: where what is allocated grew most since, by
    traceback (a diagnosis of memory that no collector tracks, such as strings)."""
    import tracemalloc

    if not tracemalloc.is_tracing():
        tracemalloc.start(8)
    snapshot = tracemalloc.take_snapshot()
    if what == "start" or not _TRACED:
        _TRACED[:] = [snapshot]
        return []
    grown = snapshot.compare_to(_TRACED[0], "traceback")[:8]
    return [f"{g.size_diff} B {g.count_diff:+} " + " < ".join(g.traceback.format()) for g in grown]


def held_by(objects: list[Any], kind: str, most: int = 300) -> dict[str, int]:
    """What holds the objects of type ``kind`` (the first ``most``): the types of
    their referrers and of the referrers' referrers, counted by path (a diagnosis of
    what grows)."""
    paths: collections.Counter[str] = collections.Counter()
    ignored = {id(objects)}
    found = [o for o in objects if type(o).__qualname__ == kind][:most]
    ignored.add(id(found))
    for one in found:
        for holder in gc.get_referrers(one):
            if id(holder) in ignored or isinstance(holder, types.FrameType):
                continue
            above = [
                type(h).__qualname__
                for h in gc.get_referrers(holder)
                if id(h) not in ignored and not isinstance(h, types.FrameType)
            ]
            paths[f"{type(holder).__qualname__} <- {sorted(set(above))[:4]}"] += 1
    return dict(paths.most_common(15))


class _MallInfo2(ctypes.Structure):
    _fields_: ClassVar = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _heap() -> dict[str, int]:
    """The C heap of this process (glibc's ``mallinfo2``), KiB: in use (``uordblks``
    and ``hblkhd``, its allocations and mmapped blocks) and held free (``fordblks``):
    a resident size that grows while what is in use does not is the allocator's
    fragmentation, not a leak. ``{}`` where glibc's ``mallinfo2`` is missing."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return {}
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return {
        "heap_in_use_kib": (info.uordblks + info.hblkhd) // 1024,
        "heap_free_kib": info.fordblks // 1024,
    }


def _tasks(task: trio.lowlevel.Task | None) -> int:
    if task is None:
        return 0
    return 1 + sum(_tasks(child) for n in task.child_nurseries for child in n.child_tasks)


PERFORMERS: Final = {
    "cat": cat_agent(20),
    # a slow one: about 0.6 s of tokens, to be left, joined and cancelled mid-stream
    "slow": cat_agent(30, token_delay=0.02),
    "payer": Agent(ScriptedChatModel(_payer_script), [pay], name="payer"),
    "probe": Probe(),
}

# The users.

Tally = collections.Counter[str]
"""What the users did: ``action`` and ``action status`` counts, and ``unexpected``."""


class Users:
    """Users of one server, each a task doing one thing after another, at random (a
    seeded generator per user); what they did is counted in :attr:`tally`, and each
    answer a user did not expect is kept (the first 20) in :attr:`surprises`."""

    def __init__(self, client: Any, seed: int) -> None:
        self.client = client
        self.rng = random.Random(seed)
        self.tally: Tally = collections.Counter()
        self.surprises: list[str] = []
        self.ids = itertools.count()
        self.prefix = f"s{seed}x{os.getpid()}"

    def new_id(self, what: str) -> str:
        return f"{self.prefix}-{what}-{next(self.ids)}"

    def expect(self, action: str, response: Any, *codes: int) -> bool:
        self.tally[f"{action} {response.status_code}"] += 1
        if response.status_code in codes:
            return True
        self.tally["unexpected"] += 1
        if len(self.surprises) < 20:
            self.surprises.append(f"{action}: {response.status_code} {response.text[:200]}")
        return False

    def surprise(self, action: str, what: str) -> None:
        self.tally["unexpected"] += 1
        if len(self.surprises) < 20:
            self.surprises.append(f"{action}: {what}")

    async def events(self, action: str, method: str, path: str, **kw: Any) -> list[Any]:
        """A stream read to its end (its SSE events), or ``[]`` if it was refused."""
        from tests.sse_client import read_sse

        async with self.client.stream(method, path, **kw) as response:
            if not self.expect(action, response, 200):
                await response.aread()
                return []
            return await read_sse(response)

    async def left(self, action: str, path: str, after: int, **kw: Any) -> list[Any]:
        """A stream left (the connection closed) after ``after`` events."""
        from tests.sse_client import iter_sse

        seen: list[Any] = []
        async with self.client.stream("POST" if "json" in kw else "GET", path, **kw) as r:
            if not self.expect(action, r, 200):
                await r.aread()
                return seen
            async for event in iter_sse(r):
                seen.append(event)
                if len(seen) >= after:
                    break
        return seen

    # One user's actions: each is what one user does once.

    def check_end(self, action: str, events: list[Any], *, cancelled: bool = False) -> None:
        """A stream's last frame is its root's end (or, ``cancelled``, the ``error``
        frame of a cancelled run)."""
        if not events:
            return
        last = events[-1]
        if cancelled and last.event == "error" and "cancel" in last.data.lower():
            return
        if last.event != "on_chain_end":
            self.surprise(action, f"ended with {last.event}: {last.data[:100]}")

    async def stream_to_end(self) -> None:
        performer = self.rng.choice(("cat", "slow"))
        body = {"performer": performer, "input": QUESTION}
        self.check_end("stream", await self.events("stream", "POST", "/runs/stream", json=body))

    async def stream_left(self) -> None:
        body = {"performer": "slow", "input": QUESTION}
        await self.left("stream left", "/runs/stream", self.rng.randint(1, 12), json=body)

    async def detached_joined(self) -> None:
        """A detached run joined, left, and joined again after the last event seen."""
        r = await self.client.post("/runs", json={"performer": "slow", "input": QUESTION})
        if not self.expect("detached", r, 202):
            return
        run_id = r.json()["run_id"]
        seen = await self.left("join", f"/runs/{run_id}/stream", self.rng.randint(1, 20))
        last = seen[-1].id if seen else "0"
        rest = await self.events(
            "join again", "GET", f"/runs/{run_id}/stream", headers={"last-event-id": last}
        )
        if rest and rest[0].id is not None and int(rest[0].id) != int(last) + 1:
            self.surprise("join again", f"after {last} came {rest[0].id}")
        self.check_end("join again", rest)
        if self.rng.random() < 0.3:  # and once more from the store, whole
            again = await self.events("join ended", "GET", f"/runs/{run_id}/stream")
            self.check_end("join ended", again)

    async def cancelled(self) -> None:
        r = await self.client.post("/runs", json={"performer": "slow", "input": QUESTION})
        if not self.expect("detached", r, 202):
            return
        run_id = r.json()["run_id"]
        await trio.sleep(self.rng.uniform(0, 0.3))
        r = await self.client.post(f"/runs/{run_id}/cancel")
        self.expect("cancel", r, 202, 409)  # (409: it had ended)
        events = await self.events("join cancelled", "GET", f"/runs/{run_id}/stream")
        self.check_end("join cancelled", events, cancelled=True)

    async def on_a_thread(self) -> None:
        """A conversation: a thread made, run on a few times, read, listed, deleted (or
        left to retention)."""
        thread = self.new_id("thread")
        r = await self.client.post("/threads", json={"thread_id": thread, "metadata": {"u": 1}})
        if not self.expect("thread made", r, 201):
            return
        for turn in range(self.rng.randint(1, 3)):
            body = {"performer": "cat", "input": f"{QUESTION} ({turn})"}
            if self.rng.random() < 0.5:
                await self.events(
                    "thread stream", "POST", f"/threads/{thread}/runs/stream", json=body
                )
            else:
                r = await self.client.post(f"/threads/{thread}/runs/wait", json=body)
                self.expect("thread wait", r, 200)
        self.expect("thread read", await self.client.get(f"/threads/{thread}"), 200)
        r = await self.client.get(f"/threads/{thread}/history")
        if self.expect("thread history", r, 200) and not r.json()["messages"]:
            self.surprise("thread history", "no messages")
        self.expect("threads listed", await self.client.get("/threads?limit=20"), 200)
        if self.rng.random() < 0.6:
            r = await self.client.delete(f"/threads/{thread}")
            self.expect("thread deleted", r, 200)
            self.expect("thread gone", await self.client.get(f"/threads/{thread}"), 404)

    async def approval(self) -> None:
        """A payment paused for approval, resumed approved or denied, streamed or
        waited for; one in five never resumed."""
        r = await self.client.post("/runs/wait", json={"performer": "payer", "input": "pay"})
        if not self.expect("pay", r, 200):
            return
        body = r.json()
        if body["status"] != "paused":
            self.surprise("pay", f"status {body['status']}")
            return
        if self.rng.random() < 0.2:
            return  # nobody answers: retention deletes it
        (pending,) = body["output"]["pending"]
        decision: Any = self.rng.choice((True, False, {"approve": False, "reason": "not today"}))
        resume = {"decisions": {pending["id"]: decision}}
        path = f"/runs/{body['run_id']}/resume"
        if self.rng.random() < 0.5:
            r = await self.client.post(path, json={**resume, "stream": False})
            if self.expect("resume", r, 200) and r.json()["status"] != "ok":
                self.surprise("resume", r.text[:200])
        else:
            await self.events("resume stream", "POST", path, json=resume)
        r = await self.client.post(path, json=resume)  # a second answer: refused
        self.expect("resume again", r, 409)

    async def ag_ui(self) -> None:
        thread = self.new_id("agui")
        for turn in range(self.rng.randint(1, 2)):
            body = {
                "threadId": thread,
                "runId": self.new_id("agui-run"),
                "messages": [{"id": f"m{turn}", "role": "user", "content": QUESTION}],
                "tools": [],
                "context": [],
                "state": {},
                "forwardedProps": {},
            }
            events = await self.events("ag-ui", "POST", "/ag-ui?performer=cat", json=body)
            if events and events[-1].json()["type"] != "RUN_FINISHED":
                self.surprise("ag-ui", events[-1].data[:100])

    async def ai_sdk(self) -> None:
        chat = self.new_id("chat")
        message = {"id": "m0", "role": "user", "parts": [{"type": "text", "text": QUESTION}]}
        body = {"id": chat, "messages": [message], "trigger": "submit-message"}
        if self.rng.random() < 0.3:  # left mid-stream
            await self.left("ai sdk left", "/api/chat?performer=slow", 5, json=body)
            return
        events = await self.events("ai sdk", "POST", "/api/chat?performer=cat", json=body)
        if events and events[-1].data != "[DONE]":
            self.surprise("ai sdk", events[-1].data[:100])

    async def resumable(self) -> None:
        """An AI SDK chat whose stream goes on without its client: left, rejoined from
        its first event (``useChat``'s resume), and sometimes stopped."""
        chat = self.new_id("chat")
        message = {"id": "m0", "role": "user", "parts": [{"type": "text", "text": QUESTION}]}
        body = {"id": chat, "messages": [message], "resumable": True}
        await self.left("resumable left", "/api/chat?performer=slow", 3, json=body)
        if self.rng.random() < 0.5:
            r = await self.client.post(f"/api/chat/{chat}/stop")
            self.expect("resumable stop", r, 202, 404)  # (404: it had ended)
        async with self.client.stream("GET", f"/api/chat/{chat}/stream") as r:
            if self.expect("resumable rejoin", r, 200, 204):
                await r.aread()

    async def interrupted(self) -> None:
        """Two runs on one thread: the second interrupts the first (or waits its turn)."""
        thread = self.new_id("busy")
        first = {"performer": "slow", "input": QUESTION, "thread_id": thread}
        multitask = self.rng.choice(("interrupt", "enqueue"))
        second = {**first, "performer": "cat", "multitask": multitask}

        going = trio.Event()

        async def run_first() -> None:
            from tests.sse_client import iter_sse

            events = []
            async with self.client.stream("POST", "/runs/stream", json=first) as r:
                if self.expect("busy first", r, 200):
                    async for event in iter_sse(r):
                        events.append(event)
                        going.set()
            going.set()
            self.check_end("busy first", events, cancelled=multitask == "interrupt")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_first)
            await going.wait()
            await trio.sleep(self.rng.uniform(0, 0.2))
            events = await self.events(f"busy {multitask}", "POST", "/runs/stream", json=second)
            self.check_end(f"busy {multitask}", events)

    async def viewer(self) -> None:
        """The run viewer: its page, the recent runs, a run's tree, and its live events
        watched for a while, then the tab closed."""
        self.expect("viewer page", await self.client.get("/"), 200)
        r = await self.client.get("/viewer/runs")
        if self.expect("viewer runs", r, 200):
            runs = r.json().get("runs", [])
            if runs:
                run_id = runs[0]["id"]
                self.expect(
                    "viewer tree", await self.client.get(f"/viewer/runs/{run_id}/tree"), 200, 404
                )
        with trio.move_on_after(self.rng.uniform(0.5, 2)):
            async with self.client.stream("GET", "/viewer/events") as events:
                if self.expect("viewer events", events, 200):
                    async for _ in events.aiter_bytes():
                        pass

    async def look_around(self) -> None:
        self.expect("runs listed", await self.client.get("/runs"), 200)
        self.expect("health", await self.client.get("/health"), 200)
        self.expect("performers", await self.client.get("/performers"), 200)

    async def bad_requests(self) -> None:
        c = self.client
        missing = self.new_id("nope")
        self.expect("bad 404 run", await c.get(f"/runs/{missing}"), 404)
        self.expect("bad 404 join", await c.get(f"/runs/{missing}/stream"), 404)
        self.expect("bad 404 thread", await c.get(f"/threads/{missing}"), 404)
        r = await c.post("/runs/wait", json={"performer": "nobody", "input": "x"})
        self.expect("bad 404 performer", r, 404)
        r = await c.post("/threads", json={"thread_id": "x" * 300})
        self.expect("bad 422 thread id", r, 422)
        r = await c.post("/runs/wait", json={"performer": "cat", "input": "x", "run_id": "-no"})
        self.expect("bad 422 run id", r, 422)
        r = await c.post(
            "/runs/stream", content=b"{not json", headers={"content-type": "application/json"}
        )
        self.expect("bad 400 json", r, 400)
        r = await c.get("/runs/x/stream", headers={"last-event-id": "soon"})
        self.expect("bad 422 last event id", r, 422)
        thread = self.new_id("twice")
        self.expect("thread made", await c.post("/threads", json={"thread_id": thread}), 201)
        r = await c.post("/threads", json={"thread_id": thread})
        self.expect("bad 409 thread taken", r, 409)
        run_id = self.new_id("run")
        body = {"performer": "cat", "input": "x", "run_id": run_id}
        self.expect("wait", await c.post("/runs/wait", json=body), 200)
        self.expect("bad 409 run id taken", await c.post("/runs/wait", json=body), 409)
        self.expect("bad 409 cancel ended", await c.post(f"/runs/{run_id}/cancel"), 409)

    ACTIONS: Final = (
        ("stream_to_end", 4),
        ("stream_left", 2),
        ("detached_joined", 2),
        ("cancelled", 1),
        ("on_a_thread", 3),
        ("approval", 2),
        ("ag_ui", 2),
        ("ai_sdk", 2),
        ("resumable", 1),
        ("interrupted", 1),
        ("viewer", 1),
        ("look_around", 1),
        ("bad_requests", 1),
    )

    async def user(self, until: float) -> None:
        """Every action once (in an order of its own), then actions at random by their
        weights until ``until`` (trio's clock)."""
        names = [name for name, _ in self.ACTIONS]
        weights = [weight for _, weight in self.ACTIONS]
        first = self.rng.sample(names, len(names))
        while first or trio.current_time() < until:
            name = first.pop() if first else self.rng.choices(names, weights)[0]
            self.tally[name] += 1
            try:
                await getattr(self, name)()
            except Exception as exc:  # (a broken connection, a timeout: counted)
                self.surprise(name, f"{type(exc).__name__}: {exc}"[:200])


# The sampling, from outside the server.


def process_figures(pid: int) -> dict[str, int]:
    """Process ``pid``'s resident memory (KiB), threads and open descriptors (Linux)."""
    found = {"fds": len(os.listdir(f"/proc/{pid}/fd"))}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                found["rss_kib"] = int(line.split()[1])
            elif line.startswith("Threads:"):
                found["threads"] = int(line.split()[1])
    return found


def server_processes(pid: int) -> list[int]:
    """The processes that serve: ``pid`` and its children (``troupe serve --workers N``:
    a supervisor and its workers)."""
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return [pid, *(int(child) for child in children.read().split())]


def _summed(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Figures of several processes, added up (their counts too: ``types``, ``tables``)."""
    found: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict):
                into = found.setdefault(key, {})
                for name, count in value.items():
                    into[name] = into.get(name, 0) + count
            elif isinstance(value, int | float) and key != "pid":
                found[key] = found.get(key, 0) + value
    return found


TABLES: Final = (
    "troupe_runs",
    "troupe_segments",
    "troupe_threads",
    "troupe_message_segments",
    "troupe_cancels",
    "troupe_owners",
)


def sqlite_figures(path: Path) -> dict[str, Any]:
    """The SQLite store's sizes: its files (KiB) and rows per table."""
    found: dict[str, Any] = {}
    for suffix in ("", "-wal", "-shm"):
        file = Path(f"{path}{suffix}")
        found[f"db{suffix or '-file'}_kib"] = file.stat().st_size // 1024 if file.exists() else 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        for table in TABLES:
            found[table] = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        found["free_pages"] = db.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        db.close()
    return found


def postgres_figures(url: str) -> dict[str, Any]:
    """The PostgreSQL store's rows and bytes (KiB, with indexes and TOAST) per table,
    its dead rows, and the connections to its database."""
    import psycopg

    found: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as db:

        def one(query: str, *args: Any) -> int:
            row = db.execute(query, args).fetchone()
            return int(row[0]) if row else 0

        for table in TABLES:
            found[table] = one(f"SELECT count(*) FROM {table}")
            found[f"{table}_kib"] = one("SELECT pg_total_relation_size(%s)", table) // 1024
        found["dead_rows"] = one("SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables")
        found["connections"] = one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid != pg_backend_pid()"
        )
    return found


async def probe(client: Any, workers: int = 1) -> dict[str, Any]:
    """The server's own figures (its ``probe`` performer's answer), or ``{}``; of
    ``workers`` processes, each one's added up (asked until each has answered, or a
    few times each)."""
    answers: dict[int, dict[str, Any]] = {}
    for _ in range(workers * 5):
        # (a connection of its own each time: a kept-alive one reaches one worker)
        headers = {"connection": "close"} if workers > 1 else {}
        body = {"performer": "probe", "input": None}
        r = await client.post("/runs/wait", json=body, headers=headers)
        if r.status_code == 200:
            output = r.json()["output"]
            answers[output["pid"]] = output
        if len(answers) == workers:
            break
    found = _summed(list(answers.values()))
    if workers > 1:
        found["probed"] = len(answers)
    return found


async def sample(
    client: Any, pid: int, store: Callable[[], dict[str, Any]], started: float, workers: int = 1
) -> dict[str, Any]:
    at = round(trio.current_time() - started, 1)
    inside = await probe(client, workers)
    types = inside.pop("types", {})
    inside.update({f"table {k}": v for k, v in inside.pop("tables", {}).items()})
    processes = server_processes(pid)
    found = {
        "seconds": at,
        **_summed([process_figures(one) for one in processes]),
        **({"processes": len(processes)} if workers > 1 else {}),
        **inside,
        **await trio.to_thread.run_sync(store),
    }
    return found | {"types": types}


GROWN: Final = (
    "rss_kib",
    "heap_in_use_kib",
    "heap_free_kib",
    "python_blocks",
    "fds",
    "threads",
    "tasks",
    "objects",
    "troupe_runs",
    "troupe_segments",
    "troupe_threads",
    "troupe_message_segments",
    "troupe_cancels",
    "db-file_kib",
    "db-wal_kib",
    "troupe_segments_kib",
    "troupe_runs_kib",
    "connections",
    "dead_rows",
)


def summary(curve: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's growth over the second half (absolute, and in % of the first
    half's median), for the figures the curve has."""
    found: dict[str, Any] = {}
    measured = sorted({key for c in curve for key in c if key.startswith("table ")})
    for key in (*GROWN, *measured):
        values = [c[key] for c in curve if c.get(key) is not None]
        if len(values) == len(curve) and len(values) >= 4:
            if statistics_safe(values):
                grown, pct = growth(values)
                found[key] = {"growth": grown, "growth_pct": round(pct, 2), "last": values[-1]}
            else:  # (from nothing: the growth alone, no percentage)
                grown = growth([value + 1 for value in values])[0]
                found[key] = {"growth": grown, "growth_pct": None, "last": values[-1]}
    first, last = curve[1].get("types", {}), curve[-1].get("types", {})
    found["types_grown"] = dict(
        sorted(
            ((k, last.get(k, 0) - first.get(k, 0)) for k in set(first) | set(last)),
            key=lambda item: -item[1],
        )[:10]
    )
    return found


def statistics_safe(values: Sequence[float]) -> bool:
    """Whether :func:`growth` can divide by the first half's median (not 0)."""
    settled = values[2:]
    first = sorted(settled[: len(settled) // 2])
    return bool(first) and first[len(first) // 2] != 0


@frozen
class Soak:
    """How long, how hard: ``seconds`` of ``users`` users on a server with a retention
    of ``retention`` seconds (``workers`` processes), sampled every ``every`` seconds."""

    seconds: float
    retention: float
    users: int
    every: float
    workers: int = 1


async def drive(
    soak: Soak, url: str, pid: int, store: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """``soak.users`` users on the server at ``url`` (process ``pid``) for
    ``soak.seconds``, a sample every ``soak.every`` seconds (and one before they begin,
    and one after they end and the server is idle); and one more once a retention has
    gone by since."""
    import httpx

    limits = httpx.Limits(max_connections=soak.users * 4 + 4)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        started = trio.current_time()
        measure = functools.partial(sample, client, pid, store, started, soak.workers)
        curve = [await measure()]
        crowd = [Users(client, seed) for seed in range(soak.users)]
        until = started + soak.seconds

        done = trio.Event()

        async def sampler() -> None:  # until the users are done (each does every action)
            while True:
                with trio.move_on_after(soak.every):
                    await done.wait()
                if done.is_set():
                    return
                curve.append(await measure())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampler)
            async with trio.open_nursery() as users:
                for one in crowd:
                    users.start_soon(one.user, until)
            done.set()
        await trio.sleep(1)  # the runs left behind end
        curve.append(await measure())
        # once a retention (and a sweep) has gone by, the store holds only what ended
        # since: the samples' own runs
        await trio.sleep(soak.retention * 1.1 + 1)
        after = await measure()
    tally: Tally = sum((one.tally for one in crowd), collections.Counter())
    return {
        "seconds": soak.seconds,
        "users": soak.users,
        "workers": soak.workers,
        "actions": {k: v for k, v in sorted(tally.items()) if " " not in k},
        "answers": {k: v for k, v in sorted(tally.items()) if " " in k},
        "unexpected": tally["unexpected"],
        "surprises": [s for one in crowd for s in one.surprises][:20],
        "curve": curve,
        "growth": summary(curve),
        "after_retention": after,
    }


@contextlib.contextmanager
def served(soak: Soak, url: str, log: Path) -> Iterator[tuple[str, int]]:
    """``troupe serve`` of :data:`PERFORMERS` on ``url``'s store, on a free port of
    127.0.0.1, for the block (its stderr written to ``log``): its address and pid."""
    from tests.ports import free_port, serving

    port = free_port()
    args = [
        sys.executable,
        "-m",
        "actors",
        "serve",
        "benchmarks._serve_soak:PERFORMERS",
        *("--store", url, "--retention", f"{soak.retention:g}s", "--port", str(port)),
        *(("--workers", str(soak.workers)) if soak.workers > 1 else ()),
    ]
    with log.open("wb") as stderr, serving(args, port, stderr=stderr) as server:
        deadline = time.monotonic() + 30
        while len(server_processes(server.process.pid)) < 1 + soak.workers * (soak.workers > 1):
            if time.monotonic() > deadline:
                raise RuntimeError(f"troupe serve started no {soak.workers} workers")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", server.process.pid


def on_sqlite(soak: Soak) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "soak.db"
        log = Path(folder) / "server.log"
        with served(soak, f"sqlite:///{path}", log) as (url, pid):
            found = trio.run(drive, soak, url, pid, functools.partial(sqlite_figures, path))
        found["server_log"] = _tail(log)
    return {"store": "sqlite", "retention": soak.retention, **found}


def on_postgres(soak: Soak, argv: Sequence[str]) -> dict[str, Any]:
    from ._stores import on_postgres as on_a_cluster

    def run(new_database: Callable[[], str]) -> dict[str, Any]:
        url = new_database()
        with tempfile.TemporaryDirectory() as folder:
            log = Path(folder) / "server.log"
            with served(soak, url, log) as (address, pid):
                figures = functools.partial(postgres_figures, url)
                found = trio.run(drive, soak, address, pid, figures)
            found["server_log"] = _tail(log)
        return {"store": "postgresql", "retention": soak.retention, **found}

    return on_a_cluster(run, argv)


def _tail(log: Path, lines: int = 20) -> list[str]:
    """The last ``lines`` lines the server wrote to stderr."""
    return log.read_text(errors="replace").splitlines()[-lines:]


def main(argv: Sequence[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._serve_soak")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument(
        "--retention", type=lambda t: float(t.removesuffix("s")), default=60.0, metavar="SECONDS"
    )
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.retention, args.users, args.samples = 8.0, 2.0, 3, 6
    every = args.seconds / args.samples
    soak = Soak(args.seconds, args.retention, args.users, every, args.workers)
    found: dict[str, Any] = {}
    if args.store in ("sqlite", "both"):
        found["sqlite"] = on_sqlite(soak)
    if args.store in ("postgres", "both"):
        found["postgres"] = on_postgres(soak, argv)
    return found


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=1))
