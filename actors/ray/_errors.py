"""How a run's failure crosses the edge: as data (the exception's type, by name, and
its arguments), and back as the same exception where the driver knows the type."""

from __future__ import annotations

import sys
from typing import Any, Final

import trio

from protocol import error_type_name
from runtime import TroupeError, describe_error

_SCALARS: Final = (str, int, float, bool, type(None))
_NEVER_REBUILT: Final = (trio.Cancelled, KeyboardInterrupt, SystemExit, GeneratorExit)


class HostDiedError(TroupeError):
    """The host running the run died (its process or node was lost); the run's open
    runs ended with error events saying so."""


class RemoteRunError(TroupeError):
    """A run on a host raised an exception whose type this process does not know.

    Attributes:
        type_name: the exception's type, as ``module.QualifiedName``.
        message: the exception's message.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message


def error_record(exc: BaseException) -> dict[str, Any]:
    """``exc`` as data: ``{"type", "args", "message"}``, its type named as a journal
    names it (:func:`protocol.error_type_name`). An exception that stands for another
    (a journaled one, or another host's) is the one it stands for: that type, with its
    message as its argument. An exception whose ``__str__`` fails is described by
    its type."""
    type_name = error_type_name(exc)
    message = getattr(exc, "message", None)
    if isinstance(getattr(exc, "type_name", None), str) and isinstance(message, str):
        return {"type": type_name, "args": [message], "message": message}
    args = getattr(exc, "args", ())
    text = describe_error(exc)
    message = text.partition(": ")[2] if ": " in text else ""
    return {
        "type": type_name,
        "args": list(args) if all(isinstance(a, _SCALARS) for a in args) else [message],
        "message": message,
    }


def error_from_record(record: dict[str, Any]) -> BaseException:
    """The exception a record describes: of the same type when this process has
    imported it (nothing is imported for it), else a :class:`RemoteRunError`."""
    type_name = str(record.get("type", "builtins.Exception"))
    message = str(record.get("message", ""))
    args = record.get("args")
    if not isinstance(args, list):
        args = [message]
    cls = _known_type(type_name)
    if cls is not None:
        try:
            exc = cls.__new__(cls, *args)
            BaseException.__init__(exc, *args)
            return exc
        except Exception:  # a type that cannot be rebuilt from its arguments
            pass
    return RemoteRunError(type_name, message)


def _known_type(type_name: str) -> type[BaseException] | None:
    module_name, _, qualname = type_name.rpartition(".")
    # Nested classes: the module is the longest prefix that is an imported module.
    while module_name and module_name not in sys.modules:
        module_name, _, outer = module_name.rpartition(".")
        qualname = f"{outer}.{qualname}"
    found: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if (
        isinstance(found, type)
        and issubclass(found, BaseException)
        and not issubclass(found, _NEVER_REBUILT)
    ):
        return found
    return None
