"""A read-only mapping view over frozen attrs messages.

LangChain users index events and chunks like dicts (``event["data"]["chunk"]``,
``"actions" in chunk``). Our messages are typed attrs classes; this mixin gives them
that dict face without copying anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar


class DictView:
    """Mixin: ``obj["key"]``, ``obj.get("key")``, ``"key" in obj``, ``dict(obj)``.

    The keys are the class's ``_view_keys``; a key whose value is ``None`` is absent
    when the class sets ``_view_skips_none``.
    """

    __slots__ = ()
    _view_keys: ClassVar[tuple[str, ...]] = ()
    _view_skips_none: ClassVar[bool] = False

    def _has(self, key: str) -> bool:
        if key not in self._view_keys:
            return False
        return not (self._view_skips_none and getattr(self, key) is None)

    def __getitem__(self, key: str) -> Any:
        if not self._has(key):
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._has(key)

    def get(self, key: str, default: Any = None) -> Any:
        """The value at ``key``, or ``default`` when the key is absent."""
        return getattr(self, key) if self._has(key) else default

    def keys(self) -> list[str]:
        """The keys present, in declaration order."""
        return [key for key in self._view_keys if self._has(key)]

    def items(self) -> Iterator[tuple[str, Any]]:
        """``(key, value)`` pairs of the keys present."""
        return ((key, getattr(self, key)) for key in self.keys())

    def as_dict(self) -> dict[str, Any]:
        """A shallow dict copy: nested objects stay objects (not serialized)."""
        return dict(self.items())
