"""The ASGI app: performers served over HTTP with server-sent events.

Starlette does the routing, parsing and CORS (it runs under trio through anyio);
the app keeps to trio itself for the streams, so that a client's disconnect cancels
its run and a slow client holds back only its own run (its stream's backpressure).
"""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import trio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from runtime import (
    Performer,
    RunCancelledError,
    Runnable,
    TroupeError,
    describe_error,
    make_config,
    new_run_id,
    open_runtime,
)

from .._targets import named_performers
from ._board import DEFAULT_HISTORY, RunBoard
from ._runs import DEFAULT_REPLAY, LiveRun, LiveRuns, RunHost, ServedStream
from ._viewer import routes as viewer_routes
from ._wire import PROTOCOLS, WireEncoder, frame, to_json

DEFAULT_HEARTBEAT: Final = 15.0
"""Seconds of silence after which a stream gets a comment line (keeps proxies open)."""
DEFAULT_MAX_BODY: Final = 1 << 20
DRAIN_GRACE: Final = 10.0
"""How long a server shutting down waits for its runs to send their last events."""
PING: Final = b": ping\n\n"
RAW_SEND: Final = "troupe.raw_send"
"""Where the app keeps the server's own ``send`` in the request's scope."""
START_END_PASSES: Final = 3
"""Scheduler passes a stream waits, after a run's start or end, for the starts and ends
that follow it (a model's start is three passes behind its agent's) to share its write."""
BATCH: Final = 256
"""At most this many waiting events are written at once."""
BOARD_CAPACITY: Final = 8192
"""Events the viewer's subscription holds before it drops the oldest."""


class BadRequest(Exception):
    """A request the server refuses, with its status code and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": str(self)}
        if self.field is not None:
            body["field"] = self.field
        return JSONResponse(body, status_code=self.status)


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
    ) -> None:
        self.performers = dict(performers)
        self.board = RunBoard(history)
        self.runtime = runtime
        self.token = token
        self.heartbeat = heartbeat
        self.max_body = max_body
        self.runs = LiveRuns(replay)
        self.detached: trio.Nursery | None = None
        self.draining = False

    def the_runtime(self) -> RunHost:
        if self.runtime is None or self.runtime.closed:
            raise BadRequest(503, "the server's runtime is not running")
        return self.runtime

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
                404, f"no performer named {name!r}; there are {sorted(self.performers)}"
            )
        return name, found

    def check_token(self, request: Request) -> None:
        if self.token is None:
            return
        given = request.headers.get("authorization", "")
        if not given and request.method == "GET":
            # a browser's page and EventSource cannot set headers: ?token= for reads
            given = f"Bearer {request.query_params.get('token', '')}"
        expected = f"Bearer {self.token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise BadRequest(401, "a bearer token is needed (Authorization: Bearer ...)")

    async def watch(self, runtime: RunHost) -> None:
        """Feed the viewer's board from every run of ``runtime``, never holding one up."""
        self.board.attachment = await runtime.subscribe(
            self.board, drop_oldest=True, capacity=BOARD_CAPACITY
        )

    def unwatch(self) -> None:
        """The app is shutting down: a runtime that outlives it stops feeding the board."""
        if self.board.attachment is not None:
            self.board.attachment.close()

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


def whole_number(text: str) -> int | None:
    """``text`` (a header's value) as a whole number, or ``None``: ASCII digits only (a
    superscript two is a digit to ``str.isdigit`` but not to ``int``), and at most 18 of
    them (``int`` refuses strings of over 4,300 digits, and no position is that far)."""
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    return None


async def _json_body(request: Request, limit: int) -> dict[str, Any]:
    length = request.headers.get("content-length")
    if length is not None and (whole_number(length) or 0) > limit:
        raise BadRequest(413, f"the body is over {limit:,} bytes")
    body = b""
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise BadRequest(413, f"the body is over {limit:,} bytes")
    if not body:
        return {}
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(400, f"the body is not JSON: {exc}", "body") from None
    if not isinstance(value, dict):
        raise BadRequest(422, "the body must be a JSON object", "body")
    return value


