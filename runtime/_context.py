"""Run identity: the context that travels in every envelope, and per-call config."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, Final, TypedDict

import attrs
from attrs import field, frozen

from protocol import Decision

from ._checks import check_subscribers, seconds, string_tuple
from ._gate import Gate
from ._ids import new_run_id
from ._replay import Replay
from ._state import StateCell, checked_state

NO_DECISIONS: Final[Mapping[str, Decision]] = MappingProxyType({})
"""The decisions of a tree that resumes nothing (one read-only mapping for all)."""


@frozen
class RunContext:
    """Who is working: the run a piece of code is working for.

    The receiving actor makes its run's context current while it works, so code inside
    a tool (a nested model call, a custom event) is attached to the tool's run without
    passing anything by hand.

    Attributes:
        run_id: this run's id.
        parent_ids: ancestors' ids, root first.
        name: this run's name.
        kind: this run's kind (``chain``, ``chat_model``, ``tool``, ...).
        tags: this run's tags, inherited ones first.
        metadata: this run's metadata, inherited entries included.
        gate: the backpressure gate of the run's tree (runtime-internal; ``None`` for
            a context made by hand).
        handlers: the callback handlers watching this run, its own and its ancestors'
            (runtime-internal: a handler given again to a run inside is not attached
            twice).
    """

    run_id: str
    parent_ids: tuple[str, ...]
    name: str
    kind: str
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(factory=dict)
    gate: Gate | None = field(default=None, eq=False, repr=False)
    handlers: tuple[Any, ...] = field(default=(), eq=False, repr=False)
    replay: Replay | None = field(default=None, eq=False, repr=False)
    """What the run asked for before, when it is run again (runtime-internal)."""
    decisions: Mapping[str, Decision] = field(factory=dict, eq=False, repr=False)
    """A person's decisions on the pending requests of the run this one resumes, by
    request id (inherited by every run of the tree)."""
    resumes: str | None = field(default=None, eq=False, repr=False)
    """The id of the journaled run this one runs again, if any (an interrupt is named
    by that run's id, so that its decision finds it)."""
    state: StateCell | None = field(default=None, eq=False, repr=False)
    """The shared state of the run's tree (the root's; see :class:`SharedState`)."""
    # A counter set past the frozen class's guard: a list to count in would be one
    # more object per open run for the collector to trace.
    _interrupts: int = field(default=0, eq=False, repr=False)

    def next_interrupt(self) -> int:
        """The number of the run's next ``interrupt()`` call (from 0)."""
        number = self._interrupts
        object.__setattr__(self, "_interrupts", number + 1)
        return number

    @property
    def root_id(self) -> str:
        """The id of the root run of this run's tree."""
        return self.parent_ids[0] if self.parent_ids else self.run_id


@frozen
class Resume:
    """Continue the paused run ``run_id`` with ``decisions`` (by pending request id;
    see :meth:`Runtime.resume`)."""

    run_id: str
    decisions: Mapping[str, Any] = field(factory=dict)


@frozen
class RunConfig:
    """Per-call settings of a run (LangChain's ``config``), all optional.

    Attributes:
        run_name: overrides the performer's name for this run.
        tags: added to the inherited and the performer's tags.
        metadata: merged over the inherited and the performer's metadata.
        run_id: the id to give the run (must be unused); a new one by default.
        callbacks: handlers (objects with ``async on_event(event)``) that watch this
            run and its descendants; the call returns once they have seen its end.
        timeout: seconds the run may take; past that it (and every run under it) is
            cancelled and it ends with a :class:`RunTimeoutError`.
        thread_id: the conversation (thread) a root run belongs to, in a runtime
            with a store: the thread's messages are loaded before the run and its new
            messages appended when it ends (ignored on runs inside another run).
        resume: continue a paused run (a :class:`Resume`): this root run replays it
            from its journal and goes on with the person's decisions; its input is
            the paused run's (pass ``None``).
        state: the shared state a root run begins with (a JSON object; ``{}`` if not
            given): every run of its tree reads it and tools change it (see
            :class:`SharedState`); each change is a ``state`` custom event holding a
            ``StateDelta``. Ignored on runs inside another run (the tree has one state,
            the root's).
    """

    run_name: str | None = None
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(factory=dict)
    run_id: str | None = None
    callbacks: tuple[Any, ...] = ()
    timeout: float | None = None
    thread_id: str | None = None
    resume: Resume | None = None
    state: dict[str, Any] | None = None

    def with_run_id(self, run_id: str) -> RunConfig:
        """This config, naming its run ``run_id`` (``attrs.evolve`` without reading
        each field by name: a stream names its run so, once per run)."""
        return RunConfig(  # every field, in order (a test compares it with evolve)
            self.run_name,
            self.tags,
            self.metadata,
            run_id,
            self.callbacks,
            self.timeout,
            self.thread_id,
            self.resume,
            self.state,
        )

    def merged(self, other: RunConfig) -> RunConfig:
        """``other`` applied over this config: tags, metadata and callbacks add up;
        for every other setting ``other``'s wins where it has one."""
        if other is EMPTY_CONFIG:  # the common case: a call without settings
            return self
        if self is EMPTY_CONFIG:
            return other
        return RunConfig(
            **{
                name: _MERGE.get(name, _latest)(getattr(self, name), getattr(other, name))
                for name in _CONFIG_KEYS
            }
        )


def _latest(earlier: Any, later: Any) -> Any:
    return later if later is not None else earlier


_MERGE: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "tags": lambda earlier, later: merge_tags(earlier, later),
    "metadata": lambda earlier, later: {**earlier, **later} if later else earlier,
    "callbacks": lambda earlier, later: earlier + later,
}
"""How a setting given again combines with the one before (default: it replaces it)."""

