"""The ASGI app: performers served over HTTP with server-sent events.

Starlette does the routing, parsing and CORS (it runs under trio through anyio);
the app keeps to trio itself for the streams, so that a client's disconnect cancels
its run and a slow client holds back only its own run (its stream's backpressure).
"""

from __future__ import annotations

import copy
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any, ClassVar, Final

import jsonpatch
import jsonpointer
import trio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from protocol import CUSTOM_EVENT, StateDelta, StreamEvent
from runtime import (
    JournalError,
    NoStoreError,
    Performer,
    RunCancelledError,
    Runnable,
    RunRecord,
    Runtime,
    Store,
    StoreError,
    TroupeError,
    UnknownRunError,
    describe_error,
    is_exit,
    make_config,
    new_run_id,
    open_runtime,
    positive_int,
    seconds,
)

from .._targets import input_schema, named_performers
from ._auth import AuthHook, Identity, Refused, identify, log
from ._board import DEFAULT_HISTORY, RunBoard
from ._body import DEFAULT_BODY_TIMEOUT, check_id, checked_thread_id, is_id, json_body
from ._errors import BadRequest
from ._guard import Guard, HostRule, default_max_requests
from ._history import context_messages, new_messages, traced_conversation
from ._resume import Resuming, find_resume, outcome, request_body, resume_routes, resume_stream
from ._runs import DEFAULT_REPLAY, LiveRun, LiveRuns, RunHost, ServedStream
from ._sse import RAW_SEND, SSEResponse, Write, whole_number
from ._threads import (
    NO_STORE,
    OWNER_KEY,
    ThreadLocks,
    checked_multitask,
    ended_as,
    interrupt,
    run_json,
    run_owner,
    running_on,
    take_turn,
    thread_json,
    visible_thread,
)
from ._viewer import routes as viewer_routes
from ._wire import (
    PROTOCOLS,
    AGUIEncoder,
    UIMessageStreamEncoder,
    WireEncoder,
    WireJSONResponse,
    frame,
    wire_json,
)

DEFAULT_HEARTBEAT: Final = 15.0
"""Seconds of silence after which a stream gets a comment line (keeps proxies open)."""
DEFAULT_MAX_BODY: Final = 1 << 20
DRAIN_GRACE: Final = 10.0
"""How long a server shutting down waits for its runs to send their last events."""
MAX_CONFIG: Final = 16 * 1024
"""The largest ``config`` a client may send, in bytes of JSON."""
MAX_STATE: Final = 256 * 1024
"""The largest shared ``state`` a client may send, in bytes of JSON (it is kept once,
with the run's record, and is not copied into its events)."""
FORWARDED_PROPS: Final = "forwarded_props"
"""The metadata key under which an AG-UI body's ``forwardedProps`` reach the run."""
DEFAULT_MAX_DETACHED: Final = 1000
"""Detached runs a server keeps going at once (429 past it)."""
DEFAULT_DETACHED_MAX_AGE: Final = 3600.0
"""Seconds a detached run may go on before the server cancels it."""
START_END_PASSES: Final = 3
"""Scheduler passes a stream waits, after a run's start or end, for the starts and ends
that follow it (a model's start is three passes behind its agent's) to share its write."""
BATCH: Final = 256
"""At most this many waiting events are written at once."""
BOARD_CAPACITY: Final = 8192
"""Events the viewer's subscription holds before it drops the oldest."""
RETENTION_EVERY: Final = 3600.0
"""The longest pause between two sweeps of a store's old runs (``retention``)."""


class Server:
    """What the app's handlers share: the performers, the runtime, the live runs."""

    def __init__(
        self,
        performers: Mapping[str, Runnable[Any]],
        runtime: RunHost | None,
        *,
        token: str | None,
        heartbeat: float,
        max_body: int,
        replay: int,
        history: int = DEFAULT_HISTORY,
        auth: AuthHook | None = None,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        max_detached: int = DEFAULT_MAX_DETACHED,
        detached_max_age: float | None = DEFAULT_DETACHED_MAX_AGE,
        store: Store | str | None = None,
        retention: float | None = None,
    ) -> None:
        self.performers = dict(performers)
        self.store = store
        self.retention = retention
        self.stored: Runtime | None = None
        """The runtime, when it has a store (set as the app starts)."""
        self.thread_locks = ThreadLocks()
        self.board = RunBoard(history)
        self.runtime = runtime
        self.token = token
        self.auth = auth
        self.heartbeat = heartbeat
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.max_detached = max_detached
        self.detached_max_age = detached_max_age
        self.runs = LiveRuns(replay)
        self.detached: trio.Nursery | None = None
        self.detached_starting = 0
        self.draining = False
        self.exit: BaseException | None = None
        self.stopping = trio.Event()

    def the_runtime(self) -> RunHost:
        if self.runtime is None or self.runtime.closed:
            raise BadRequest(503, "the server's runtime is not running")
        return self.runtime

    def the_store(self, field: str | None = None) -> Runtime:
        """The runtime, which has a store.

        Raises:
            BadRequest: a 501 if the server has no store (naming ``field``).
        """
        if self.stored is None:
            raise BadRequest(501, f"{field + ': ' if field else ''}{NO_STORE}", field)
        self.the_runtime()
        return self.stored

    def started(self, runtime: RunHost) -> None:
        """The app starts on ``runtime``: keep it, and whether it has a store."""
        self.runtime = runtime
        if isinstance(runtime, Runtime):
            try:
                runtime.threads  # noqa: B018 (raises without a store)
            except NoStoreError:
                return
            self.stored = runtime

    async def stored_run(self, run_id: str, identity: Identity) -> RunRecord:
        """The store's record of run ``run_id``, if ``identity`` may see it.

        Raises:
            BadRequest: a 404 if there is none it may see (or no store).
        """
        if self.stored is None or not is_id(run_id):
            raise BadRequest(404, f"no live run {run_id[:128]!r}")
        try:
            record = await self.stored.get_run(run_id)
        except UnknownRunError:
            raise BadRequest(404, f"no run {run_id[:128]!r}") from None
        if not identity.may_see(run_owner(record)):
            raise BadRequest(404, f"no run {run_id[:128]!r}")
        return record

    async def keep_within(self, age: float) -> None:
        """Delete, now and then, the stored runs that ended more than ``age`` seconds
        ago (a service task of the app)."""
        stored = self.stored
        if stored is None:
            return
        while True:
            try:
                gone = await stored.delete_ended_before(time.time() - age)
            except StoreError as exc:
                log.warning("retention: the store failed: %s", exc)
            else:
                if gone:
                    log.info("retention: %d runs older than %g s deleted", gone, age)
            await trio.sleep(min(age / 10, RETENTION_EVERY))

    def performer(self, name: object) -> tuple[str, Runnable[Any]]:
        if name is None and len(self.performers) == 1:
            return next(iter(self.performers.items()))
        if not isinstance(name, str):
            raise BadRequest(
                422, f"name a performer: one of {sorted(self.performers)}", "performer"
            )
        found = self.performers.get(name)
        if found is None:
            raise BadRequest(
                404, f"no performer named {name[:80]!r}; there are {sorted(self.performers)}"
            )
        return name, found

    def check_token(self, request: Request) -> None:
        """Refuse a request without the server's token (when it has one)."""
        if self.token is None:
            return
        # Only the header: a token in a URL ends up in logs and a browser's history.
        scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer":  # the scheme is case-insensitive (RFC 7235)
            given = ""
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise BadRequest(
                401,
                "a bearer token is needed (Authorization: Bearer ...)",
                headers={"www-authenticate": "Bearer"},
            )

    async def identify(self, request: Request) -> Identity:
        """Who ``request`` comes from (the auth hook's answer).

        Raises:
            BadRequest: a 401 if the hook refuses it.
        """
        try:
            return await identify(self.auth, request)
        except Refused as exc:
            raise BadRequest(401, str(exc), headers={"www-authenticate": "Bearer"}) from None

    def visible_run(self, run_id: str, identity: Identity) -> LiveRun:
        """The live (or recently finished) run ``run_id``, if ``identity`` may see it.

        Raises:
            BadRequest: a 404 if there is none it may see (a run of another owner is
                not told apart from no run).
        """
        live = self.runs.get(run_id) if is_id(run_id) else None
        if live is None or not identity.may_see(live.owner):
            raise BadRequest(404, f"no live run {run_id[:128]!r}")
        return live

    async def watch(self, runtime: RunHost) -> None:
        """Feed the viewer's board from every run of ``runtime``, never holding one up
        (each run's first stream event only, until a page watches: see ``RunBoard.taking``)."""
        self.board.taking = "all" if self.board.watchers else "first"
        self.board.attachment = await runtime.subscribe(
            self.board, drop_oldest=True, capacity=BOARD_CAPACITY
        )

    def unwatch(self) -> None:
        """The app is shutting down: a runtime that outlives it stops feeding the board."""
        if self.board.attachment is not None:
            self.board.attachment.close()

    def exit_raised(self, exc: BaseException) -> None:
        """A run raised an exit (``KeyboardInterrupt``, ``SystemExit``, ...): its client
        is told, as of any error, and the server stops as on Ctrl-C (``stopping`` is
        set; ``troupe serve`` drains, then raises the first such exit itself)."""
        log.warning("run raised %r: the server stops", exc)
        if self.exit is None:
            self.exit = exc
        self.stopping.set()

    async def drain(self, grace: float = DRAIN_GRACE) -> None:
        """Shutting down: cancel every run being served, and wait (within ``grace``)
        until each has sent its clients its ``cancelled`` terminal event."""
        self.draining = True
        live = self.runs.live()
        for run in live:
            run.stream.cancel()
        with trio.move_on_after(grace):
            for run in live:
                while not run.finished:
                    await run.wait_changed()