class RunRequest:
    """What a client asked to run, parsed and checked, in any of the body shapes: Troupe's
    own (``{"performer", "input", "config", "protocol"}``), an AG-UI ``RunAgentInput``
    (``{"threadId", "runId", "messages", ...}``), or a Vercel AI ``useChat`` request
    (``{"id", "messages"}``)."""

    def __init__(self, server: Server, request: Request, body: dict[str, Any]) -> None:
        query = request.query_params
        self.protocol = body.get("protocol") or query.get("protocol") or "events"
        if not isinstance(self.protocol, str) or self.protocol not in PROTOCOLS:
            raise BadRequest(
                422,
                f"unknown protocol {self.protocol!r}; one of {', '.join(PROTOCOLS)}",
                "protocol",
            )
        self.name, self.performer = server.performer(
            body.get("performer") or query.get("performer")
        )
        self.thread_id = str(body.get("threadId") or body.get("id") or "")
        run_id = body.get("runId") if "runId" in body else body.get("run_id")
        if run_id is not None and (not isinstance(run_id, str) or not run_id):
            raise BadRequest(422, "run_id must be a non-empty string", "run_id")
        self.run_id: str = run_id or new_run_id()
        self.thread_id = self.thread_id or self.run_id
        raw_input = body["input"] if "input" in body else _from_messages(body.get("messages"))
        performer: Performer[Any, Any] = self.performer.bind()[0]
        try:
            self.input = performer.coerce_input(raw_input)
        except (TypeError, ValueError) as exc:
            raise BadRequest(422, str(exc), "input") from None
        # A request that is part of a trace (W3C ``traceparent``) carries it into the
        # run's metadata: an OpenTelemetry exporter continues that trace.
        traceparent = request.headers.get("traceparent")
        try:
            self.config = make_config(
                body.get("config"),
                metadata={"traceparent": traceparent} if traceparent else None,
            )
        except (TypeError, ValueError) as exc:
            raise BadRequest(422, f"config: {exc}", "config") from None
        if self.config.callbacks:
            raise BadRequest(422, "config: callbacks cannot come over HTTP", "config")
        self.detached = body.get("detached", False)
        if not isinstance(self.detached, bool):  # "false" is a string, and true
            raise BadRequest(422, "detached must be true or false", "detached")


def _from_messages(messages: object) -> Any:
    """The last user message's text, from AG-UI's or the AI SDK's messages."""
    if not isinstance(messages, list):
        raise BadRequest(422, "give the run an input (or a list of messages)", "input")
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        parts = message.get("parts") or content
        if isinstance(parts, list):
            texts = [p.get("text") for p in parts if isinstance(p, dict)]
            return "".join(text for text in texts if isinstance(text, str))
    raise BadRequest(422, "the messages hold no user message", "messages")


