"""Argument checks shared by the public API."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Protocol, overload, runtime_checkable

import trio

from protocol import SerializationError, StreamEvent, to_json

from ._errors import WrongEventLoopError


def string_tuple(value: object, what: str) -> tuple[str, ...]:
    """``value`` (an iterable of strings) as a tuple.

    Raises:
        TypeError: ``value`` is a bare string (a common slip: ``tags="x"``), is not
            iterable, or holds something other than strings; ``what`` names it.
    """
    if isinstance(value, str):
        raise TypeError(f"{what} must be a list of strings, not a string: use [{value!r}]")
    if not isinstance(value, Iterable):
        raise TypeError(f"{what} must be a list of strings, got {value!r}")
    items = tuple(value)
    bad = [item for item in items if not isinstance(item, str)]
    if bad:
        raise TypeError(f"{what} must be strings, got {bad!r}")
    return items


@overload
def positive_int(value: object, what: str) -> int: ...
@overload
def positive_int(value: object, what: str, *, optional: bool) -> int | None: ...
def positive_int(value: object, what: str, *, optional: bool = False) -> int | None:
    """``value`` if it is an ``int`` >= 1 (not a bool); with ``optional``, also ``None``.
    Troupe's one check of a positive integer setting.

    Raises:
        ValueError: naming ``what``.
    """
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        alternative = " or None" if optional else ""
        raise ValueError(f"{what} must be a positive integer{alternative}, got {value!r}")
    return value


def seconds(value: object, what: str, *, allow_zero: bool = False) -> float:
    """``value`` as seconds: a finite real number > 0 (>= 0 with ``allow_zero``).
    Troupe's one check of a setting in seconds.

    Raises:
        TypeError: not a number (a bool is not one either).
        ValueError: not finite, or out of range; ``what`` names it.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{what} must be a finite number of seconds {bound}, got {value!r}")
    return float(value)


def flag(value: object, what: str) -> bool:
    """``value`` if it is a bool.

    Raises:
        TypeError: naming ``what``.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be True or False, got {value!r}")
    return value


@runtime_checkable
class EventSubscriber(Protocol):
    """Anything with ``async def on_event(self, event)``: a callback handler, an
    exporter. ``actors.AsyncCallbackHandler`` maps events to LangChain's ``on_*``."""

    async def on_event(self, event: StreamEvent) -> None:
        """Handle one event."""


def check_subscribers(handlers: object) -> tuple[Any, ...]:
    """The handlers as a tuple, each checked to have ``on_event``.

    Raises:
        TypeError: naming the handler that cannot subscribe.
    """
    if isinstance(handlers, str) or not isinstance(handlers, Iterable):
        raise TypeError(f"callbacks must be a list of handlers, got {handlers!r}")
    checked = tuple(handlers)
    for handler in checked:
        if not isinstance(handler, EventSubscriber):
            raise TypeError(
                f"callbacks must have an async on_event(event) method (subclass "
                f"actors.AsyncCallbackHandler), got {type(handler).__name__}"
            )
    return checked


def running_loop() -> str | None:
    """The async library running the calling code (``"trio"``, ``"asyncio"``, ...), or
    ``None`` outside any event loop."""
    try:
        trio.lowlevel.current_task()
        return "trio"
    except RuntimeError:
        pass
    try:
        import sniffio

        return sniffio.current_async_library()
    except Exception:  # sniffio.AsyncLibraryNotFoundError: no loop at all
        return None


def require_trio(what: str) -> None:
    """Raise :class:`WrongEventLoopError` unless called inside a trio run, naming the
    loop it was called from and how to run under trio (in Jupyter too)."""
    library = running_loop()
    if library == "trio":
        return
    where = f"under {library}" if library else "outside any event loop"
    asyncio_way = (
        "From asyncio (FastAPI, asyncio.run, a notebook's default loop), open the runtime "
        "with `async with actors.aio.open_asyncio_runtime() as rt:` and read "
        "`rt.astream_events(performer, input)`, `rt.ainvoke(...)`: the same API, with trio "
        "in a thread beside the loop. "
        if library == "asyncio"
        else ""
    )
    raise WrongEventLoopError(
        f"{what} was called {where}, but Troupe runs on trio: start your program with "
        f"trio.run(main). {asyncio_way}In Jupyter or IPython, run `%autoawait trio` once, "
        "then `await` as usual. From a script without async code, use performer.invoke(input)."
    )


def check_custom_event(name: object, data: Any) -> None:
    """Raise ``TypeError`` unless ``name`` is a non-empty string and ``data`` JSON-able."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"a custom event needs a non-empty string name, got {name!r}")
    check_json_able(data)


def check_json_able(data: Any, what: str = "custom event data") -> None:
    """Raise ``TypeError`` naming the problem (and ``what`` ``data`` is) if ``data``
    cannot become JSON."""
    try:
        to_json(data)
    except (SerializationError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-able: {exc}") from None
    except RecursionError:
        raise TypeError(
            f"{what} must be JSON-able: it is nested too deeply (or holds itself)"
        ) from None