class RunRequest:
    """What a client asked to run, parsed and checked, in any of the body shapes: Troupe's
    own (``{"performer", "input", "config", "protocol", "thread_id", "multitask"}``), an
    AG-UI ``RunAgentInput`` (``{"threadId", "runId", "messages", ...}``), or a Vercel AI
    ``useChat`` request (``{"id", "messages"}``, or ``{"id", "message"}`` when it sends
    only its last message). ``thread``: the thread a ``/threads/{id}/runs/...`` path
    names."""

    def __init__(
        self,
        server: Server,
        request: Request,
        body: dict[str, Any],
        protocol: str | None = None,
        thread: str | None = None,
        resuming: Resuming | None = None,
    ) -> None:
        self.resuming = resuming
        query = request.query_params
        if "messages" not in body and isinstance(body.get("message"), dict):
            body = {**body, "messages": [body["message"]]}  # the AI SDK's last message only
        self.protocol = body.get("protocol") or query.get("protocol") or protocol or _shape(body)
        if not isinstance(self.protocol, str) or self.protocol not in PROTOCOLS:
            raise BadRequest(
                422,
                f"unknown protocol {str(self.protocol)[:40]!r}; one of {', '.join(PROTOCOLS)}",
                "protocol",
            )
        self.name, self.performer = server.performer(
            body.get("performer") or query.get("performer") or (resuming and resuming.performer)
        )
        label_field = "threadId" if "threadId" in body else "id"
        label = body.get(label_field)
        run_field = self.run_field = "runId" if "runId" in body else "run_id"
        run_id = body.get(run_field)
        self.chosen = run_id is not None
        """Whether the client chose the run's id."""
        if run_id is None:
            self.run_id = new_run_id()
        else:
            self.run_id = check_id(run_id, run_field)
            # An id the server still remembers names that run's events and record:
            # a second run under it would replace what its readers are given.
            if server.runs.get(self.run_id) is not None or server.board.knows(self.run_id):
                raise BadRequest(
                    409, f"run id {self.run_id!r} is taken: choose another, or none", run_field
                )
        label = None if label in (None, "") else check_id(label, label_field)
        self.multitask = checked_multitask(body.get("multitask"))
        self.thread, self.thread_field = _thread_of(
            server,
            body,
            thread,
            label,
            label_field,
            resuming and resuming.thread_id,
            resuming=resuming is not None,
        )
        # (what an AG-UI or UI message stream calls the thread: the stored thread, the
        # client's own label, or the run)
        self.thread_id = self.thread or label or self.run_id
        self.chat = self.thread or label
        """The conversation the client names (a chat ``id``, a ``threadId``, a thread)."""
        performer: Performer[Any, Any] = self.performer.bind()[0]
        self._performer = performer
        self.context: list[dict[str, Any]] = []
        self.said: list[tuple[int, Any]] | None = None
        self.client_tools: list[Any] = []
        self.continues: str | None = None
        """The id of the AI SDK assistant message the run's answer continues (the body
        ends with it: its client tools' results), if any."""
        if resuming is not None:  # the paused run's input
            self.input = None
        else:
            raw_input = body["input"] if "input" in body else self._from_messages(body)
            self.input = self._coerced(raw_input)
        if self.thread is not None and resuming is None:
            try:
                performer.with_history(self.input, [])
            except TypeError as exc:
                if self.thread_field != label_field:
                    raise BadRequest(422, str(exc), self.thread_field) from None
                # A frontend's own id names a thread only for a performer that keeps
                # threads; a chat model served to a frontend goes on as without a store.
                self.thread, self.thread_field = None, ""
        # A request that is part of a trace (W3C ``traceparent``) carries it into the
        # run's metadata: an OpenTelemetry exporter continues that trace.
        traceparent = request.headers.get("traceparent")
        config = body.get("config")
        # A run's config (its metadata) is copied into every event it sends: a large one
        # multiplied a 0.9 MB request into 43 MB of events.
        if config is not None and len(json.dumps(config)) > MAX_CONFIG:
            raise BadRequest(
                413,
                f"config is over {MAX_CONFIG:,} bytes of JSON (it goes with every event)",
                "config",
            )
        metadata: dict[str, Any] = {"traceparent": traceparent} if traceparent else {}
        forwarded = body.get("forwardedProps")
        if forwarded not in (None, {}):  # (HttpAgent sends {} when it has none)
            if len(json.dumps(forwarded)) > MAX_CONFIG:
                raise BadRequest(
                    413,
                    f"forwardedProps is over {MAX_CONFIG:,} bytes of JSON "
                    "(it goes with every event)",
                    "forwardedProps",
                )
            metadata[FORWARDED_PROPS] = forwarded
        if server.stored is not None:
            # the run's owner, kept with it in the store (who may see it after a restart)
            metadata[OWNER_KEY] = request.state.identity.name
        self.state = _checked_state(body, config)
        try:
            self.config = make_config(
                config, metadata=metadata or None, thread_id=self.thread, state=self.state
            )
        except (TypeError, ValueError) as exc:
            raise BadRequest(422, f"config: {exc}", "config") from None
        if self.config.callbacks:
            raise BadRequest(422, "config: callbacks cannot come over HTTP", "config")
        if isinstance(config, dict) and OWNER_KEY in (config.get("metadata") or {}):
            raise BadRequest(422, f"config: metadata {OWNER_KEY!r} is the server's", "config")
        self.detached = body.get("detached", False)
        if not isinstance(self.detached, bool):  # "false" is a string, and true
            raise BadRequest(422, "detached must be true or false", "detached")
        # (also in the query: AG-UI's HttpAgent sends a body of its own fixed shape)
        self.resumable = body.get("resumable", _QUERY_BOOLS.get(query.get("resumable", "false")))
        if not isinstance(self.resumable, bool):
            raise BadRequest(422, "resumable must be true or false", "resumable")

    def _from_messages(self, body: dict[str, Any]) -> Any:
        """The whole conversation of an AG-UI or AI SDK body, as the performer's input:
        an agent's ``{"messages": [...]}``, a chat model's list of messages."""
        if "messages" not in body:
            raise BadRequest(422, "give the run an input (or a list of messages)", "input")
        self.context = context_messages(body.get("context"))
        self.said = traced_conversation(body["messages"])
        tools = body.get("tools") or []
        if not isinstance(tools, list):
            raise BadRequest(422, "tools (the frontend's tools) must be a list", "tools")
        self.client_tools = tools
        last = body["messages"][-1]
        if last.get("role") == "assistant" and "parts" in last and isinstance(last.get("id"), str):
            self.continues = last["id"]
        return self._as_input([message for _, message in self.said])

    def _as_input(self, said: list[Any]) -> Any:
        messages = [*self.context, *said]
        kind = self._performer.run_kind
        if self.client_tools and kind != "chain":
            raise BadRequest(
                422, f"a {kind} served alone takes no frontend tools: serve an agent", "tools"
            )
        if kind == "chat_model":
            return messages
        if kind == "tool":
            raise BadRequest(422, "a tool takes its arguments as input, not messages", "messages")
        if self.client_tools:  # the frontend's tools: offered to the model, called by it
            return {"messages": messages, "tools": self.client_tools}
        return {"messages": messages}

    def _coerced(self, raw_input: Any) -> Any:
        try:
            return self._performer.coerce_input(raw_input)
        except (TypeError, ValueError) as exc:
            field = "tools" if self.client_tools and "tools" in str(exc) else "input"
            raise BadRequest(422, str(exc), field) from None

    def after_thread(self, stored: list[Any]) -> None:
        """A frontend's conversation on a thread that holds ``stored`` (protocol
        messages): only its new messages are the input (the thread's come first).

        Raises:
            BadRequest: a 409 if the body's history differs from the thread's.
        """
        if self.said is None or self.thread is None:
            return
        start = new_messages(self.said, stored, self.thread)
        self.input = self._coerced(self._as_input([m for _, m in self.said[start:]]))