class SSEResponse(Response):
    """A response whose body is written by ``produce(write)`` as server-sent events.

    A task watches for the client's disconnect and cancels the producer, which leaves
    the run's stream, which cancels the run."""

    media_type = "text/event-stream"

    def __init__(
        self,
        produce: Callable[[Callable[[bytes], Awaitable[None]]], Awaitable[None]],
        headers: Mapping[str, str],
        heartbeat: float,
    ) -> None:
        super().__init__(
            headers={"cache-control": "no-cache", "x-accel-buffering": "no", **headers}
        )
        # A stream has no length: Starlette gave the empty body one.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self._produce = produce
        self._heartbeat = heartbeat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sending = trio.Lock()
        wrote = [False]
        # The body goes straight to the server's own send: the middleware in between
        # (errors, CORS) acts on the response's start only, and each of its layers
        # costs every token of every stream a few microseconds.
        send_body: Send = scope.get(RAW_SEND, send)

        async def write(data: bytes) -> None:
            if sending.locked():  # a heartbeat is being written: wait for it, in turn
                async with sending:
                    await send_body({"type": "http.response.body", "body": data, "more_body": True})
            else:
                # Taken without `async with`: its acquire is a scheduler pass of its own,
                # and the send below is already this call's checkpoint.
                sending.acquire_nowait()
                try:
                    await send_body({"type": "http.response.body", "body": data, "more_body": True})
                finally:
                    sending.release()
            wrote[0] = True

        async def watch_client(cancel: trio.CancelScope) -> None:
            # One task a stream both waits for the client to leave and keeps an idle
            # stream open: a second task per stream costs every stream's start and end.
            while True:
                with trio.move_on_after(self._heartbeat):
                    if (await receive())["type"] == "http.disconnect":
                        cancel.cancel()
                        return
                    continue
                if not wrote[0]:  # silent for a whole interval
                    async with sending:
                        await send_body(
                            {"type": "http.response.body", "body": PING, "more_body": True}
                        )
                wrote[0] = False

        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_client, nursery.cancel_scope)
            await self._produce(write)
            async with sending:
                await send_body({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()


async def _serve_stream(
    server: Server,
    live: LiveRun,
    encoder: WireEncoder,
    write: Callable[[bytes], Awaitable[None]],
) -> None:
    """Read the run's stream to its end, publishing and writing each event."""
    stream = live.stream
    error: BaseException | None = None
    frames = encoder.begin()  # written with the first event
    try:
        while True:
            try:
                event = await stream.__anext__()
            except StopAsyncIteration:
                break
            # The events already waiting go out in the same write: one write per event
            # costs the server far more than encoding does.
            events = [event, *stream.ready(BATCH)]
            last = events[-1]
            if last.status is not None:
                wait = last.run_id != live.run_id  # nothing comes after the run's own end
            else:
                wait = not last.event.endswith("_stream")  # a start (or a custom event)
            if wait:
                # A run's start or end comes with others (its parent's, its child's) a
                # few scheduler passes behind: let them come, and write them together.
                for _ in range(START_END_PASSES):
                    await trio.lowlevel.cancel_shielded_checkpoint()
                events += stream.ready(BATCH)
            for ready in events:
                frames += encoder.encode(live.publish(ready), ready)
            if frames:  # (a protocol may say nothing of some events)
                await write(b"".join(frames))
                frames = []
    except Exception as exc:  # the run's own error: told to the client, not raised
        error = exc
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
    write: Callable[[bytes], Awaitable[None]],
) -> None:
    """Write a live run's events after position ``after``, then follow it to its end."""
    for data in encoder.begin():
        await write(data)
    position = after
    while True:
        events = live.after(position)
        if events is None:
            await write(frame(to_json({"error": "events lost"}), event="error"))
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
            return await fn(server, request)
        except BadRequest as exc:
            return exc.response()

    return handle


async def _health(server: Server, request: Request) -> Response:
    runtime = server.runtime
    ok = runtime is not None and not runtime.closed and not server.draining
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "live_runs": len(server.runs.live())},
        status_code=200 if ok else 503,
    )


async def _performers(server: Server, request: Request) -> Response:
    return JSONResponse(
        [
            {"name": name, "kind": p.bind()[0].run_kind, "input_schema": input_schema(p)}
            for name, p in server.performers.items()
        ]
    )


def input_schema(target: Runnable[Any]) -> dict[str, Any]:
    """The JSON schema of what a performer takes as ``input``."""
    performer = target.bind()[0]
    parameters = getattr(performer, "parameters", None)
    if performer.run_kind == "tool" and isinstance(parameters, dict):
        return parameters
    message = {
        "type": "object",
        "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
        "required": ["role", "content"],
    }
    messages = {"type": "array", "items": message}
    if performer.run_kind == "chat_model":
        return {"anyOf": [{"type": "string"}, messages]}
    return {
        "anyOf": [
            {"type": "string"},
            {
                "type": "object",
                "properties": {"input": {"type": "string"}, "chat_history": messages},
                "required": ["input"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"messages": messages},
                "required": ["messages"],
                "additionalProperties": False,
            },
        ]
    }


async def _start(server: Server, request: Request) -> tuple[RunRequest, ServedStream]:
    if server.draining:
        raise BadRequest(503, "the server is shutting down")
    body = await _json_body(request, server.max_body)
    run = RunRequest(server, request, body)
    runtime = server.the_runtime()
    stream = runtime.astream_events(run.performer, run.input, run.config, run_id=run.run_id)
    return run, stream


