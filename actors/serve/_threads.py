"""What the HTTP edge keeps in a store: threads (conversations) and runs that outlive
their process, with the edge's identities.

A server with a store (``troupe serve --store URL``) keeps each run's owner (the
identity that started it) in the run's metadata under :data:`OWNER_KEY`, and each
thread's in the thread's metadata under the same key; the rules of ``_auth`` hold for
them as for live runs: an identity sees its own, or every one if it ``sees_all``.

Two runs on one thread at once follow the request's ``multitask`` (as LangGraph's
``multitask_strategy``): ``reject`` (a 409, the default), ``enqueue`` (wait for the
running one to end), ``interrupt`` (cancel it, wait for its end). A process starts the
runs of one thread one at a time (:class:`ThreadLocks`), looking for running ones both
among its own and in the store (the runs of other processes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, final

import trio
from starlette.requests import Request

from runtime import (
    RunCancelledError,
    RunRecord,
    Runtime,
    ThreadRecord,
    UnknownThreadError,
)

from ._auth import Identity
from ._errors import BadRequest

OWNER_KEY: Final = "troupe.owner"
"""The metadata key of a stored run's (and thread's) owner: the identity's name."""
MULTITASK: Final = ("reject", "enqueue", "interrupt")
"""What a run on a thread with a run going does (``reject``: a 409)."""
WAIT_POLL: Final = 0.05
"""Seconds between looks at a thread's running runs while a run waits its turn."""
NO_STORE: Final = "threads need a store: start the server with --store URL (e.g. sqlite:///runs.db)"


def checked_multitask(value: object) -> str:
    """The ``multitask`` a body names (``reject`` when none).

    Raises:
        BadRequest: a 422 for another value.
    """
    if value is None:
        return "reject"
    if not isinstance(value, str) or value not in MULTITASK:
        shown = value[:40] if isinstance(value, str) else type(value).__name__
        raise BadRequest(
            422, f"multitask must be one of {', '.join(MULTITASK)}; got {shown!r}", "multitask"
        )
    return value


def owner_in(metadata: Mapping[str, Any]) -> str | None:
    """The owner a stored record's metadata names (``None``: the server's own code)."""
    owner = metadata.get(OWNER_KEY)
    return owner if isinstance(owner, str) else None


def run_owner(record: RunRecord) -> str | None:
    """The identity that started a stored run."""
    metadata = record.config.get("metadata")
    return owner_in(metadata) if isinstance(metadata, dict) else None


def run_json(record: RunRecord) -> dict[str, Any]:
    """What the HTTP edge says of a stored run."""
    return {
        "run_id": record.run_id,
        "performer": record.performer,
        "kind": record.kind,
        "status": record.status,
        "thread_id": record.thread_id,
        "owner": run_owner(record),
        "started_at": record.created_at,
        "ended_at": record.ended_at,
        "error": record.error,
    }


def thread_json(record: ThreadRecord) -> dict[str, Any]:
    """What the HTTP edge says of a thread."""
    return {
        "thread_id": record.thread_id,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "metadata": {k: v for k, v in record.metadata.items() if k != OWNER_KEY},
        "owner": owner_in(record.metadata),
        "messages": record.messages,
    }


async def visible_thread(
    rt: Runtime, thread_id: str, identity: Identity, *, create: str | None = None
) -> ThreadRecord:
    """The thread ``thread_id`` if ``identity`` may see it; with ``create`` (the field
    that named it), one made for ``identity`` if there is none.

    Raises:
        BadRequest: a 404 for a thread there is none of that ``identity`` may see (a
            thread of another is not told apart from none); with ``create``, a 409 for
            a thread of another.
    """
    try:
        record = await rt.threads.get(thread_id)
    except UnknownThreadError:
        if create is None:
            raise BadRequest(404, f"no thread {thread_id[:128]!r}") from None
        try:
            return await rt.threads.create(thread_id, metadata={OWNER_KEY: identity.name})
        except ValueError:  # made meanwhile, by another request
            record = await rt.threads.get(thread_id)
    if not identity.may_see(owner_in(record.metadata)):
        if create is not None:
            raise BadRequest(409, f"thread id {thread_id[:128]!r} is taken: choose another", create)
        raise BadRequest(404, f"no thread {thread_id[:128]!r}")
    return record


