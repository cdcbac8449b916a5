"""The shared state of a run's tree: a JSON object the root run is given
(``RunConfig.state``), read by every run of the tree and changed by RFC 6902 patches.

The state belongs to the root run (a conversation's, as AG-UI means it): a nested run,
an agent used as a tool or handed the conversation, reads and changes the same state;
a ``state`` given to a run inside another is ignored, as ``thread_id`` is.

This module keeps the value (:class:`StateCell`, one per tree); the handle code uses to
change it, and the events that say so, are :class:`runtime.SharedState`'s.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, final

import jsonpatch
import jsonpointer
import trio

from ._checks import check_json_able
from ._errors import TroupeError


class StateError(TroupeError, ValueError):
    """A change of the shared state that cannot be made: a patch that does not apply
    (a ``test`` that fails, a path that is not there), that is not RFC 6902, or that
    would leave the state something other than a JSON object."""


def checked_state(value: object, what: str = "state") -> dict[str, Any]:
    """``value`` as a shared state: a JSON object (a new dict).

    Raises:
        TypeError: not a mapping with string keys, or not JSON-able (``what`` names it).
    """
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a JSON object, got {type(value).__name__}")
    if not all(isinstance(key, str) for key in value):
        raise TypeError(f"{what} keys must be strings")
    check_json_able(value, what)
    return dict(value)


def _checked_ops(ops: object) -> list[dict[str, Any]]:
    if isinstance(ops, str | bytes) or not isinstance(ops, Sequence | Iterable):
        raise StateError(
            f"a state patch is a list of RFC 6902 operations, got {type(ops).__name__}"
        )
    listed = list(ops)
    for index, op in enumerate(listed):
        if not isinstance(op, Mapping) or not isinstance(op.get("op"), str):
            raise StateError(
                f"state patch operation {index} is not an RFC 6902 operation "
                f"(an object with 'op' and 'path'): {op!r:.120}"
            )
    try:
        check_json_able(listed, "a state patch")
    except TypeError as exc:
        raise StateError(str(exc)) from None
    # copies: neither the state nor the delta told shares the caller's objects
    return [copy.deepcopy(dict(op)) for op in listed]


def _unshared(doc: Any, pointer: object) -> Any:
    """``doc`` with a shallow copy of each container from its root down to the parent of
    what ``pointer`` names, the rest shared: changing that parent in place changes
    nothing another state shares (a patch costs the depth of its paths, not the size
    of the state, which a deep copy of it would)."""
    if not isinstance(pointer, str):
        return doc  # (jsonpatch says what is wrong with it)
    try:
        parts = jsonpointer.JsonPointer(pointer).parts
    except jsonpointer.JsonPointerException:
        return doc
    root = _copied(doc)
    node = root
    for part in parts[:-1]:
        try:
            key: Any = int(part) if isinstance(node, list) else part
            child = _copied(node[key])
        except (KeyError, IndexError, ValueError, TypeError):
            break  # not there: jsonpatch says so
        if child is node[key]:
            break  # not a container
        node[key] = child
        node = child
    return root


def _copied(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value


@final
class StateCell:
    """The current value of a tree's shared state (runtime-internal: code reads and
    changes it through :class:`runtime.SharedState`).

    ``rebuild``: the cell of a root run replayed from its journal, which began with the
    journaled state: the patches of each request the journal answers are applied again
    (those requests do not run again). A cell given its state by the caller (a resume
    whose client sent the state it holds, AG-UI's source of truth) takes none of them.
    """

    __slots__ = ("_lock", "rebuild", "value")

    def __init__(self, value: Mapping[str, Any] | None = None, *, rebuild: bool = False) -> None:
        self.value: dict[str, Any] = dict(value) if value is not None else {}
        """The state now; replaced (never changed in place) by each patch, which
        shares with it what it does not change."""
        self.rebuild = rebuild
        self._lock: trio.Lock | None = None

    @property
    def lock(self) -> trio.Lock:
        """Held while a change is made and told: concurrent tools' deltas reach every
        stream in the order they were made, each applying to the state the one before
        left."""
        if self._lock is None:
            self._lock = trio.Lock()
        return self._lock

    def patched(self, ops: object) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """``ops`` checked, and the state they make (this cell is not changed).

        Raises:
            StateError: the patch is not RFC 6902 JSON, does not apply, or leaves no
                object.
        """
        checked = _checked_ops(ops)
        new: Any = self.value
        try:
            for op in checked:
                new = _unshared(new, op.get("path"))
                if "from" in op:
                    new = _unshared(new, op["from"])
                new = jsonpatch.apply_patch(new, [op], in_place=True)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            raise StateError(f"the state patch does not apply: {exc}") from None
        except (TypeError, KeyError, IndexError, ValueError) as exc:  # a malformed op
            raise StateError(f"the state patch is malformed: {exc!r:.200}") from None
        if not isinstance(new, dict):
            raise StateError(
                f"the state patch would make the state a {type(new).__name__}: it must stay "
                "a JSON object"
            )
        return checked, new

    def replayed(self, patches: Iterable[Any]) -> None:
        """Apply the journaled patches of a request the journal answers (when this cell
        rebuilds its state; see the class docstring). A patch that does not apply now
        is skipped: it did when it was made."""
        if not self.rebuild:
            return
        for ops in patches:
            try:
                self.value = self.patched(ops)[1]
            except StateError:
                continue

    def snapshot(self) -> dict[str, Any]:
        """A copy of the state, which its reader may change freely."""
        return copy.deepcopy(self.value)