async def _stream(server: Server, request: Request) -> Response:
    run, stream = await _start(server, request)
    encoder = PROTOCOLS[run.protocol](run.thread_id, run.run_id)
    if run.detached:
        raise BadRequest(422, "a detached run is started with POST /runs", "detached")

    # Entered (and listed) here: a run that cannot start is an HTTP error, not a stream,
    # and others can join or cancel it as soon as the client has its id.
    await _enter(stream)
    live = server.runs.add(run.run_id, stream)

    async def produce(write: Callable[[bytes], Awaitable[None]]) -> None:
        try:
            await _serve_stream(server, live, encoder, write)
        finally:
            await stream.__aexit__(None, None, None)  # cancels the run if it still goes

    headers = {"x-troupe-run-id": run.run_id, **encoder.media_headers}
    return SSEResponse(produce, headers, server.heartbeat)


async def _enter(stream: ServedStream) -> None:
    try:
        await stream.__aenter__()
    except ValueError as exc:  # its run_id is in use
        raise BadRequest(409, str(exc), "run_id") from None
    except RunCancelledError as exc:
        raise BadRequest(503, f"the server's runtime is closing: {exc}") from None
    except TroupeError as exc:  # a cluster's host could not start it
        raise BadRequest(503, f"the run could not start: {describe_error(exc)}") from None


async def _start_detached(server: Server, request: Request) -> Response:
    run, stream = await _start(server, request)
    nursery = server.detached
    if nursery is None:
        raise BadRequest(503, "detached runs need the app's lifespan (serve it on its own)")

    await _enter(stream)
    live = server.runs.add(run.run_id, stream)

    async def discard(data: bytes) -> None:
        return None

    async def follow() -> None:
        try:
            await _serve_stream(server, live, PROTOCOLS["events"]("", run.run_id), discard)
        finally:
            await stream.__aexit__(None, None, None)

    nursery.start_soon(follow)
    return JSONResponse({"run_id": run.run_id}, status_code=202)


async def _wait(server: Server, request: Request) -> Response:
    run, stream = await _start(server, request)
    await _enter(stream)
    live = server.runs.add(run.run_id, stream)

    async def result() -> dict[str, Any]:
        error: BaseException | None = None
        try:
            async for event in stream:
                live.publish(event)
        except Exception as exc:  # the run's own error
            error = exc
        finally:
            server.runs.done(live, error)
            await stream.__aexit__(None, None, None)
        if error is not None:
            return {"run_id": run.run_id, "status": "error", "error": describe_error(error)}
        output = json.loads(to_json(stream.output))
        return {"run_id": run.run_id, "status": "ok", "output": output}

    return WaitResponse(result)


class WaitResponse(Response):
    """A JSON response made once the run is over; a client that goes away meanwhile
    cancels the run (as it does a stream's)."""

    media_type = "application/json"

    def __init__(self, result: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        super().__init__()
        self._result = result

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body: dict[str, Any] = {}
        gone = trio.Event()

        async def watch_disconnect(cancel: trio.CancelScope) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            cancel.cancel()  # the run ends with it

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_disconnect, nursery.cancel_scope)
            body.update(await self._result())
            nursery.cancel_scope.cancel()
        if not gone.is_set():
            await JSONResponse(body)(scope, receive, send)


async def _join(server: Server, request: Request) -> Response:
    run_id = request.path_params["run_id"]
    live = server.runs.get(run_id)
    if live is None:
        raise BadRequest(404, f"no live run {run_id!r}")
    protocol = request.query_params.get("protocol", "events")
    if protocol not in PROTOCOLS:
        raise BadRequest(422, f"unknown protocol {protocol!r}", "protocol")
    header = request.headers.get("last-event-id", "0")
    last = whole_number(header)
    if last is None:
        raise BadRequest(
            422,
            f"Last-Event-ID must be a position (a whole number), got {header[:40]!r}",
            "Last-Event-ID",
        )
    if last > live.position:  # no client was ever sent that position
        raise BadRequest(
            422,
            f"Last-Event-ID {last} is past run {run_id!r}'s last event ({live.position})",
            "Last-Event-ID",
        )
    if live.after(last) is None:
        raise BadRequest(410, f"the events of run {run_id!r} after {last} are no longer kept")
    encoder = PROTOCOLS[protocol](run_id, run_id)

    async def produce(write: Callable[[bytes], Awaitable[None]]) -> None:
        await _replay(server, live, encoder, last, write)

    return SSEResponse(produce, encoder.media_headers, server.heartbeat)