_CONFIG_KEYS: Final = tuple(f.name for f in attrs.fields(RunConfig))
EMPTY_CONFIG = RunConfig()


class RunOptions(TypedDict, total=False):
    """Per-call settings of a run, as keywords (see :class:`RunConfig`)."""

    run_name: str
    tags: Iterable[str]
    metadata: Mapping[str, Any]
    run_id: str
    callbacks: Iterable[Any]
    timeout: float
    thread_id: str
    resume: Resume
    state: Mapping[str, Any]


def make_config(config: RunConfig | Mapping[str, Any] | None = None, **settings: Any) -> RunConfig:
    """Build a :class:`RunConfig` from a config object or LangChain-style dict plus keywords
    (those of :class:`RunOptions`; ``None`` stands for not given).

    Raises:
        TypeError: a field has the wrong type (the message names the field), or an
            unknown keyword.
        ValueError: the dict has keys that are not config fields; a field's value is
            out of range.
    """
    base = EMPTY_CONFIG
    if isinstance(config, RunConfig):
        base = config
    elif isinstance(config, Mapping):
        unknown = set(config) - set(_CONFIG_KEYS)
        if unknown:
            raise ValueError(
                f"config has unknown keys {sorted(unknown)}; allowed: {', '.join(_CONFIG_KEYS)}"
            )
        base = _checked(config)
    elif config is not None:
        raise TypeError(f"config must be a RunConfig or a dict, got {type(config).__name__}")
    unknown = set(settings) - set(_CONFIG_KEYS)
    if unknown:
        raise TypeError(f"make_config() got an unexpected keyword argument {sorted(unknown)[0]!r}")
    if all(value is None for value in settings.values()):
        return base
    return base.merged(_checked(settings))


MAX_THREAD_ID: Final = 256


