"""Who a request comes from, and which runs it may see.

A server is given an authentication hook (``troupe serve --auth MODULE:ATTR``,
``asgi_app(auth=...)``): a function of the request that returns an :class:`Identity`,
or ``None`` to refuse it (a 401). The hook may be a plain or an ``async`` function; one
that raises refuses the request (it fails closed) with a 401 that does not echo the
error, whose details go to the server's log.

Every run a client starts is owned by its identity's ``name``. Listing, joining,
cancelling and the viewer show a client only the runs its identity owns, unless the
identity ``sees_all``. Without a hook every request is :data:`ANYONE`, who sees every run
(one client, or one shared token: the server's behaviour before hooks existed).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Final, TypeAlias, final

from attrs import field, frozen
from starlette.requests import Request

log = logging.getLogger("troupe.serve")


def _non_empty(instance: object, attribute: object, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"an identity's name must be a non-empty string, got {value!r}")


@final
@frozen
class Identity:
    """Who a request comes from.

    Args:
        name: the owner of the runs this identity starts (a user's id, say).
        sees_all: whether it may see, join and cancel every run (an operator's).
    """

    name: str = field(validator=_non_empty)
    sees_all: bool = False

    def may_see(self, owner: str | None) -> bool:
        """Whether this identity may see a run owned by ``owner`` (``None``: a run the
        server's own code started, not a client)."""
        return self.sees_all or (owner is not None and owner == self.name)


ANYONE: Final = Identity("anyone", sees_all=True)
"""The identity of every request to a server without an authentication hook."""

AuthHook: TypeAlias = Callable[[Request], "Identity | Awaitable[Identity | None] | None"]
"""A function of the request to its :class:`Identity`, or ``None`` to refuse it."""


class Refused(Exception):
    """The hook refused the request (or failed, which refuses it)."""


async def identify(hook: AuthHook | None, request: Request) -> Identity:
    """The identity of ``request`` by ``hook``.

    Raises:
        Refused: the hook returned ``None`` or not an :class:`Identity`, or raised.
    """
    if hook is None:
        return ANYONE
    try:
        found: object = hook(request)
        if inspect.isawaitable(found):
            found = await found
    except Exception:
        # Failing closed: the client learns only that it was refused; the log says why.
        log.exception("the authentication hook raised; the request is refused")
        raise Refused("the request could not be authenticated") from None
    if found is None:
        raise Refused("the request is not authenticated")
    if not isinstance(found, Identity):
        log.error(
            "the authentication hook returned a %s, not an Identity or None; refused",
            type(found).__name__,
        )
        raise Refused("the request could not be authenticated")
    return found