async def _cancel(server: Server, request: Request) -> Response:
    run_id = request.path_params["run_id"]
    live = server.runs.get(run_id)
    if live is None:
        raise BadRequest(404, f"no live run {run_id!r}")
    if live.finished:
        raise BadRequest(409, f"run {run_id!r} has already ended")
    live.stream.cancel()
    return JSONResponse({"run_id": run_id, "status": "cancelling"}, status_code=202)


def asgi_app(
    performers: Runnable[Any] | Mapping[str, Runnable[Any]],
    *,
    runtime: RunHost | None = None,
    token: str | None = None,
    cors_origins: list[str] | None = None,
    heartbeat: float = DEFAULT_HEARTBEAT,
    max_body: int = DEFAULT_MAX_BODY,
    replay: int = DEFAULT_REPLAY,
    history: int = DEFAULT_HISTORY,
) -> Starlette:
    """The ASGI app serving ``performers`` (one, or a dict of them by name).

    With ``runtime``, runs go to that runtime (open it around the server, e.g. in your
    own app's lifespan), or to a cluster's ``actors.ray.RayRuntime`` (serve its
    ``performers``); without, the app opens one in its lifespan. Endpoints:
    ``POST /runs/stream`` (SSE), ``POST /runs/wait`` (JSON), ``POST /runs`` (a detached
    run), ``GET /runs/{run_id}/stream`` (join; ``Last-Event-ID`` resumes),
    ``POST /runs/{run_id}/cancel``, ``GET /performers``, ``GET /health``; and the run
    viewer, a page at ``/`` that shows every run of the runtime live.

    Args:
        token: when given, every endpoint but ``/health`` needs
            ``Authorization: Bearer <token>`` (compared in constant time).
        cors_origins: origins allowed by CORS (none by default).
        heartbeat: seconds of silence after which a stream gets a comment line.
        max_body: the largest request body, in bytes (413 beyond).
        replay: events each live run keeps for clients that join late.
        history: root runs (with their trees) the viewer keeps after they end.

    Raises:
        TypeError, ValueError: a bad argument, named.
    """
    named = named_performers(performers)
    if not isinstance(heartbeat, int | float) or not math.isfinite(heartbeat) or heartbeat <= 0:
        raise ValueError(f"heartbeat must be a finite number of seconds > 0, got {heartbeat!r}")
    for value, what in ((max_body, "max_body"), (replay, "replay"), (history, "history")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{what} must be a positive integer, got {value!r}")
    if token is not None and (not isinstance(token, str) or not token):
        raise ValueError("token must be a non-empty string")
    server = Server(
        named,
        runtime,
        token=token,
        heartbeat=heartbeat,
        max_body=max_body,
        replay=replay,
        history=history,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with trio.open_nursery() as nursery:
            server.detached = nursery
            if server.runtime is None:
                async with open_runtime() as opened:
                    server.runtime = opened
                    await server.watch(opened)
                    try:
                        yield
                    finally:
                        await server.drain()
                        nursery.cancel_scope.cancel()
            else:
                await server.watch(server.runtime)
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
        Route("/runs/stream", _handler(server, _stream), methods=["POST"]),
        Route("/runs/wait", _handler(server, _wait), methods=["POST"]),
        Route("/runs/{run_id}/stream", _handler(server, _join), methods=["GET"]),
        Route("/runs/{run_id}/cancel", _handler(server, _cancel), methods=["POST"]),
        *viewer_routes(server, _handler),
    ]
    middleware = []
    if cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type", "last-event-id"],
                expose_headers=["x-troupe-run-id"],
            )
        )
    app = _KeepRawSend(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.troupe = server
    return app


class _KeepRawSend(Starlette):
    """Starlette, keeping the server's own ``send`` in the scope (see SSEResponse)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[RAW_SEND] = send
        await super().__call__(scope, receive, send)
