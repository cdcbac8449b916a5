"""Read-only JSON containers: what a frozen message holds where its data is a dict.

A tool call's ``args`` is parsed JSON, a dict. The message that holds it is frozen, and
the journal and a replay vouch for a message by its identity (its JSON is written, or
compared, once: a conversation that grows by a message a turn is not turned into JSON
once per turn). A dict inside it changed in place would make that identity vouch for
JSON the message no longer has (the review's finding: a journal reading back old
arguments, a replay reporting a false divergence). So the message freezes what it
holds: :func:`frozen_json` turns dicts and lists into :class:`FrozenDict` and
:class:`FrozenList`, subclasses that refuse every change in place and are otherwise
the very types (``isinstance(args, dict)`` holds, ``json.dumps`` and the converter
write them as they write a dict and a list, ``==`` compares them with plain ones).

Freezing costs one walk of the arguments when the message is made (a few hundred
nanoseconds for a small call); copying them at every turn instead, to check them, cost
25 times the encoding of a 200-turn conversation of tool calls.

A copy to change is :func:`thawed` (``args.copy()`` is a shallow one, as for a dict).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, NoReturn, SupportsIndex, final


def _refused(self: object, *args: object, **kwargs: object) -> NoReturn:
    raise TypeError(
        f"a {type(self).__name__} is read-only: a message's data cannot be changed in place "
        "(copy it first: protocol.thawed(value), or value.copy())"
    )


@final
class FrozenDict(dict[str, Any]):
    """A dict that refuses changes (see the module's docstring)."""

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Read-only all through, however made (it is public): a list inside one made
        # by hand would change in place under the message that vouches for it.
        dict.__init__(self, *args, **kwargs)
        for key, item in dict.items(self):
            frozen = frozen_json(item)
            if frozen is not item:
                dict.__setitem__(self, key, frozen)

    __setitem__ = _refused
    __delitem__ = _refused
    __ior__ = _refused
    clear = _refused
    pop = _refused
    popitem = _refused
    setdefault = _refused
    update = _refused

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle and copy rebuild it from a plain dict (their default sets items one
        # by one, which it refuses)
        return (FrozenDict, (dict(self),))

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenDict:
        return self  # nothing inside it can change either


@final
class FrozenList(list[Any]):
    """A list that refuses changes (see the module's docstring)."""

    __slots__ = ()

    def __init__(self, items: Iterable[Any] = ()) -> None:
        list.__init__(self, map(frozen_json, items))  # (as FrozenDict: all through)

    __setitem__ = _refused
    __delitem__ = _refused
    __iadd__ = _refused
    __imul__ = _refused
    append = _refused
    clear = _refused
    extend = _refused
    insert = _refused
    remove = _refused
    reverse = _refused
    sort = _refused

    def pop(self, index: SupportsIndex = -1) -> NoReturn:
        _refused(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenList, (list(self),))

    def __copy__(self) -> FrozenList:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenList:
        return self


_FROZEN: tuple[type, ...] = (FrozenDict, FrozenList, str, int, float, bool, type(None))


def frozen_json(value: Any) -> Any:
    """``value`` with every dict and list in it (nested too) read-only: a
    :class:`FrozenDict` or :class:`FrozenList` (``value`` itself if it already is);
    tuples become frozen lists (JSON has lists); anything else is kept as it is."""
    cls = type(value)
    if cls in _FROZEN:
        return value
    # Made without their own __init__, which would look at each frozen item again.
    if isinstance(value, dict):
        frozen_dict = _new_dict(FrozenDict)
        _fill_dict(frozen_dict, {key: frozen_json(item) for key, item in value.items()})
        return frozen_dict
    if isinstance(value, list | tuple):
        frozen_list = _new_list(FrozenList)
        _fill_list(frozen_list, [frozen_json(item) for item in value])
        return frozen_list
    return value


_new_dict: Final = dict.__new__
_fill_dict: Final = dict.__init__
_new_list: Final = list.__new__
_fill_list: Final = list.__init__


def thawed(value: Any) -> Any:
    """A deep copy of ``value`` whose dicts and lists are plain ones again, to change."""
    if isinstance(value, dict):
        return {key: thawed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [thawed(item) for item in value]
    return value