_QUERY_BOOLS: Final = {"true": True, "1": True, "false": False, "0": False}


def _checked_state(body: dict[str, Any], config: object) -> dict[str, Any] | None:
    """The shared state a body gives its run (AG-UI's ``state``), checked; ``None`` if
    none (a ``config.state`` is checked with the config)."""
    state = body.get("state")
    if state is None:
        return None
    if not isinstance(state, dict):
        raise BadRequest(422, "state (AG-UI's shared state) must be an object", "state")
    if isinstance(config, dict) and config.get("state") is not None:
        raise BadRequest(422, "state is given twice: as state and as config.state", "state")
    if len(json.dumps(state)) > MAX_STATE:
        raise BadRequest(413, f"state is over {MAX_STATE:,} bytes of JSON", "state")
    return state


def _thread_of(
    server: Server,
    body: dict[str, Any],
    path_thread: str | None,
    label: str | None,
    label_field: str,
    resumed: str | None = None,
    *,
    resuming: bool = False,
) -> tuple[str | None, str]:
    """The stored thread a run request names (and the field that names it): the path's,
    ``thread_id``, ``config.thread_id``, or, with a store, a frontend's ``threadId`` /
    chat ``id`` (the two must agree); a resume's is the paused run's (``resumed``), which
    the others must name if they name one (``resuming`` one on no thread: none). Without
    a store a frontend's id only labels its stream, and naming a thread otherwise is a
    501."""
    named: list[tuple[str, str]] = [] if resumed is None else [("run_id", resumed)]
    if path_thread is not None:
        named.append(("thread_id", path_thread))
    if body.get("thread_id") is not None:
        named.append(("thread_id", checked_thread_id(body["thread_id"], "thread_id")))
    config = body.get("config")
    if isinstance(config, dict) and config.get("thread_id") is not None:
        named.append(
            ("config.thread_id", checked_thread_id(config["thread_id"], "config.thread_id"))
        )
    if resuming and resumed is None:  # (a frontend's id only labels its stream)
        if named:
            field, value = named[0]
            raise BadRequest(
                422, f"{field} names thread {value[:128]!r}, but the paused run is on none", field
            )
        return None, ""
    if not named:
        if server.stored is None or label is None or "input" in body:
            return None, ""
        return label, label_field
    if server.stored is None:
        server.the_store(named[0][0])
    if label is not None and "input" not in body:
        named.append((label_field, label))
    for field, value in named[1:]:
        if value != named[0][1]:
            first = "the paused run's thread is" if resumed is not None else f"{named[0][0]} names"
            raise BadRequest(
                422,
                f"{field} names thread {value[:128]!r}, but {first} {named[0][1][:128]!r}",
                field,
            )
    return named[0][1], named[0][0]


def _shape(body: dict[str, Any]) -> str:
    """The protocol a body's shape names, when it names none: an AG-UI
    ``RunAgentInput`` (``threadId``, ``runId``, ``messages``) wants AG-UI, a ``useChat``
    request (``id``, ``messages`` with ``parts``) the UI message stream; else events."""
    messages = body.get("messages")
    if "input" in body or not isinstance(messages, list):
        return "events"
    if "threadId" in body and "runId" in body:
        return "ag-ui"
    if "id" in body and any(isinstance(m, dict) and "parts" in m for m in messages):
        return "ui-message-stream"
    return "events"


async def _serve_stream(
    server: Server,
    live: LiveRun,
    encoder: WireEncoder,
    write: Write,
) -> None:
    """Read the run's stream to its end, publishing and writing each event."""
    stream = live.stream
    # (bound once: this loop runs for every event of every stream)
    next_event, ready = stream.__anext__, stream.ready
    publish, encode = live.publish, encoder.encode
    error: BaseException | None = None
    frames = encoder.begin()  # written with the first event
    try:
        while True:
            try:
                event = await next_event()
            except StopAsyncIteration:
                break
            # The events already waiting go out in the same write: one write per event
            # costs the server far more than encoding does.
            more = ready(BATCH)
            last = more[-1] if more else event
            if last.status is not None:
                wait = last.run_id != live.run_id  # nothing comes after the run's own end
            else:
                wait = not last.event.endswith("_stream")  # a start (or a custom event)
            if wait:
                # A run's start or end comes with others (its parent's, its child's) a
                # few scheduler passes behind: let them come, and write them together.
                for _ in range(START_END_PASSES):
                    await trio.lowlevel.cancel_shielded_checkpoint()
                more += ready(BATCH)
            frames += encode(publish(event), event)
            for other in more:
                frames += encode(publish(other), other)
            if frames:  # (a protocol may say nothing of some events)
                await write(frames[0] if len(frames) == 1 else b"".join(frames))
                frames = []
    except Exception as exc:  # the run's own error: told to the client, not raised
        error = exc
    except BaseException as exc:
        if not is_exit(exc):
            raise
        error = exc  # told to the client too, and the server stops (see `stopping`)
        server.exit_raised(exc)
    finally:
        server.runs.done(live, error)
    frames += encoder.end(error)
    if frames:
        await write(b"".join(frames))


