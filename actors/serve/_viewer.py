"""The run viewer's endpoints: the page at ``/`` (HTML, CSS and JavaScript shipped in the
package, nothing fetched from elsewhere), and what it reads from the board."""

from __future__ import annotations

import importlib.resources
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ._errors import BadRequest
from ._sse import SSEResponse, whole_number
from ._wire import frame, to_json

if TYPE_CHECKING:
    from ._app import Server

ASSETS: Final = {
    "index.html": "text/html; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
    "viewer.css": "text/css; charset=utf-8",
}
SEND_AT_ONCE: Final = 512
"""Messages a browser is sent in one write."""


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
    return JSONResponse(
        {
            "runs": board.recent(),
            "seq": board.seq,
            "dropped": board.dropped,
            "history": board.history,
        }
    )


async def tree(server: Server, request: Request) -> Response:
    root_id = request.path_params["run_id"]
    runs = server.board.tree(root_id)
    if runs is None:
        raise BadRequest(404, f"run {root_id!r} is not in the viewer's history")
    return Response(to_json({"runs": runs, "seq": server.board.seq}), media_type="application/json")


async def record(server: Server, request: Request) -> Response:
    run_id = request.path_params["run_id"]
    found = server.board.record(run_id)
    if found is None:
        raise BadRequest(404, f"run {run_id!r} is not in the viewer's history")
    return Response(to_json(found), media_type="application/json")


async def events(server: Server, request: Request) -> Response:
    """Server-sent events of the board's ring: from ``Last-Event-ID`` when the browser
    reconnects, else from now. A browser too far behind is sent ``gap`` with how many
    messages it missed, and catches up from the records; one whose id is past the ring's
    last (the server restarted under the page) starts afresh."""

    board = server.board
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
        nonlocal cursor
        hello = {"k": "hello", "seq": board.seq, "dropped": board.dropped, "resumed": last}
        await write(frame(to_json(hello)))
        dropped = board.dropped
        while True:
            missed, items = board.after(cursor)
            frames: list[bytes] = []
            if missed:
                frames.append(frame(to_json({"k": "gap", "missed": missed})))
            if board.dropped != dropped:
                dropped = board.dropped
                frames.append(frame(to_json({"k": "stats", "dropped": dropped})))
            for seq, message in items[:SEND_AT_ONCE]:
                frames.append(frame(to_json(message), id=seq))
                cursor = seq
            if not items:
                cursor = max(cursor, board.seq) if missed else cursor
            if frames:
                await write(b"".join(frames))
            if len(items) <= SEND_AT_ONCE:
                await board.wait_for(cursor)

    return SSEResponse(produce, {}, server.heartbeat)


def routes(server: Server, handler: Callable[..., Any]) -> list[Any]:
    """The viewer's routes, each behind ``handler`` (the app's token check)."""
    from starlette.routing import Route

    return [
        Route("/", handler(server, page), methods=["GET"]),
        Route("/viewer/runs", handler(server, recent), methods=["GET"]),
        Route("/viewer/runs/{run_id}/tree", handler(server, tree), methods=["GET"]),
        Route("/viewer/runs/{run_id}/record", handler(server, record), methods=["GET"]),
        Route("/viewer/events", handler(server, events), methods=["GET"]),
        Route("/viewer/{name}", handler(server, static), methods=["GET"]),
    ]
