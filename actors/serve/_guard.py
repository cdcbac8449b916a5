"""What the server checks of every request before a handler sees it, and the headers
it adds to every response.

The threats, and the check that meets each:

- **A DNS-rebinding page** (a name of the attacker's that resolves to 127.0.0.1) reaches
  the server with its own name in ``Host``: only loopback names (``localhost``,
  ``*.localhost``), IP addresses, and the names given with ``--allow-host`` are served.
  An address is always safe to accept: a rebinding page reaches the server under a name.
- **A cross-site page's request** (``fetch(..., {mode: "no-cors"})``) needs no preflight
  when its body is ``text/plain`` or a form: a body must be ``application/json`` (a
  type that forces the preflight CORS refuses), and a ``POST`` whose ``Origin`` is
  neither the server's own nor one allowed by CORS is refused, with or without a body.
- **A flood of requests** (slow bodies held open, say) would take every file
  descriptor: at most ``max_requests`` are in progress at once, and past that a request
  is answered 503 at once and its connection closed (``/health`` is always answered).
- **Framing, sniffing and caching**: every response says ``nosniff``, may not be framed,
  and data is ``no-store``; the page's scripts and styles come from the server only.
"""

from __future__ import annotations

import functools
import ipaddress
import resource
from collections.abc import Iterable
from typing import Final

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_NAMES: Final = ("localhost", "*.localhost")
"""The host names a server accepts without ``--allow-host`` (and any IP address)."""

SECURITY_HEADERS: Final = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        b"form-action 'none'; frame-ancestors 'none'",
    ),
)
NO_STORE: Final = (b"cache-control", b"no-store")
MAX_REQUESTS_CEILING: Final = 4096
"""The default bound on requests in progress, where file descriptors allow it."""
FDS_SPARE: Final = 256
"""File descriptors the default bound leaves for the rest of the process."""
_SIMPLE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def host_name(header: str) -> str | None:
    """The name (or address) in a ``Host`` header's value, lowercased, without its port;
    ``None`` if the value is not a host (``[::1]:8000`` gives ``::1``)."""
    value = header.strip().lower()
    if not value or not value.isascii() or any(c in value for c in " /\\@?#"):
        return None
    if value.startswith("["):  # an IPv6 address, bracketed
        address, bracket, port = value[1:].partition("]")
        if not bracket or (port and not (port.startswith(":") and port[1:].isdigit())):
            return None
        return address or None
    name, _, port = value.partition(":")
    if port and not port.isdigit():
        return None
    return name.rstrip(".") or None


@functools.lru_cache(maxsize=256)
def _is_address(name: str) -> bool:
    # Remembered: a client names the same address in every request, and ipaddress's
    # parse was 4 % of a served stream's own CPU (measured, 250 streams of 40 tokens).
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostRule:
    """Which names in ``Host`` the server answers (see the module's docs)."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        # a name as a user may write it: with a port, or a trailing dot
        given = (host_name(name) or name.strip().lower() for name in allowed)
        patterns = [*LOOPBACK_NAMES, *given]
        self.any = "*" in patterns
        self.exact = frozenset(p for p in patterns if not p.startswith("*."))
        self.suffixes = tuple(p[1:] for p in patterns if p.startswith("*."))

    def accepts(self, header: str | None) -> bool:
        """Whether a request with this ``Host`` value may be served."""
        if self.any:
            return True
        name = host_name(header or "")
        if name is None:
            return False
        return name in self.exact or name.endswith(self.suffixes) or _is_address(name)


def default_max_requests() -> int:
    """Requests a server keeps in progress at once by default: :data:`MAX_REQUESTS_CEILING`,
    or fewer where the process may open fewer files (each request holds a socket)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_REQUESTS_CEILING
    return max(16, min(MAX_REQUESTS_CEILING, soft - FDS_SPARE))


def media_type(content_type: str) -> str:
    """The media type of a ``Content-Type`` value, lowercased, without parameters."""
    return content_type.partition(";")[0].strip().lower()


def is_json(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` value names JSON (``application/json``, or any
    ``+json`` type such as AG-UI's)."""
    if content_type is None:
        return False
    kind = media_type(content_type)
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


class Guard:
    """An ASGI middleware, outermost: refuses a request whose ``Host`` is not served or
    whose ``Origin`` may not post (a JSON 400 or 403 naming the header), or that comes
    when ``max_requests`` are in progress (a 503 that closes the connection); adds
    :data:`SECURITY_HEADERS` (and ``no-store`` where a response sets no cache policy)
    to every response's start. A stream's body does not pass through it."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        hosts: HostRule,
        cors_origins: Iterable[str] = (),
        max_requests: int,
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.origins = frozenset(cors_origins)
        self.max_requests = max_requests
        self.in_progress = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        refusal = self._refusal(scope, headers)
        busy = self.in_progress >= self.max_requests and scope["path"] != "/health"
        if refusal is None and busy:
            refusal = JSONResponse(
                {"error": f"the server has {self.max_requests:,} requests in progress"},
                status_code=503,
                headers={"retry-after": "5"}
                | ({"connection": "close"} if scope["http_version"].startswith("1") else {}),
            )
        if refusal is not None:
            await _with_headers(refusal)(scope, receive, send)
            return
        self.in_progress += 1
        try:
            await self.app(scope, receive, _with_security_headers(send))
        finally:
            self.in_progress -= 1

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> JSONResponse | None:
        host = headers.get("host")
        if host is None and scope.get("server"):  # HTTP/1.0: the address it came to
            host = str(scope["server"][0])
        if not self.hosts.accepts(host):
            shown = (host or "")[:80]
            return JSONResponse(
                {
                    "error": f"the server does not answer to the host {shown!r}; "
                    "start it with --allow-host NAME to serve that name",
                    "field": "Host",
                },
                status_code=400,
            )
        origin = headers.get("origin")
        if scope["method"] in _SIMPLE_METHODS or origin is None:
            return None
        if "*" in self.origins or origin in self.origins:
            return None
        if host is not None and origin in (f"http://{host}", f"https://{host}"):
            return None  # the server's own page
        return JSONResponse(
            {
                "error": f"a cross-origin request from {origin[:80]!r} is refused; "
                "allow its origin with --cors-origin",
                "field": "Origin",
            },
            status_code=403,
        )


def _headers(scope: Scope) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in scope["headers"]:
        name = key.decode("latin-1")
        if name in ("host", "origin") and name not in found:
            found[name] = value.decode("latin-1")
    return found


def _with_headers(response: JSONResponse) -> JSONResponse:
    response.headers.update({k.decode(): v.decode() for k, v in (*SECURITY_HEADERS, NO_STORE)})
    return response


def _with_security_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            present = {key.lower() for key, _ in headers}
            headers += [pair for pair in SECURITY_HEADERS if pair[0] not in present]
            if b"cache-control" not in present:
                headers.append(NO_STORE)
            message = {**message, "headers": headers}
        await send(message)

    return sending