async def _replay(
    server: Server,
    live: LiveRun,
    encoder: WireEncoder,
    after: int,
    write: Write,
) -> None:
    """Write a live run's events after position ``after``, then follow it to its end."""
    for data in encoder.begin():
        await write(data)
    position = after
    while True:
        events = live.after(position)
        if events is None:
            await write(frame(wire_json({"error": "events lost"}), event="error"))
            return
        if events:
            frames: list[bytes] = []
            for position, event in events:  # the last position is kept
                frames += encoder.encode(position, event)
            await write(b"".join(frames))
            continue  # more may have come while writing: look before waiting
        if live.finished:
            break
        await live.wait_changed()
    for data in encoder.end(live.error):
        await write(data)


def _handler(
    server: Server, fn: Callable[[Server, Request], Awaitable[Response]], *, open: bool = False
) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        try:
            if not open:
                server.check_token(request)
                request.state.identity = await server.identify(request)
            return await fn(server, request)
        except BadRequest as exc:
            return exc.response()
        except StoreError as exc:  # the store failed (it says which, and why)
            log.error("%s %s: %s", request.method, request.url.path, exc)
            return BadRequest(503, f"the store failed: {exc}").response()
        except NoStoreError as exc:
            return BadRequest(501, str(exc)).response()

    return handle


async def _health(server: Server, request: Request) -> Response:
    runtime = server.runtime
    ok = runtime is not None and not runtime.closed and not server.draining
    return WireJSONResponse(
        {"status": "ok" if ok else "unavailable", "live_runs": len(server.runs.live())},
        status_code=200 if ok else 503,
    )


async def _performers(server: Server, request: Request) -> Response:
    return WireJSONResponse(
        [
            {"name": name, "kind": p.bind()[0].run_kind, "input_schema": input_schema(p)}
            for name, p in server.performers.items()
        ]
    )


async def _start(server: Server, request: Request, protocol: str | None = None) -> RunRequest:
    if server.draining:
        raise BadRequest(503, "the server is shutting down")
    thread = request.path_params.get("thread_id")
    if thread is not None:  # /threads/{thread_id}/runs/...
        server.the_store()
        thread = checked_thread_id(thread, "thread_id")
    body = await request_body(server, request)
    if server.draining:  # it began while the body came
        raise BadRequest(503, "the server is shutting down")
    resuming = await find_resume(server, request, body)
    run = RunRequest(server, request, body, protocol, thread, resuming)
    if run.chosen and server.stored is not None:
        try:  # a run from before a restart, or of another server, holds it
            await server.stored.get_run(run.run_id)
        except UnknownRunError:
            pass
        else:
            raise BadRequest(
                409, f"run id {run.run_id!r} is taken: choose another, or none", run.run_field
            )
    if thread is not None:  # a path's thread must exist
        await visible_thread(server.the_store(), thread, request.state.identity)
    server.the_runtime()
    return run


async def _begin(
    server: Server,
    request: Request,
    run: RunRequest,
    *,
    detached: bool,
    wire: tuple[str, Callable[[], WireEncoder]] | None = None,
) -> tuple[LiveRun, Callable[[], Awaitable[None]]]:
    """Start the run and list it; returns it, and what closes it. Every path that
    leaves after this without handing ``close`` to a response must await it. A run on
    a thread waits its turn (``multitask``), holding the thread's lock until it is
    listed, so that two requests cannot both find the thread free."""
    if run.thread is None:
        return await _begin_now(server, request, run, detached=detached, wire=wire)
    thread = run.thread
    identity: Identity = request.state.identity
    stored = server.the_store(run.thread_field)

    def here() -> dict[str, Callable[[], None]]:
        return {live.run_id: live.stream.cancel for live in server.runs.on_thread(thread)}

    if run.multitask != "enqueue" and server.thread_locks.busy(thread):
        # Another request holds the lock while it waits its turn: a 409 now, or the
        # running run cancelled now, not once that request's run has started.
        await visible_thread(stored, thread, identity, create=run.thread_field)
        if run.multitask == "reject":
            await take_turn(stored, request, thread, "reject", here, lambda: server.draining)
        else:
            await interrupt(stored, await running_on(stored, thread, here()), here())
    async with server.thread_locks.hold(thread):
        await visible_thread(stored, thread, identity, create=run.thread_field)
        await take_turn(stored, request, thread, run.multitask, here, lambda: server.draining)
        if run.said is not None:
            run.after_thread((await stored.threads.history(thread, runs=0)).messages)
        return await _begin_now(server, request, run, detached=detached, wire=wire)


async def _begin_now(
    server: Server,
    request: Request,
    run: RunRequest,
    *,
    detached: bool,
    wire: tuple[str, Callable[[], WireEncoder]] | None = None,
) -> tuple[LiveRun, Callable[[], Awaitable[None]]]:
    identity: Identity = request.state.identity
    runtime = server.the_runtime()
    stream: ServedStream
    if run.resuming is not None:
        stream = resume_stream(runtime, run.performer, run.resuming, run.config, run.run_id)
    else:
        stream = runtime.astream_events(run.performer, run.input, run.config, run_id=run.run_id)
    server.board.own(run.run_id, identity.name)
    try:
        await _enter(stream, run.thread_field or "thread_id")
    except BaseException:
        server.board.disown(run.run_id)
        raise
    live = server.runs.add(
        run.run_id,
        stream,
        owner=identity.name,
        performer=run.name,
        detached=detached,
        size=getattr(request.state, "body_size", 0),
        thread_id=run.thread,
        chat=run.chat,
        wire=wire,
    )
    if server.draining:  # the drain began while it started, and did not see it
        live.stream.cancel()

    async def close() -> None:
        # Idempotent, and safe whatever state the run is in: it is cancelled if it
        # still goes, and its listing says it ended.
        server.runs.done(live, None)
        await stream.__aexit__(None, None, None)

    return live, close


async def _leave(stream: ServedStream, live: LiveRun) -> None:
    """Leave a served run's stream (cancelling the run if it still goes), telling it of
    the exit the run raised, if it did: that was seen (told to the client, and the
    server stops), and is not raised again here."""
    error = live.error if live.error is not None and is_exit(live.error) else None
    if error is None:
        await stream.__aexit__(None, None, None)
    else:
        await stream.__aexit__(type(error), error, error.__traceback__)


async def _closing_on_error(close: Callable[[], Awaitable[None]]) -> None:
    with trio.CancelScope(shield=True):
        await close()


def _wire_of(run: RunRequest) -> tuple[str, Callable[[], WireEncoder]]:
    """The run's protocol, and how its stream's encoder is made (again for a client
    that rejoins it: the same message ids, the same continued message)."""
    protocol, thread_id, run_id = run.protocol, run.thread_id, run.run_id
    state = run.config.state  # the client's (or config.state)
    resuming, continues = run.resuming, run.continues

    def make() -> WireEncoder:
        encoder: WireEncoder = (
            AGUIEncoder(thread_id, run_id, state)
            if protocol == "ag-ui"
            else PROTOCOLS[protocol](thread_id, run_id)
        )
        if resuming is not None:
            resuming.continue_stream(encoder)
        elif continues is not None and isinstance(encoder, UIMessageStreamEncoder):
            # the client's tools answered: the answer goes on in the message that
            # called them (a new id would show the message twice)
            encoder.continues(continues, [])
        return encoder

    return protocol, make


