"""The keyword options of the public run and stream calls, defined once.

Each call takes ``**options`` typed with one of these ``TypedDict``\\ s (PEP 692), so a
type checker knows every keyword, and :func:`parse_options` turns them into a run
config, an event filter and the call's own settings, refusing unknown keywords.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypedDict

from attrs import frozen

from ._context import RunConfig, RunOptions, make_config

__all__ = ["RunOptions"]  # defined with the config it builds; re-exported here
from ._filters import EventFilter


class FilterOptions(TypedDict, total=False):
    """Which events a stream carries (see :class:`EventFilter`)."""

    include_names: Iterable[str]
    include_types: Iterable[str]
    include_tags: Iterable[str]
    exclude_names: Iterable[str]
    exclude_types: Iterable[str]
    exclude_tags: Iterable[str]


class StreamOptions(RunOptions, total=False):
    """A run's settings, and the bound of its stream's channel."""

    capacity: int


class EventStreamOptions(StreamOptions, FilterOptions, total=False):
    """Options of ``astream_events``. ``version`` is accepted as LangChain's is; both
    ``"v1"`` and ``"v2"`` give Troupe's events (the v2 shape)."""

    version: Literal["v1", "v2"]


class LogOptions(EventStreamOptions, total=False):
    """Options of ``astream_log``: ``diff=False`` yields the whole state each time;
    ``with_streamed_output_list=False`` leaves the root's chunks out of
    ``/streamed_output`` (``/final_output`` still adds them up)."""

    diff: bool
    with_streamed_output_list: bool


class WatchOptions(FilterOptions, total=False):
    """Options of ``Runtime.watch``."""

    capacity: int
    drop_oldest: bool


def _keys(schema: Any) -> frozenset[str]:
    return frozenset(schema.__required_keys__ | schema.__optional_keys__)


_RUN_KEYS = _keys(RunOptions)
_FILTER_KEYS = _keys(FilterOptions)


@frozen
class ParsedOptions:
    """What a call's options amount to."""

    config: RunConfig
    event_filter: EventFilter | None
    settings: dict[str, Any]


def parse_options(
    where: str,
    schema: Any,
    options: Mapping[str, Any],
    config: RunConfig | Mapping[str, Any] | None = None,
) -> ParsedOptions:
    """Split ``options`` (allowed: the keys of ``schema``) into a config merged over
    ``config``, a filter, and the remaining settings (``capacity``, ``diff``, ...).

    Raises:
        TypeError: an unknown keyword (named), or a setting of the wrong type.
        ValueError: as :func:`make_config` and :meth:`EventFilter.build` raise.
    """
    unknown = sorted(set(options) - _keys(schema))
    if unknown:
        raise TypeError(f"{where}() got an unexpected keyword argument {unknown[0]!r}")
    run = {k: v for k, v in options.items() if k in _RUN_KEYS}
    filters = {k: v for k, v in options.items() if k in _FILTER_KEYS}
    settings = {k: v for k, v in options.items() if k not in _RUN_KEYS | _FILTER_KEYS}
    return ParsedOptions(make_config(config, **run), EventFilter.build(**filters), settings)