def _non_empty(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _checked(settings: Mapping[str, object]) -> RunConfig:
    """A config of ``settings`` (known keys), each checked by its field's check."""
    return RunConfig(
        **{
            key: _CHECKS[key](value, key)
            for key, value in settings.items()
            if value is not None and key in _CHECKS
        }
    )


def _resume(value: object, what: str) -> Resume:
    if isinstance(value, Resume):
        return value
    raise TypeError(f"{what} must be a Resume(run_id, decisions), got {type(value).__name__}")


def check_thread_id(value: object, what: str = "thread_id") -> str:
    """``value`` if it is a thread id: a string of 1 to 256 printable characters.

    Raises:
        TypeError: not a string; ``ValueError``: empty, too long or not printable
            (``what`` names the field).
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_THREAD_ID or not value.isprintable():
        raise ValueError(
            f"{what} must be 1 to {MAX_THREAD_ID} printable characters, got {value!r:.80}"
        )
    return value


def metadata_dict(value: object, what: str) -> dict[str, Any]:
    """``value`` (a mapping with string keys) as a new dict.

    Raises:
        TypeError: not a mapping, or a key that is not a string; ``what`` names it.
    """
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a dict, got {type(value).__name__}")
    bad_keys = [k for k in value if not isinstance(k, str)]
    if bad_keys:
        raise TypeError(f"{what} keys must be strings, got {bad_keys!r}")
    return dict(value)


def merge_tags(first: tuple[str, ...], more: tuple[str, ...]) -> tuple[str, ...]:
    """``first`` then the tags of ``more`` not already there, order kept."""
    if not more:
        return first
    if not first:
        return more
    return first + tuple(t for t in more if t not in first)


def child_context(
    parent: RunContext | None,
    kind: str,
    name: str,
    tags: tuple[str, ...],
    metadata: dict[str, Any],
    config: RunConfig,
    replay: Replay | None = None,
    resumes: str | None = None,
    decisions: Mapping[str, Decision] | None = None,
    rebuild_state: Mapping[str, Any] | None = None,
) -> RunContext:
    """The context of a new run of a performer (``name``, ``tags``, ``metadata``)
    called with ``config`` by code working for ``parent``; ``replay`` is what it asked
    for before, if it is run again (see :mod:`runtime._replay`); ``rebuild_state``, the
    journaled state a root run replayed from its journal began with (its answered
    requests' patches are applied again)."""
    own_tags = merge_tags(tags, config.tags)
    own_meta: dict[str, Any] = {**metadata, **config.metadata} if config.metadata else metadata
    if parent is None:
        parent_ids: tuple[str, ...] = ()
        all_tags = own_tags
        all_meta = own_meta
    else:
        parent_ids = (*parent.parent_ids, parent.run_id)
        all_tags = merge_tags(parent.tags, own_tags)
        all_meta = {**parent.metadata, **own_meta} if own_meta else parent.metadata
    gate = parent.gate if parent is not None and parent.gate is not None else Gate()
    handlers = parent.handlers if parent is not None else ()
    if config.callbacks:
        handlers = handlers + config.callbacks
    if decisions is None:
        decisions = parent.decisions if parent is not None else NO_DECISIONS
    if parent is not None:
        state = parent.state
    elif rebuild_state is not None:
        state = StateCell(rebuild_state, rebuild=True)
    else:
        state = StateCell(config.state)
    # Positional, in field order (a keyword costs a match by name per argument, at
    # every run's start): run_id, parent_ids, name, kind, tags, metadata, gate,
    # handlers, replay, decisions, resumes, state.
    return RunContext(
        config.run_id or new_run_id(),
        parent_ids,
        config.run_name or name,
        kind,
        all_tags,
        all_meta,
        gate,
        handlers,
        replay,
        decisions,
        resumes,
        state,
    )


def unwatched(parent: RunContext | None, config: RunConfig) -> RunConfig:
    """``config`` without the callback handlers that already watch ``parent``'s run, and
    with each handler once (LangChain calls a handler once per event however often it
    is given)."""
    if not config.callbacks:
        return config
    seen: list[Any] = list(parent.handlers) if parent is not None else []
    fresh: list[Any] = []
    for handler in config.callbacks:
        if not any(handler is other for other in seen):
            seen.append(handler)
            fresh.append(handler)
    if len(fresh) == len(config.callbacks):
        return config
    return attrs.evolve(config, callbacks=tuple(fresh))


current_run_var: ContextVar[RunContext | None] = ContextVar("troupe_current_run", default=None)
current_runtime_var: ContextVar[Any] = ContextVar("troupe_current_runtime", default=None)
"""The runtime the calling code runs in: a ``Runtime`` (typed loosely here, in the layer
below it), or ``None``."""

_ROOT_METADATA_HOOKS: list[Callable[[], Mapping[str, Any]]] = []


def add_root_metadata_hook(hook: Callable[[], Mapping[str, Any]]) -> None:
    """Call ``hook`` where a root run is asked for (in the caller's task, with the
    caller's context), and add what it returns to the run's metadata, which every run
    of its tree inherits. For context that lives in the caller's task and must reach
    an exporter, such as OpenTelemetry's current span (``traceparent``)."""
    if hook not in _ROOT_METADATA_HOOKS:
        _ROOT_METADATA_HOOKS.append(hook)


def with_root_metadata(config: RunConfig) -> RunConfig:
    """``config`` with the root metadata hooks' additions (the config's own win)."""
    if not _ROOT_METADATA_HOOKS:
        return config
    extra: dict[str, Any] = {}
    for hook in _ROOT_METADATA_HOOKS:
        extra.update(hook())
    if not extra:
        return config
    return attrs.evolve(config, metadata={**extra, **config.metadata})


def current_run() -> RunContext | None:
    """The context of the run the calling code is working for, if any."""
    return current_run_var.get()


_CHECKS: Final[dict[str, Callable[[object, str], Any]]] = {
    "run_name": _non_empty,
    "tags": string_tuple,
    "metadata": metadata_dict,
    "run_id": _non_empty,
    "callbacks": lambda value, _: check_subscribers(value),
    "timeout": seconds,
    "thread_id": check_thread_id,
    "resume": _resume,
    "state": checked_state,
}
"""Each setting's check: it returns the value as the config keeps it, or raises
naming the setting. A new setting of :class:`RunConfig` needs a line here and one in
:class:`RunOptions`."""