async def _stream(server: Server, request: Request, protocol: str | None = None) -> Response:
    run = await _start(server, request, protocol)
    if run.detached:
        raise BadRequest(422, "a detached run is started with POST /runs", "detached")
    wire = _wire_of(run)
    if run.resumable:
        return await _stream_resumable(server, request, run, wire)
    encoder = wire[1]()

    # Entered (and listed) here: a run that cannot start is an HTTP error, not a stream,
    # and others can join or cancel it as soon as the client has its id.
    live, close = await _begin(server, request, run, detached=False, wire=wire)
    stream = live.stream
    try:
        await _known_everywhere(server, run.run_id)

        async def produce(write: Write) -> None:
            try:
                await _serve_stream(server, live, encoder, write)
            finally:
                await _leave(stream, live)  # cancels the run if it still goes

        headers = {"x-troupe-run-id": run.run_id, **encoder.media_headers}
        return SSEResponse(produce, headers, server.heartbeat, close=close)
    except BaseException:
        await _closing_on_error(close)
        raise


async def _stream_resumable(
    server: Server, request: Request, run: RunRequest, wire: tuple[str, Callable[[], WireEncoder]]
) -> Response:
    """A run that goes on when its client leaves (``"resumable": true``): the server
    follows it as it does a detached run (it counts as one, and ends after
    ``detached_max_age``), and the client reads it as a join from its first event; a
    client that comes back (``GET /api/chat/{id}/stream``) reads it again from there,
    as the AI SDK's ``resume`` expects. A stop endpoint cancels it."""
    with _detached_slot(server):
        live, close = await _begin(server, request, run, detached=True, wire=wire)
    await _follow_detached(server, live, close)
    await _known_everywhere(server, run.run_id)
    encoder = wire[1]()

    async def produce(write: Write) -> None:
        await _replay(server, live, encoder, 0, write)

    headers = {"x-troupe-run-id": run.run_id, **encoder.media_headers}
    return SSEResponse(produce, headers, server.heartbeat)


async def _ag_ui(server: Server, request: Request) -> Response:
    return await _stream(server, request, "ag-ui")


async def _ai_chat(server: Server, request: Request) -> Response:
    return await _stream(server, request, "ui-message-stream")


async def _enter(stream: ServedStream, thread_field: str = "thread_id") -> None:
    try:
        await stream.__aenter__()
    except ValueError as exc:  # its run_id is in use
        raise BadRequest(409, str(exc), "run_id") from None
    except TypeError as exc:  # a performer that keeps no threads, on a thread
        raise BadRequest(422, str(exc), thread_field) from None
    except RunCancelledError as exc:
        raise BadRequest(503, f"the server's runtime is closing: {exc}") from None
    except TroupeError as exc:  # a cluster's host could not start it
        raise BadRequest(503, f"the run could not start: {describe_error(exc)}") from None


@contextmanager
def _detached_slot(server: Server) -> Iterator[None]:
    """A detached run's slot, held while it starts (429 if there is none)."""
    if server.detached is None:
        raise BadRequest(503, "detached runs need the app's lifespan (serve it on its own)")
    if server.runs.detached + server.detached_starting >= server.max_detached:
        raise BadRequest(
            429,
            f"the server already has {server.max_detached:,} detached runs going: "
            "wait for one to end, or cancel one (GET /runs lists them)",
            headers={"retry-after": "5"},
        )
    server.detached_starting += 1
    try:
        yield
    finally:
        server.detached_starting -= 1


async def _start_detached(server: Server, request: Request) -> Response:
    # A slot is taken before anything is awaited: a check before the body arrives
    # let 30 requests past a cap of 3 when their bodies came late.
    with _detached_slot(server):
        run = await _start(server, request)
        live, close = await _begin(server, request, run, detached=True, wire=_wire_of(run))
    await _follow_detached(server, live, close)
    await _known_everywhere(server, run.run_id)
    return WireJSONResponse({"run_id": run.run_id}, status_code=202)


async def _known_everywhere(server: Server, run_id: str) -> None:
    """Wait until the run's record is journaled, before its id is answered (a body, or
    a stream's ``x-troupe-run-id`` header): a client that joins or cancels it at once
    through another process on the store finds it there. A cancel point.

    Raises:
        BadRequest: a 503 saying why, if the record could not be written (the store
            failed, or the runtime is closing).
    """
    if server.stored is not None and server.stored.journal is not None:
        try:
            await server.stored.journal.recorded(run_id)
        except JournalError as exc:  # ("the run journal failed: store ...: why")
            raise BadRequest(503, str(exc)) from None


async def _follow_detached(
    server: Server, live: LiveRun, close: Callable[[], Awaitable[None]]
) -> None:
    """Read a detached run to its end in the server's own nursery (its readers join
    it), cancelling it once it is ``detached_max_age`` old.

    Raises:
        BadRequest: a 503 if the server is shutting down (the run is closed).
    """
    stream = live.stream
    max_age = server.detached_max_age
    nursery = server.detached

    async def discard(data: bytes) -> None:
        return None

    async def expire() -> None:
        # Cancelled (not cut): its readers still get its `cancelled` terminal event.
        assert max_age is not None
        await trio.sleep(max_age)
        live.stream.cancel()

    async def follow() -> None:
        try:
            async with trio.open_nursery() as timer:
                if max_age is not None:
                    timer.start_soon(expire)
                await _serve_stream(server, live, _Unread(), discard)
                timer.cancel_scope.cancel()
        finally:
            await _leave(stream, live)

    assert nursery is not None  # (the slot was given: the app has its lifespan)
    try:
        nursery.start_soon(follow)
    except BaseException:  # the server's nursery has closed under it
        await _closing_on_error(close)
        raise BadRequest(503, "the server is shutting down") from None


class _Unread:
    """The wire encoder of a detached run, which no client reads as it goes (joins
    encode from its buffer): nothing is encoded."""

    media_headers: ClassVar[dict[str, str]] = {}

    def begin(self) -> list[bytes]:
        return []

    def encode(self, position: int, event: StreamEvent) -> list[bytes]:
        return []

    def end(self, error: BaseException | None) -> list[bytes]:
        return []


async def _list(server: Server, request: Request) -> Response:
    identity: Identity = request.state.identity
    runs = [
        server.runs.summary(live) for live in server.runs.live() if identity.may_see(live.owner)
    ]
    if server.stored is not None:  # and the runs other processes on the store serve
        here = {run["run_id"] for run in runs}
        stored = await server.stored.list_runs(status="running", limit=1000)
        runs += [
            run_json(record)
            for record in stored
            if record.run_id not in here and identity.may_see(run_owner(record))
        ]
    return WireJSONResponse({"runs": runs})


