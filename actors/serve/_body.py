"""A request's JSON body and the ids in it, read and checked before anything is run.

What a body may be: ``application/json`` (or a ``+json`` type), at most ``max_body``
bytes, sent within the server's ``body_timeout``, a JSON object nested at most
:data:`MAX_DEPTH` deep whose integers fit in 64 bits and which holds no ``NaN`` or
``Infinity``. What an id may be: see :data:`ID_RULE`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import trio
from starlette.requests import ClientDisconnect, Request

from runtime import check_thread_id

from ._errors import BadRequest
from ._guard import is_json, media_type
from ._sse import whole_number

MAX_DEPTH: Final = 100
"""How deep a body's arrays and objects may nest (the JSON the server writes back,
inputs included, must stay well within orjson's limit of 254)."""
INT_LIMIT: Final = 1 << 63
"""Integers in a body lie in [-2**63, 2**63): what every JSON reader at the edges keeps."""
DEFAULT_BODY_TIMEOUT: Final = 30.0
"""Seconds a client has to send a request's whole body (408 after)."""
ID_RULE: Final = (
    "1 to 128 ASCII letters, digits, '.', '_', ':' or '-', starting with a letter or digit"
)
_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def check_id(value: object, field: str) -> str:
    """``value`` if it is a valid id (:data:`ID_RULE`): one that fits in a header and a
    URL's path as it is.

    Raises:
        BadRequest: a 422 naming ``field``.
    """
    if isinstance(value, str) and _ID.fullmatch(value):
        return value
    shown = value[:60] if isinstance(value, str) else type(value).__name__
    raise BadRequest(422, f"{field} must be {ID_RULE}; got {shown!r}", field)


def checked_thread_id(value: object, field: str) -> str:
    """``value`` if it is a thread id, by runtime's rule (1 to 256 printable
    characters; the ids a frontend names its thread with are :func:`check_id`'s, a
    subset).

    Raises:
        BadRequest: a 422 naming ``field``.
    """
    try:
        return check_thread_id(value, field)
    except (TypeError, ValueError) as exc:
        raise BadRequest(422, str(exc), field) from None


def is_id(value: str) -> bool:
    """Whether ``value`` is a valid id (a path's id that is not cannot name a run)."""
    return _ID.fullmatch(value) is not None


def _http1(request: Request) -> bool:
    return str(request.scope.get("http_version", "1.1")).startswith("1")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


async def json_body(request: Request, limit: int, seconds: float) -> dict[str, Any]:
    """The request's body as a JSON object (``{}`` when it has none).

    Raises:
        BadRequest: 415 (not JSON), 413 (too large), 408 (too slow), 400 (not valid
            JSON, too deep, a number out of range, or the client left mid-body), 422
            (not an object).
    """
    length = request.headers.get("content-length")
    if length is not None and (whole_number(length) or 0) > limit:
        raise BadRequest(413, f"the body is over {limit:,} bytes", "body")
    chunks: list[bytes] = []
    size = 0
    with trio.move_on_after(seconds) as deadline:
        try:
            async for piece in request.stream():
                size += len(piece)
                if size > limit:
                    raise BadRequest(413, f"the body is over {limit:,} bytes", "body")
                chunks.append(piece)
        except ClientDisconnect:
            raise BadRequest(400, "the client left before its body ended", "body") from None
    if deadline.cancelled_caught:
        raise BadRequest(
            408,
            f"the body was not sent within {seconds:g} seconds",
            "body",
            # (HTTP/2 has no such header: a stream of its own ends with the answer)
            headers={"connection": "close"} if _http1(request) else None,
        )
    body = b"".join(chunks)
    request.state.body_size = len(body)
    if not body:
        return {}
    content_type = request.headers.get("content-type")
    if not is_json(content_type):
        given = media_type(content_type) if content_type else "none"
        raise BadRequest(
            415,
            f"the body must be sent as Content-Type: application/json (it was {given[:60]!r})",
            "Content-Type",
        )
    try:
        value = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadRequest(400, f"the body nests deeper than {MAX_DEPTH} levels", "body") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(400, f"the body is not JSON: {exc}", "body") from None
    except ValueError as exc:  # an integer of over 4,300 digits, a NaN
        raise BadRequest(400, f"the body is not JSON the server reads: {exc}", "body") from None
    _check_value(value)
    if not isinstance(value, dict):
        raise BadRequest(422, "the body must be a JSON object", "body")
    return value


def _check_value(value: Any) -> None:
    """Refuse a value nested too deep or holding an integer out of range (iteratively:
    a recursive walk is what a deep value would break)."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            if isinstance(item, int) and not -INT_LIMIT <= item < INT_LIMIT:
                raise BadRequest(400, "the body holds an integer beyond 64 bits", "body")
            continue
        if depth >= MAX_DEPTH:
            raise BadRequest(400, f"the body nests deeper than {MAX_DEPTH} levels", "body")
        pending.extend((child, depth + 1) for child in children)