@final
class ThreadLocks:
    """One lock per thread that has a run starting: a process starts the runs of one
    thread one at a time (the lock goes once nobody holds or waits for it)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[trio.Lock, list[int]]] = {}

    @asynccontextmanager
    async def hold(self, thread_id: str) -> AsyncIterator[None]:
        """Hold ``thread_id``'s lock for the block (waiting in turn). A cancel point."""
        entry = self._locks.get(thread_id)
        if entry is None:
            entry = self._locks[thread_id] = (trio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[thread_id]

    def busy(self, thread_id: str) -> bool:
        """Whether a request holds (or waits for) ``thread_id``'s lock: one that waits
        its turn holds it for as long as the thread's run goes."""
        return thread_id in self._locks

    def __len__(self) -> int:
        return len(self._locks)


async def take_turn(
    rt: Runtime,
    request: Request,
    thread_id: str,
    multitask: str,
    local: Callable[[], dict[str, Callable[[], None]]],
    closing: Callable[[], bool],
) -> None:
    """Wait until no run goes on ``thread_id`` (in this process: ``local()``, the ids of
    its runs with what cancels each; or in any, by the store), as ``multitask`` says.
    Hold the thread's lock around it and the start of the run that follows.

    Raises:
        BadRequest: a 409 (``reject``) naming the running runs; a 503 if the server
            closes meanwhile; a 400 if the client leaves.
    """
    running = await running_on(rt, thread_id, local())
    if not running:
        return
    if multitask == "reject":
        raise BadRequest(
            409,
            f"thread {thread_id[:128]!r} has a run going ({', '.join(running[:5])}): wait "
            "for it to end, or send multitask 'enqueue' or 'interrupt'",
            "multitask",
        )
    gone = False
    async with trio.open_nursery() as nursery:

        async def watch_disconnect() -> None:
            # (Starlette's is_disconnected never sees it under trio: its receive is
            # cancelled before it looks)
            nonlocal gone
            while (await request.receive())["type"] != "http.disconnect":
                pass
            gone = True
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch_disconnect)
        failure: Exception | None = None
        try:
            running = await _wait_out(rt, thread_id, multitask, running, local, closing)
        except Exception as exc:  # the store failed: raised below (not in a group)
            failure = exc
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    if running and not gone:
        raise BadRequest(503, "the server is shutting down")
    if gone:
        raise BadRequest(400, "the client left while its run waited its turn")


async def _wait_out(
    rt: Runtime,
    thread_id: str,
    multitask: str,
    running: list[str],
    local: Callable[[], dict[str, Callable[[], None]]],
    closing: Callable[[], bool],
) -> list[str]:
    """Wait until ``running`` (the runs on the thread) are over, cancelling them first
    if ``multitask`` is ``interrupt``; what still runs if the server began to close."""
    cancelled: set[str] = set()
    while running:
        if multitask == "interrupt":
            await interrupt(rt, running, local(), cancelled)
        await trio.sleep(WAIT_POLL)
        if closing():
            break
        running = await running_on(rt, thread_id, local())
    return running


async def interrupt(
    rt: Runtime,
    running: list[str],
    here: Mapping[str, Callable[[], None]],
    cancelled: set[str] | None = None,
) -> None:
    """Cancel the ``running`` runs (``here``: this process's, with what cancels each;
    the others through the store), but those in ``cancelled`` (which it adds to)."""
    for run_id in running:
        if cancelled is not None:
            if run_id in cancelled:
                continue
            cancelled.add(run_id)
        cancel = here.get(run_id)
        if cancel is not None:
            cancel()
        else:
            await rt.cancel(run_id)


async def running_on(
    rt: Runtime, thread_id: str, here: Mapping[str, Callable[[], None]]
) -> list[str]:
    """The runs going on ``thread_id``: ``here`` (this process's), and the store's."""
    stored = await rt.list_runs(thread_id=thread_id, status="running", limit=100)
    return [*here, *(r.run_id for r in stored if r.run_id not in here)]


def ended_as(status: str | None, error: str | None) -> BaseException | None:
    """How a stored run ended (its terminal event's ``status`` and ``error``; ``None``:
    its journal holds no end), as the error a live run's stream raised (``None``: it
    ended well)."""
    if status is None:
        return RunCancelledError("the run's journal ends before the run did")
    if status == "ok":
        return None
    if status == "cancelled":  # as a cancelled run's stream raises it
        return RunCancelledError("the run was cancelled before it finished")
    text = str(error or status)
    name, sep, message = text.partition(": ")
    if not sep or not name.isidentifier():
        return RuntimeError(text)
    failure: type[Exception] = type(name, (Exception,), {})
    return failure(message)