async def _wait(server: Server, request: Request) -> Response:
    run = await _start(server, request)
    if run.detached:
        raise BadRequest(422, "a detached run is started with POST /runs", "detached")
    if run.resumable:
        raise BadRequest(422, "resumable is for streams: a wait has none", "resumable")
    live, close = await _begin(server, request, run, detached=False)
    stream = live.stream

    async def result() -> dict[str, Any]:
        error: BaseException | None = None
        # the run's shared state as its changes make it (a client that waits sees no
        # STATE_DELTA): answered beside the output when the run has one
        state = copy.deepcopy(run.config.state)
        # a resume given no state rebuilt, on the server, the one it began with
        known = run.resuming is None or state is not None
        try:
            async for event in stream:
                live.publish(event)
                if event.event == CUSTOM_EVENT and isinstance(event.data.chunk, StateDelta):
                    state, known = _changed(state, event.data.chunk, known)
        except Exception as exc:  # the run's own error
            error = exc
        except BaseException as exc:
            if not is_exit(exc):
                raise
            error = exc
            server.exit_raised(exc)
        finally:
            server.runs.done(live, error)
            await _leave(stream, live)
        if error is not None:
            answer = {"run_id": run.run_id, "status": "error", "error": describe_error(error)}
        else:
            status, output = outcome(stream)
            answer = {
                "run_id": run.run_id,
                "status": status,
                "output": json.loads(wire_json(output)),
            }
        return answer if state is None or not known else {**answer, "state": state}

    return WaitResponse(result, close)


def _changed(
    state: dict[str, Any] | None, delta: StateDelta, known: bool
) -> tuple[dict[str, Any] | None, bool]:
    """``state`` changed by ``delta`` (in place), and whether it is still known: a delta
    against a state this server never saw does not apply here."""
    if not known:
        return state, False
    try:
        return jsonpatch.apply_patch(state or {}, list(delta.patch), in_place=True), True
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException):
        return state, False


class WaitResponse(Response):
    """A JSON response made once the run is over; a client that goes away meanwhile
    cancels the run (as it does a stream's). ``close`` is awaited if the response ends
    before ``result`` was called."""

    media_type = "application/json"

    def __init__(
        self,
        result: Callable[[], Awaitable[dict[str, Any]]],
        close: Callable[[], Awaitable[None]],
    ) -> None:
        super().__init__()
        self._result = result
        self._close = close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body: dict[str, Any] = {}
        gone = trio.Event()
        started = False

        async def watch_disconnect(cancel: trio.CancelScope) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            cancel.cancel()  # the run ends with it

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_disconnect, nursery.cancel_scope)
                started = True
                body.update(await self._result())
                nursery.cancel_scope.cancel()
        finally:
            if not started:
                await _closing_on_error(self._close)
        if not gone.is_set():
            await WireJSONResponse(body)(scope, receive, send)


async def _join(server: Server, request: Request) -> Response:
    run_id = request.path_params["run_id"]
    identity: Identity = request.state.identity
    live = server.runs.get(run_id) if is_id(run_id) else None
    if live is not None and not identity.may_see(live.owner):
        live = None
    protocol = request.query_params.get("protocol", "events")
    if protocol not in PROTOCOLS:
        raise BadRequest(422, f"unknown protocol {protocol[:40]!r}", "protocol")
    header = request.headers.get("last-event-id", "0")
    last = whole_number(header)
    if last is None:
        raise BadRequest(
            422,
            f"Last-Event-ID must be a position (a whole number), got {header[:40]!r}",
            "Last-Event-ID",
        )
    if live is None or (live.after(last) is None and server.stored is not None):
        # not served here (another process's, or from before a restart), or no longer
        # in its buffer: the store has every event
        return await _join_stored(server, request, run_id, protocol, last)
    if last > live.position:  # no client was ever sent that position
        raise BadRequest(
            422,
            f"Last-Event-ID {last} is past run {run_id!r}'s last event ({live.position})",
            "Last-Event-ID",
        )
    if live.after(last) is None:
        raise BadRequest(410, f"the events of run {run_id!r} after {last} are no longer kept")
    return _join_live(server, live, protocol, last)


def _join_live(server: Server, live: LiveRun, protocol: str, last: int) -> Response:
    """A live run's events after position ``last`` (which its buffer holds), then the
    rest as they come; in the run's own protocol, the encoder its own stream has."""
    if live.wire is not None and live.wire[0] == protocol:
        encoder = live.wire[1]()
    else:
        encoder = PROTOCOLS[protocol](live.thread_id or live.run_id, live.run_id)

    async def produce(write: Write) -> None:
        await _replay(server, live, encoder, last, write)

    return SSEResponse(produce, encoder.media_headers, server.heartbeat)


async def _chat_run(
    server: Server, request: Request
) -> tuple[str, LiveRun | None, RunRecord | None]:
    """The run going on in the conversation a frontend's path names (``/api/chat/{id}``,
    ``/ag-ui/{threadId}``), which the client may see: served here, or (with a store)
    by another process on the store. Neither: no run goes on."""
    chat_id = check_id(request.path_params["chat_id"], "id")
    identity: Identity = request.state.identity
    live = server.runs.chat(chat_id)
    if live is not None and not live.finished and identity.may_see(live.owner):
        return chat_id, live, None
    if server.stored is not None:
        for record in await server.stored.list_runs(thread_id=chat_id, status="running", limit=1):
            if identity.may_see(run_owner(record)):
                return chat_id, None, record
    return chat_id, None, None


def _chat_routes(server: Server, path: str, protocol: str) -> list[Route]:
    """``GET {path}/{id}/stream``: the conversation's run going on, from its first
    event (204 if none: the AI SDK's ``resume``); ``POST {path}/{id}/stop``: cancel it
    (404 if none)."""

    async def rejoin(server: Server, request: Request) -> Response:
        _, live, record = await _chat_run(server, request)
        if live is not None:
            if live.after(0) is not None:
                return _join_live(server, live, protocol, 0)
            if server.stored is None:  # (the client replays the whole stream, or none)
                raise BadRequest(410, f"the first events of run {live.run_id!r} are no longer kept")
            return await _join_stored(server, request, live.run_id, protocol, 0)
        if record is not None:
            return await _join_stored(server, request, record.run_id, protocol, 0)
        return Response(status_code=204)

    async def stop(server: Server, request: Request) -> Response:
        chat_id, live, record = await _chat_run(server, request)
        if live is not None:
            live.stream.cancel()
            run_id = live.run_id
        elif record is not None and await server.the_store().cancel(record.run_id):
            run_id = record.run_id
        else:
            raise BadRequest(404, f"no run goes on in {chat_id!r}")
        return WireJSONResponse({"run_id": run_id, "status": "cancelling"}, status_code=202)

    return [
        Route(f"{path}/{{chat_id}}/stream", _handler(server, rejoin), methods=["GET"]),
        Route(f"{path}/{{chat_id}}/stop", _handler(server, stop), methods=["POST"]),
    ]


async def _join_stored(
    server: Server, request: Request, run_id: str, protocol: str, last: int
) -> Response:
    """Join a run from the store: its events after position ``last``, then (if it is
    live, here or in another process) the rest as they are journaled."""
    record = await server.stored_run(run_id, request.state.identity)
    stored = server.the_store()
    if record.status != "running" and last > record.events:
        # (a journal holds at least one record per event)
        raise BadRequest(
            422, f"Last-Event-ID {last} is past run {run_id!r}'s last event", "Last-Event-ID"
        )
    encoder = PROTOCOLS[protocol](record.thread_id or run_id, run_id)
    joined = stored.join(run_id, after=last)
    try:  # entered here: a run gone meanwhile is a 404, not a broken stream
        await joined.__aenter__()
    except UnknownRunError:
        raise BadRequest(404, f"no run {run_id[:128]!r}") from None

    async def close() -> None:
        await joined.__aexit__(None, None, None)

    async def produce(write: Write) -> None:
        for data in encoder.begin():
            await write(data)
        end: tuple[str | None, str | None] | None = None
        try:
            async for event in joined:
                # the events already read go out in the same write
                events = [event, *joined.ready(BATCH)]
                first = joined.position - len(events) + 1
                frames: list[bytes] = []
                for position, one in enumerate(events, start=first):
                    if one.status is not None and one.run_id == run_id:
                        end = (one.status, one.data.error)
                    frames += encoder.encode(position, one)
                if frames:
                    await write(b"".join(frames))
        finally:
            await close()
        if end is None:  # the client had every event: the record says how it ended
            try:
                ended = await stored.get_run(run_id)
            except UnknownRunError:  # deleted meanwhile
                end = (None, None)
            else:
                end = (None if ended.status == "running" else ended.status, ended.error)
        for data in encoder.end(ended_as(*end)):
            await write(data)

    return SSEResponse(produce, encoder.media_headers, server.heartbeat, close=close)


