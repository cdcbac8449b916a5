"""Which events a subscriber wants: include/exclude by run name, kind and tags."""

from __future__ import annotations

from collections.abc import Iterable

from attrs import frozen

from ._checks import string_tuple


def _as_names(value: Iterable[str] | None, what: str) -> frozenset[str] | None:
    return None if value is None else frozenset(string_tuple(value, what))


@frozen
class EventFilter:
    """LangChain's ``include_names/types/tags`` and ``exclude_*`` filters.

    An event passes when, if any include is given, it matches at least one include,
    and it matches no exclude. Names match the run's name, types its kind
    (``chain``, ``chat_model``, ``tool``, ...), tags any of its (inherited) tags.
    """

    include_names: frozenset[str] | None = None
    include_types: frozenset[str] | None = None
    include_tags: frozenset[str] | None = None
    exclude_names: frozenset[str] | None = None
    exclude_types: frozenset[str] | None = None
    exclude_tags: frozenset[str] | None = None

    @classmethod
    def build(
        cls,
        *,
        include_names: Iterable[str] | None = None,
        include_types: Iterable[str] | None = None,
        include_tags: Iterable[str] | None = None,
        exclude_names: Iterable[str] | None = None,
        exclude_types: Iterable[str] | None = None,
        exclude_tags: Iterable[str] | None = None,
    ) -> EventFilter | None:
        """A filter from lists of strings; ``None`` when nothing is filtered.

        Raises:
            TypeError: an argument is a bare string or holds non-strings.
        """
        made = cls(
            _as_names(include_names, "include_names"),
            _as_names(include_types, "include_types"),
            _as_names(include_tags, "include_tags"),
            _as_names(exclude_names, "exclude_names"),
            _as_names(exclude_types, "exclude_types"),
            _as_names(exclude_tags, "exclude_tags"),
        )
        return None if made == cls() else made

    def accepts(self, name: str, kind: str, tags: tuple[str, ...]) -> bool:
        """Whether events of a run with this name, kind and tags pass."""
        has_include = (
            self.include_names is not None
            or self.include_types is not None
            or self.include_tags is not None
        )
        if has_include and not (
            (self.include_names is not None and name in self.include_names)
            or (self.include_types is not None and kind in self.include_types)
            or (self.include_tags is not None and not self.include_tags.isdisjoint(tags))
        ):
            return False
        if self.exclude_names is not None and name in self.exclude_names:
            return False
        if self.exclude_types is not None and kind in self.exclude_types:
            return False
        return not (self.exclude_tags is not None and not self.exclude_tags.isdisjoint(tags))
