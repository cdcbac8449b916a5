"""A read-only mapping view over frozen attrs messages.

LangChain users index events and chunks like dicts (``event["data"]["chunk"]``,
``"actions" in chunk``). Our messages are typed attrs classes; this mixin gives them
that dict face without copying anything.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from typing import Any, ClassVar


class DictView:
    """Mixin: ``obj["key"]``, ``obj.get("key")``, ``"key" in obj``, ``dict(obj)``.

    The keys are the class's ``_view_keys``; a key whose value is ``None`` is absent
    when the class sets ``_view_skips_none``; the keys in ``_view_lists`` read as lists
    (as LangChain's dicts have them), though the attributes are tuples.
    """

    __slots__ = ()
    _view_keys: ClassVar[tuple[str, ...]] = ()
    _view_skips_none: ClassVar[bool] = False
    _view_lists: ClassVar[frozenset[str]] = frozenset()

    def _view(self, key: str) -> Any:
        value = getattr(self, key)
        return list(value) if key in self._view_lists else value

    def _has(self, key: str) -> bool:
        if key not in self._view_keys:
            return False
        return not (self._view_skips_none and getattr(self, key) is None)

    def __getitem__(self, key: str) -> Any:
        if not self._has(key):
            raise KeyError(key)
        return self._view(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._has(key)

    def get(self, key: str, default: Any = None) -> Any:
        """The value at ``key``, or ``default`` when the key is absent."""
        return self._view(key) if self._has(key) else default

    def keys(self) -> list[str]:
        """The keys present, in declaration order."""
        return [key for key in self._view_keys if self._has(key)]

    def items(self) -> Iterator[tuple[str, Any]]:
        """``(key, value)`` pairs of the keys present."""
        return ((key, self._view(key)) for key in self.keys())

    def as_dict(self) -> dict[str, Any]:
        """A shallow dict copy: nested objects stay objects (not serialized)."""
        return dict(self.items())


class AddableDict(dict[str, Any]):
    """A dict that adds: values under the same key are added (``+``), others kept.

    What LangChain's step chunks add up to, so ``total = total + chunk`` accumulates a
    stream of them.
    """

    def __add__(self, other: Any) -> AddableDict:
        merged = AddableDict(self)
        for key in other.keys():  # noqa: SIM118  # a DictView has keys() but is no iterable
            value = other[key]
            current = merged.get(key)
            if current is None or value is None:
                merged[key] = value if value is not None else current
            else:
                try:
                    merged[key] = current + value
                except TypeError:
                    merged[key] = value
        return merged

    def __radd__(self, other: Any) -> AddableDict:
        return AddableDict(dict(other.items())) + self


class AddableView(DictView, Mapping[str, Any]):
    """A :class:`DictView` whose instances add up (``a + b``) to an :class:`AddableDict`.

    It is a read-only ``Mapping`` (``dict(chunk)``, ``{**chunk}``, ``for key in chunk``),
    as LangChain's ``AddableDict`` chunks are dicts.
    """

    __slots__ = ()

    def __add__(self, other: Any) -> AddableDict:
        return AddableDict(DictView.items(self)).__add__(other)

    def __iter__(self) -> Iterator[str]:
        return (key for key in self._view_keys if self._has(key))

    def __len__(self) -> int:
        return sum(1 for key in self._view_keys if self._has(key))

    def keys(self) -> KeysView[str]:  # type: ignore[override]  # a Mapping's keys
        return KeysView(self)

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]  # a Mapping's items
        return ItemsView(self)

    def values(self) -> ValuesView[Any]:
        return ValuesView(self)