async def _cancel(server: Server, request: Request) -> Response:
    run_id = request.path_params["run_id"]
    identity: Identity = request.state.identity
    live = server.runs.get(run_id) if is_id(run_id) else None
    if live is not None and identity.may_see(live.owner):
        if live.finished:
            raise BadRequest(409, f"run {run_id!r} has already ended")
        live.stream.cancel()
        return WireJSONResponse({"run_id": run_id, "status": "cancelling"}, status_code=202)
    record = await server.stored_run(run_id, identity)
    # (a run of another process on the store, which its journal cancels)
    if record.status != "running" or not await server.the_store().cancel(run_id):
        raise BadRequest(409, f"run {run_id!r} has already ended")
    return WireJSONResponse({"run_id": run_id, "status": "cancelling"}, status_code=202)


async def _run_status(server: Server, request: Request) -> Response:
    run_id = request.path_params["run_id"]
    identity: Identity = request.state.identity
    if server.stored is not None and is_id(run_id):
        try:
            return WireJSONResponse(run_json(await server.stored_run(run_id, identity)))
        except BadRequest:
            pass  # maybe not yet journaled: the live run says
    live = server.visible_run(run_id, identity)
    return WireJSONResponse(server.runs.summary(live))


async def _threads_made(server: Server, request: Request) -> Response:
    stored = server.the_store()
    body = await json_body(request, server.max_body, server.body_timeout)
    thread_id = body.get("thread_id")
    if thread_id is not None:
        thread_id = checked_thread_id(thread_id, "thread_id")
    metadata = body.get("metadata", {})
    if not isinstance(metadata, dict):
        raise BadRequest(422, "metadata must be an object", "metadata")
    if len(json.dumps(metadata)) > MAX_CONFIG:
        raise BadRequest(413, f"metadata is over {MAX_CONFIG:,} bytes of JSON", "metadata")
    if OWNER_KEY in metadata:
        raise BadRequest(422, f"metadata {OWNER_KEY!r} is the server's", "metadata")
    identity: Identity = request.state.identity
    try:
        made = await stored.threads.create(
            thread_id, metadata={**metadata, OWNER_KEY: identity.name}
        )
    except ValueError as exc:  # taken
        raise BadRequest(409, str(exc), "thread_id") from None
    return WireJSONResponse(thread_json(made), status_code=201)


async def _threads_listed(server: Server, request: Request) -> Response:
    stored = server.the_store()
    limit = whole_number(request.query_params.get("limit", "100"))
    if limit is None or not 1 <= limit <= 1000:
        raise BadRequest(422, "limit must be a whole number from 1 to 1000", "limit")
    identity: Identity = request.state.identity
    threads = [
        thread_json(thread)
        for thread in await stored.threads.list(limit=limit)
        if identity.may_see(thread_json(thread)["owner"])
    ]
    return WireJSONResponse({"threads": threads})


async def _visible_thread(server: Server, request: Request) -> tuple[Runtime, str]:
    stored = server.the_store()
    thread_id = checked_thread_id(request.path_params["thread_id"], "thread_id")
    await visible_thread(stored, thread_id, request.state.identity)
    return stored, thread_id


async def _thread(server: Server, request: Request) -> Response:
    stored, thread_id = await _visible_thread(server, request)
    return WireJSONResponse(thread_json(await stored.threads.get(thread_id)))


async def _thread_history(server: Server, request: Request) -> Response:
    stored, thread_id = await _visible_thread(server, request)
    history = await stored.threads.history(thread_id)
    return WireJSONResponse(
        {
            "thread": thread_json(history.thread),
            "messages": [
                {"role": getattr(m, "role", None), **json.loads(wire_json(m))}
                for m in history.messages
            ],
            "added_by": history.added_by,
            "runs": [run_json(run) for run in history.runs],
        }
    )


async def _thread_deleted(server: Server, request: Request) -> Response:
    stored, thread_id = await _visible_thread(server, request)

    async def refuse_if_going() -> None:
        going = server.runs.on_thread(thread_id) or await stored.list_runs(
            thread_id=thread_id, status="running", limit=1
        )
        if going:
            raise BadRequest(409, f"thread {thread_id[:128]!r} has a run going: cancel it first")

    if server.thread_locks.busy(thread_id):  # (a 409 now, not once the lock is free)
        await refuse_if_going()
    async with server.thread_locks.hold(thread_id):
        await refuse_if_going()
        ended = await stored.list_runs(thread_id=thread_id, limit=1 << 30)
        await stored.threads.delete(thread_id)
    for record in ended:  # what this server keeps of them for late readers goes too
        server.runs.forget(record.run_id)
    return WireJSONResponse({"thread_id": thread_id, "deleted": True})


