"""The run viewer's endpoints: the page at ``/`` (HTML, CSS and JavaScript shipped in the
package, nothing fetched from elsewhere), and what it reads from the board.

The page and its files hold no data, so they are served without the token: a browser
could not send one with them (a stylesheet's or a script's request carries no header of
the page's). The page takes the token from its address's fragment (``/#token=...``,
which a browser never sends, so it is in no server's log), or asks for it; keeps it in
the tab's ``sessionStorage``; removes it from the address (so from the tab's history);
and sends it as ``Authorization: Bearer`` with every request for data. Everything else,
the runs, trees, records and messages, is behind the token and the auth hook, and shows
a client only the runs its identity may see; another's run is not told apart from a run
the board does not have.

The page is a playground too, through the app's own endpoints and nothing else: it reads
``GET /performers`` (names, kinds, input schemas), starts runs with ``POST /runs`` (JSON,
with the token's header; the server refuses a cross-origin post, and the page is
same-origin), and cancels them with ``POST /runs/{run_id}/cancel``; a run it starts is
owned by its identity, like any run started over HTTP.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

import trio
from starlette.requests import Request
from starlette.responses import Response

from ._errors import BadRequest
from ._sse import SSEResponse, whole_number
from ._wire import WireJSONResponse, frame, wire_json

if TYPE_CHECKING:
    from ._auth import Identity
    from ._board import RunBoard
    from ._runs import LiveRuns


class Server(Protocol):
    """What the viewer's endpoints need of the app's server (the app's ``Server``,
    which imports this module)."""

    board: RunBoard
    heartbeat: float
    runs: LiveRuns


ASSETS: Final = {
    "index.html": "text/html; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
    "viewer.css": "text/css; charset=utf-8",
}
SEND_AT_ONCE: Final = 512
"""Messages a browser is sent in one write, at most."""
WRITE_BYTES: Final = 64 << 10
"""Bytes of messages a browser is sent in one write, at most (but for one message
bigger than that, sent alone): what a browser that reads slowly, or not at all, holds
of the server's memory while the write waits for it."""


def asset(name: str) -> bytes:
    """One of the page's files, from the package."""
    return (importlib.resources.files("actors.serve") / "viewer" / name).read_bytes()


async def page(server: Server, request: Request) -> Response:
    return Response(asset("index.html"), media_type=ASSETS["index.html"])


async def static(server: Server, request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS or name == "index.html":
        raise BadRequest(404, f"no viewer file {name!r}")
    return Response(asset(name), media_type=ASSETS[name], headers={"cache-control": "no-cache"})


async def recent(server: Server, request: Request) -> Response:
    board = server.board
    return WireJSONResponse(
        {
            "runs": board.recent(_identity(request)),
            "seq": board.seq,
            "dropped": board.dropped,
            "history": board.history,
        }
    )


def _identity(request: Request) -> Identity:
    identity: Identity = request.state.identity
    return identity


def _unknown(run_id: str) -> BadRequest:
    return BadRequest(404, f"run {run_id[:128]!r} is not in the viewer's history")


async def tree(server: Server, request: Request) -> Response:
    root_id = request.path_params["run_id"]
    runs = server.board.tree(root_id, _identity(request))
    if runs is None:
        raise _unknown(root_id)
    return Response(
        wire_json({"runs": runs, "seq": server.board.seq}), media_type="application/json"
    )


async def record(server: Server, request: Request) -> Response:
    run_id = request.path_params["run_id"]
    found = server.board.record(run_id, _identity(request))
    if found is None:
        raise _unknown(run_id)
    return Response(wire_json(found), media_type="application/json")


async def events(server: Server, request: Request) -> Response:
    """Server-sent events of the board's ring: from ``Last-Event-ID`` when the browser
    reconnects, else from now; only messages of runs the client's identity may see. A
    browser too far behind is sent ``gap`` with how many messages it missed, and catches
    up from the records; one whose id is past the ring's last (the server restarted
    under the page) starts afresh. A write holds at most :data:`SEND_AT_ONCE` messages
    and :data:`WRITE_BYTES` bytes."""

    board = server.board
    identity = _identity(request)
    last = request.headers.get("last-event-id")
    given = None if last is None else whole_number(last)
    if last is not None and given is None:
        raise BadRequest(422, "Last-Event-ID must be a whole number", "Last-Event-ID")
    cursor = given if given is not None else board.seq
    if cursor > board.seq:
        # An id this board never gave: the page was open across a restart of the server,
        # and its browser reconnected with the old process's last id. Waiting for this
        # board to reach it would show nothing new; start afresh, as a new page does.
        last, cursor = None, board.seq

    async def produce(write: Callable[[bytes], Awaitable[None]]) -> None:
        board.watchers += 1  # each token a message of its own while a page watches
        try:
            if board.taking == "first":
                # Every stream event from now on, and what the live runs' buffers hold
                # of those the board did not take (before the page's snapshot).
                await board.fit()
                for live in server.runs.live():
                    board.catch_up(live.events)
            await follow(write)
        finally:
            board.watchers -= 1
            if not board.watchers:
                with trio.CancelScope(shield=True):  # the page left: it was cancelled
                    await board.fit()

    async def follow(write: Callable[[bytes], Awaitable[None]]) -> None:
        nonlocal cursor
        hello = {"k": "hello", "seq": board.seq, "dropped": board.dropped, "resumed": last}
        await write(frame(wire_json(hello)))
        dropped = board.dropped
        sees_all = identity.sees_all
        while True:
            missed, items = board.after(cursor, SEND_AT_ONCE)
            frames: list[bytes] = []
            size = 0
            if missed:
                frames.append(frame(wire_json({"k": "gap", "missed": missed})))
            if board.dropped != dropped:
                dropped = board.dropped
                frames.append(frame(wire_json({"k": "stats", "dropped": dropped})))
            for seq, owner, data in items:
                if size >= WRITE_BYTES:
                    break
                cursor = seq
                if sees_all or identity.may_see(owner):
                    frames.append(frame(data, id=seq))
                    size += len(data)
            if missed and not items:
                cursor = max(cursor, board.seq)
            if frames:
                chunk = b"".join(frames)
                frames.clear()  # a write that waits for a slow browser holds its bytes once
                await write(chunk)
                del chunk
            if board.seq <= cursor:
                await board.wait_for(cursor)

    return SSEResponse(produce, {}, server.heartbeat)


def routes(server: Server, handler: Callable[..., Any]) -> list[Any]:
    """The viewer's routes: the page and its files open (they hold no data), the rest
    behind ``handler``'s checks (the app's token and auth hook)."""
    from starlette.routing import Route

    return [
        Route("/", handler(server, page, open=True), methods=["GET"]),
        Route("/viewer/runs", handler(server, recent), methods=["GET"]),
        Route("/viewer/runs/{run_id}/tree", handler(server, tree), methods=["GET"]),
        Route("/viewer/runs/{run_id}/record", handler(server, record), methods=["GET"]),
        Route("/viewer/events", handler(server, events), methods=["GET"]),
        Route("/viewer/{name}", handler(server, static, open=True), methods=["GET"]),
    ]