def asgi_app(
    performers: Runnable[Any] | Mapping[str, Runnable[Any]],
    *,
    runtime: RunHost | None = None,
    token: str | None = None,
    auth: AuthHook | None = None,
    cors_origins: list[str] | None = None,
    allow_hosts: Iterable[str] = (),
    heartbeat: float = DEFAULT_HEARTBEAT,
    max_body: int = DEFAULT_MAX_BODY,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    replay: int = DEFAULT_REPLAY,
    history: int = DEFAULT_HISTORY,
    max_detached: int = DEFAULT_MAX_DETACHED,
    detached_max_age: float | None = DEFAULT_DETACHED_MAX_AGE,
    max_requests: int | None = None,
    store: Store | str | None = None,
    retention: float | None = None,
) -> Starlette:
    """The ASGI app serving ``performers`` (one, or a dict of them by name).

    With ``runtime``, runs go to that runtime (open it around the server, e.g. in your
    own app's lifespan), or to a cluster's ``actors.ray.RayRuntime`` (serve its
    ``performers``); without, the app opens one in its lifespan. Endpoints:
    ``POST /runs/stream`` (SSE; ``POST /ag-ui`` and ``POST /api/chat`` in AG-UI's and the
    AI SDK's protocols), ``POST /runs/wait`` (JSON), ``POST /runs`` (a detached
    run), ``GET /runs`` (the live runs), ``GET /runs/{run_id}/stream`` (join;
    ``Last-Event-ID`` resumes), ``POST /runs/{run_id}/cancel``,
    ``POST /runs/{run_id}/resume`` (a paused run, with a person's decisions; AG-UI's
    ``resume`` and the AI SDK's approvals resume too), ``GET /performers``,
    ``GET /health``; and the run viewer, a page at ``/`` that shows the runs live.

    Every request is checked before a handler sees it: its ``Host`` must be a loopback
    name, an IP address, or one of ``allow_hosts``; a ``POST`` from a browser page of
    another origin is refused unless ``cors_origins`` allows it; a body must be
    ``application/json``. Run and thread ids a client gives must be 1 to 128 ASCII
    letters, digits, ``.``, ``_``, ``:`` or ``-``, starting with a letter or digit.

    Args:
        token: when given, every endpoint but ``/health`` needs
            ``Authorization: Bearer <token>`` (compared in constant time; surrounding
            spaces are not part of it).
        auth: a function of the request to its ``Identity``, or ``None`` to refuse it
            (see ``actors.serve.Identity``); each client then sees only its own runs.
        cors_origins: origins allowed by CORS (none by default).
        allow_hosts: host names served besides loopback names and IP addresses
            (``*.example.com`` for a domain's names, ``*`` for any).
        heartbeat: seconds of silence after which a stream gets a comment line.
        max_body: the largest request body, in bytes (413 beyond).
        body_timeout: seconds a client has to send a whole body (408 beyond).
        replay: events each live run keeps for clients that join late.
        history: root runs (with their trees) the viewer keeps after they end.
        max_detached: detached runs going at once (429 beyond).
        detached_max_age: seconds after which a detached run is cancelled (``None``:
            never).
        max_requests: requests in progress at once, streams included (503 beyond,
            ``/health`` excepted); by default 4,096, or fewer if the process may open
            fewer files.
        store: where the runtime the app opens journals its runs (a ``runtime.Store``
            or its URL, ``sqlite:///runs.db``); a ``runtime`` you pass brings its own
            (``open_runtime(store=...)``). With a store, runs outlive their process
            (joins, status and cancels reach them through the store, after a restart
            or in another process on it), and the ``/threads`` endpoints keep
            conversations; without, they answer 501.
        retention: with a store, seconds after which ended runs (and threads idle as
            long) are deleted, checked every tenth of it (at most hourly).

    Raises:
        TypeError, ValueError: a bad argument, named.
    """
    named = named_performers(performers)
    if store is not None and runtime is not None:
        raise ValueError("give a store or a runtime (opened with its store), not both")
    if store is not None and not isinstance(store, Store | str):
        raise TypeError(f"store must be a Store or its URL, got {type(store).__name__}")
    seconds(heartbeat, "heartbeat")
    seconds(body_timeout, "body_timeout")
    for value, what in ((retention, "retention"), (detached_max_age, "detached_max_age")):
        if value is not None:
            seconds(value, what)
    for value, what in (
        (max_body, "max_body"),
        (replay, "replay"),
        (history, "history"),
        (max_detached, "max_detached"),
        (1 if max_requests is None else max_requests, "max_requests"),
    ):
        positive_int(value, what)
    if token is not None:
        if not isinstance(token, str) or not token.strip():
            raise ValueError("token must be a non-empty string")
        token = token.strip()  # a header's value never keeps surrounding spaces
        if not (token.isascii() and token.isprintable()):
            # a header carries ASCII: any other token could never match one
            raise ValueError("token must be printable ASCII (as a header carries it)")
    if auth is not None and not callable(auth):
        raise TypeError(f"auth must be a function of the request, got {type(auth).__name__}")
    hosts = list(allow_hosts)
    if not all(isinstance(host, str) and host.strip() for host in hosts):
        raise ValueError(f"allow_hosts must be host names, got {hosts!r}")
    if "*" in hosts and token is None and auth is None:
        log.warning(
            "the server answers to every host name and has no token: a DNS-rebinding page "
            "can start runs and read them (give it a token, or name the hosts)"
        )
    if cors_origins and "*" in cors_origins and token is None and auth is None:
        log.warning(
            "CORS allows every origin and the server has no token: any web page can "
            "start runs and read them (give it a token, or name the origins)"
        )
    server = Server(
        named,
        runtime,
        token=token,
        auth=auth,
        heartbeat=heartbeat,
        max_body=max_body,
        replay=replay,
        history=history,
        body_timeout=body_timeout,
        max_detached=max_detached,
        detached_max_age=detached_max_age,
        store=store,
        retention=retention,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with trio.open_nursery() as nursery:
            server.detached = nursery
            if server.runtime is None:
                async with open_runtime(store=server.store) as opened:
                    server.started(opened)
                    await server.watch(opened)
                    if server.retention is not None:
                        nursery.start_soon(server.keep_within, server.retention)
                    try:
                        yield
                    finally:
                        await server.drain()
                        nursery.cancel_scope.cancel()
            else:
                server.started(server.runtime)
                await server.watch(server.runtime)
                if server.retention is not None:
                    nursery.start_soon(server.keep_within, server.retention)
                try:
                    yield
                finally:
                    await server.drain()
                    server.unwatch()
                    nursery.cancel_scope.cancel()

    routes = [
        Route("/health", _handler(server, _health, open=True), methods=["GET"]),
        Route("/performers", _handler(server, _performers), methods=["GET"]),
        Route("/runs", _handler(server, _start_detached), methods=["POST"]),
        Route("/runs", _handler(server, _list), methods=["GET"]),
        Route("/runs/stream", _handler(server, _stream), methods=["POST"]),
        # where a frontend looks by itself: AG-UI's agent URL, the AI SDK's /api/chat
        Route("/ag-ui", _handler(server, _ag_ui), methods=["POST"]),
        Route("/api/chat", _handler(server, _ai_chat), methods=["POST"]),
        *_chat_routes(server, "/api/chat", "ui-message-stream"),
        *_chat_routes(server, "/ag-ui", "ag-ui"),
        Route("/runs/wait", _handler(server, _wait), methods=["POST"]),
        Route("/runs/{run_id}", _handler(server, _run_status), methods=["GET"]),
        Route("/runs/{run_id}/stream", _handler(server, _join), methods=["GET"]),
        Route("/runs/{run_id}/cancel", _handler(server, _cancel), methods=["POST"]),
        Route("/threads", _handler(server, _threads_made), methods=["POST"]),
        Route("/threads", _handler(server, _threads_listed), methods=["GET"]),
        Route("/threads/{thread_id}", _handler(server, _thread), methods=["GET"]),
        Route("/threads/{thread_id}", _handler(server, _thread_deleted), methods=["DELETE"]),
        Route("/threads/{thread_id}/history", _handler(server, _thread_history), methods=["GET"]),
        Route("/threads/{thread_id}/runs/stream", _handler(server, _stream), methods=["POST"]),
        Route("/threads/{thread_id}/runs/wait", _handler(server, _wait), methods=["POST"]),
        *resume_routes(server, _handler, _stream, _wait),
        *viewer_routes(server, _handler),
    ]
    middleware = [
        Middleware(
            Guard,
            hosts=HostRule(hosts),
            cors_origins=cors_origins or (),
            max_requests=max_requests or default_max_requests(),
        ),
    ]
    if cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=cors_origins,
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=[
                    "authorization",
                    "content-type",
                    "last-event-id",
                    "traceparent",
                    "tracestate",
                ],
                expose_headers=["x-troupe-run-id"],
            )
        )
    app = _KeepRawSend(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.troupe = server
    return app


class _KeepRawSend(Starlette):
    """Starlette, keeping the server's own ``send`` in the scope (see SSEResponse)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope[RAW_SEND] = send
        try:
            await super().__call__(scope, receive, send)
        finally:
            # the server's send holds the scope: kept in it, the two are a cycle that
            # only a full collection frees, with every request's objects
            del scope[RAW_SEND]
