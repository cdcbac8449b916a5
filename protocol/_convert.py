"""The package's one cattrs converter: protocol objects to JSON-able data and back.

Every protocol class except the event envelope (:class:`StreamEvent`,
:class:`EventData` and :class:`RunInfo`, which keep LangChain's flat dict shape)
unstructures with a ``"$type"`` key naming its class. That tag is what lets unions (a
conversation's messages, the tracer's mail) and untyped payloads (an event's ``input``,
``output`` and ``chunk``) structure back into the right class: JSON -> object -> JSON is
the identity.

A plain dict (not a protocol object) that has a ``"$type"`` key itself would read back as
the protocol object its tag names (a tool that returns ``{"$type": "UserMessage",
"content": "hi"}``), or fail to (``{"$type": "UserMessage", "text": "hi"}``). So where
such a dict is written for an ``Any`` position (an event's ``input``, ``output`` and
``chunk``, a custom event's data, a state patch's value, a value of a ``dict[str, Any]``
field, each item of a list there, nested or not), it is *escaped*: written as
``{"$type": "$dict", "value": {...}}`` (:data:`DICT_TAG`), the dict's keys as they are
and its values written for ``Any`` positions in turn, and :func:`structure_any` reads
that back as exactly the dict (whatever its ``"$type"`` holds: a class's name, another
string, a number). Nothing else is written differently: a dict without a ``"$type"``
key is its own JSON, as before. A field typed ``dict[str, Any]`` (a tool's JSON schema,
a run's metadata) is not an ``Any`` position itself: its dict is written as it is
(read back by its type, it is never taken for a tagged object), its values escaped
where they need it; a tool call's ``args`` (JSON the model wrote, read back as it is)
is written as it is all through. Journals of schema 7 on may hold the escape (an older
process would read it as a dict of two keys: see docs/journal.md, "Stores").
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Final, Literal, TypeVar, Union, get_args, get_origin

import attrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.json import JsonConverter, make_converter

from ._chat import (
    AssistantMessage,
    AssistantMessageChunk,
    InvalidToolCall,
    SystemMessage,
    ToolCall,
    ToolCallChunk,
    ToolMessage,
    ToolSpec,
    Usage,
    UserMessage,
)
from ._events import CUSTOM_EVENT, EventData, RunInfo, RunStatus, StreamEvent
from ._fast import checks, constructor
from ._frozen import FrozenDict, FrozenList, frozen_json
from ._lifecycle import (
    IN_PROCESS_ONLY,
    CustomEventDispatched,
    RunEnded,
    RunFailed,
    RunStarted,
    RunStreamed,
    RunStreamedMany,
)
from ._mail import (
    ActionsChunk,
    AgentAction,
    AgentOutput,
    AgentRequest,
    AgentStep,
    ChatRequest,
    FinishChunk,
    ResponseFormat,
    StepsChunk,
    ToolRequest,
)
from ._pause import Decision, Paused, PendingRequest
from ._state import StateDelta

TYPE_KEY: Final = "$type"
DICT_TAG: Final = "$dict"
"""The tag of an escaped plain dict, ``{"$type": "$dict", "value": {...}}`` (see the
module's docstring): no class is named so."""
_DICT_VALUE: Final = "value"

T = TypeVar("T")

TAGGED_CLASSES: Final[tuple[type, ...]] = (
    Usage,
    ToolCall,
    InvalidToolCall,
    ToolCallChunk,
    SystemMessage,
    UserMessage,
    AssistantMessage,
    ToolMessage,
    AssistantMessageChunk,
    ToolSpec,
    AgentRequest,
    ResponseFormat,
    ChatRequest,
    ToolRequest,
    AgentAction,
    AgentStep,
    ActionsChunk,
    StepsChunk,
    FinishChunk,
    AgentOutput,
    PendingRequest,
    Paused,
    Decision,
    StateDelta,
    RunStarted,
    RunStreamed,
    RunStreamedMany,
    RunEnded,
    RunFailed,
    CustomEventDispatched,
)
"""Classes that carry a ``"$type"`` tag in JSON."""

_BY_TAG: Final[dict[str, type]] = {cls.__name__: cls for cls in TAGGED_CLASSES}
_BY_CLASS: Final = frozenset(TAGGED_CLASSES)
_STRUCTURE_TAGGED: Final[dict[str, Callable[[dict[str, Any]], Any]]] = {}
"""Each tag's structure function (filled as the converter is made; see
:func:`_fast_structure_fn`)."""
_UNTAGGED: Final = (StreamEvent, EventData, RunInfo)
"""Classes of the event envelope: plain JSON objects, in LangChain's shape."""
_CONVERTED: Final = frozenset((*TAGGED_CLASSES, *_UNTAGGED))
"""The classes the converter writes (a set: :func:`unstructure_any` asks it of every
value inside a payload, and ``in`` a dict's values compares them one by one)."""


class SerializationError(TypeError):
    """A value cannot be turned into JSON (or back) by the protocol converter."""


def shown_repr(value: Any) -> str:
    """``repr(value)``, or what stands for it if that fails: a payload's repr is
    written where it has no JSON form, and whatever it raises must not reach the
    tracer that hands the journal its events (the whole runtime would stop)."""
    try:
        return repr(value)
    except Exception:
        cls = type(value)
        return f"<{cls.__module__}.{cls.__qualname__} whose repr failed>"


def _too_deep(value: Any) -> SerializationError:
    """What a value that holds itself (or nests past Python's stack) raises."""
    cls = type(value)
    return SerializationError(
        f"cannot serialize a {cls.__module__}.{cls.__qualname__} to JSON: it is "
        "nested too deeply (or holds itself)"
    )


def unstructure_any(value: Any) -> Any:
    """``value`` as JSON-ready data: JSON values as they are, protocol objects as the
    converter writes them (tagged).

    Raises:
        SerializationError: a value is neither (or it holds itself).
    """
    if value is None or isinstance(value, str | bool | int | float):
        return value
    cls = type(value)
    try:
        converted = cls in _CONVERTED
    except TypeError:  # a class its metaclass made unhashable (an __eq__ alone): not ours
        converted = False
    try:
        if converted:
            return converter.unstructure(value, cls)
        if isinstance(value, dict):
            if "$type" in value:  # (TYPE_KEY: escaped, see the module's docstring)
                return {TYPE_KEY: DICT_TAG, _DICT_VALUE: unstructure_entries(value)}
            return {_key(k): unstructure_any(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [unstructure_any(v) for v in value]
    except RecursionError:  # a value that holds itself (or nests past Python's stack)
        raise _too_deep(value) from None
    raise SerializationError(
        f"cannot serialize a {cls.__module__}.{cls.__qualname__} to JSON: payloads must be "
        "JSON values (dict, list, str, int, float, bool, None) or protocol objects"
    )


def unstructure_entries(value: dict[Any, Any]) -> dict[str, Any]:
    """The dict ``value`` written for a position typed ``dict[str, Any]``: its keys
    as they are (text), its values as :func:`unstructure_any` writes them; not escaped
    itself (its type says it is a dict), as the converter writes such a field.

    Raises:
        SerializationError: a key is not text, or a value has no JSON form.
    """
    try:
        return {_key(k): unstructure_any(v) for k, v in value.items()}
    except RecursionError:  # as unstructure_any says it
        raise _too_deep(value) from None


def unstructure_as_is(value: Any) -> Any:
    """A tool call's ``args`` (JSON the model wrote, which its structure function takes
    back as it is, see :func:`_fast_structure_fn`) as JSON: its dicts written as they
    are, none escaped (a ``"$type"`` key in them is read back as it is); anything else
    in it as :func:`unstructure_any` writes it.

    Raises:
        SerializationError: a value has no JSON form.
    """
    try:
        return _as_is(value)
    except RecursionError:  # as unstructure_any says it
        raise _too_deep(value) from None


def _dict_as_is(value: Any) -> dict[str, Any]:
    """A tool call's ``args`` field as the converter writes it: :func:`unstructure_as_is`
    of its dict (its items read as cattrs' hook for a dict reads them: what is no dict
    fails as it did)."""
    try:
        return {_key(k): _as_is(v) for k, v in value.items()}
    except RecursionError:  # as unstructure_any says it
        raise _too_deep(value) from None


def _as_is(value: Any) -> Any:
    if isinstance(value, dict) and type(value) not in _CONVERTED:
        return {_key(k): _as_is(v) for k, v in value.items()}
    if isinstance(value, list | tuple) and type(value) not in _CONVERTED:
        return [_as_is(v) for v in value]
    return unstructure_any(value)


_FIELDS: Final[dict[type, tuple[str, tuple[str, ...]]]] = {
    cls: (
        cls.__name__,
        tuple(f.name for f in attrs.fields(cls) if not f.metadata.get(IN_PROCESS_ONLY)),
    )
    for cls in TAGGED_CLASSES
}
"""Each tagged class's tag and the fields its JSON holds (see :func:`unstructure_known`)."""
_TYPED: Final[dict[type, dict[str, Callable[[Any], Any]]]] = {}
"""Of each tagged class with fields typed to hold dicts (``dict[str, Any]``, optional
or not, a tuple of them): each such field's unstructure function, the converter's (such
a dict is not escaped: see the module's docstring). Filled once the converter is made."""
_SCALARS: Final = frozenset((str, int, float, bool, type(None)))


def _vouch_test(hint: Any, expr: str, converted: bool = False) -> str | None:
    """Generated code: whether the value ``expr`` of a field typed ``hint`` (whose
    converter is ``frozen_json`` if ``converted``) can never change in place: ``"True"``
    by its type alone, a test of the value, or ``None`` (it may: ``Any``, a list)."""
    if hint in _SCALARS or get_origin(hint) is Literal:
        return "True"
    if get_origin(hint) is dict:  # read-only, made so or given so
        return "True" if converted else f"type({expr}) is _frozen"
    if get_origin(hint) in (Union, type(int | str)):
        tests = [_vouch_test(arg, expr) for arg in get_args(hint)]
        return "True" if all(t == "True" for t in tests) else None
    if get_origin(hint) is tuple:
        args = get_args(hint)
        return "True" if all(_vouch_test(a, "") == "True" for a in args if a is not ...) else None
    if hint in _FIELDS:
        test = _class_vouch_test(hint, expr)
        if test is None or test == "True":
            return test
        return f"(type({expr}) is {hint.__name__} and {test})"
    return None


def _class_vouch_test(cls: type, expr: str) -> str | None:
    """Generated code: whether the object ``expr`` of the tagged class ``cls`` vouches
    for its JSON by its identity: nothing in it changes in place (see
    :func:`identity_vouches`)."""
    tests: list[str] = []
    attrs.resolve_types(cls)
    for field in attrs.fields(cls):
        if field.name not in _FIELDS[cls][1]:
            continue
        test = _vouch_test(field.type, f"{expr}.{field.name}", field.converter is frozen_json)
        if test is None:
            return None
        if test != "True":
            tests.append(test)
    return " and ".join(tests) or "True"


def _vouch_fn(cls: type) -> Callable[[Any], bool] | Literal[True] | None:
    """:func:`identity_vouches` of an object of the tagged class ``cls``: ``True`` by
    its class, a test of the object, or ``None`` (never)."""
    test = _class_vouch_test(cls, "value")
    if test is None or test == "True":
        return None if test is None else True
    namespace: dict[str, Any] = {"_frozen": FrozenDict, **{c.__name__: c for c in _FIELDS}}
    exec(
        compile(f"def vouches(value):\n    return {test}", f"<vouches {cls.__qualname__}>", "exec"),
        namespace,
    )
    vouches: Callable[[Any], bool] = namespace["vouches"]
    return vouches


_VOUCHES: Final = {cls: _vouch_fn(cls) for cls in TAGGED_CLASSES}
"""Each tagged class's :func:`identity_vouches`: ``True``, a test, or ``None``."""
VOUCHING_CLASSES: Final = frozenset(cls for cls, vouches in _VOUCHES.items() if vouches is True)
"""The protocol classes whose every object vouches for its JSON by its identity
(:func:`identity_vouches`): messages, chunks, tool calls (their dicts read-only)."""
_EXACT_SCALARS: Final = frozenset((str, int, bool, type(None)))
"""Scalars whose ``==`` of the same type is JSON's (not a float: ``-0.0 == 0.0``)."""


def unstructure_known(value: Any, known: dict[int, tuple[Any, Any]]) -> Any:
    """:func:`unstructure_any`, reusing the JSON of the protocol objects already in
    ``known`` (by ``id``: the object, kept alive, and its JSON) and adding those it
    makes (those whose identity vouches for it, :func:`identity_vouches`): a
    conversation that grows by a message a turn is turned into JSON once, not once per
    turn. The JSON is the converter's, field by field (a tagged object's
    fields hold JSON values, tuples and tagged objects; anything else inside it goes
    through :func:`unstructure_any` as its field's hook would).

    Raises:
        SerializationError: a value is neither a JSON value nor a protocol object.
    """
    cls = type(value)
    if cls in _SCALARS:
        return value
    fields = _FIELDS.get(cls)
    if fields is not None:
        seen = known.get(id(value))
        if seen is not None and seen[0] is value:
            return seen[1]
        tag, names = fields
        shown = {TYPE_KEY: tag}
        typed = _TYPED.get(cls)
        for name in names:
            if typed is not None and name in typed:  # (a dict field, as the converter writes it)
                shown[name] = typed[name](getattr(value, name))
            else:
                shown[name] = unstructure_known(getattr(value, name), known)
        vouches = _VOUCHES[cls]
        if vouches is True or (vouches is not None and vouches(value)):
            known[id(value)] = (value, shown)  # (else it may change in place: made again)
        return shown
    try:
        if cls is list or cls is tuple:
            return [unstructure_known(item, known) for item in value]
        if cls is dict:
            shown = {_key(k): unstructure_known(v, known) for k, v in value.items()}
            if "$type" in value:  # (escaped, as unstructure_any writes it)
                return {TYPE_KEY: DICT_TAG, _DICT_VALUE: shown}
            return shown
    except RecursionError:  # as unstructure_any says it (a replay shows its repr)
        raise _too_deep(value) from None
    return unstructure_any(value)


def matches_known(value: Any, expected: Any, known: dict[int, tuple[Any, Any]]) -> bool:
    """Whether ``unstructure_known(value, known)`` is the same JSON as ``expected``
    (:func:`same_json`), told without making the JSON: both are walked together, field
    by field, and the JSON of the objects in ``known`` is compared as it is. ``True``
    only where they are the same; ``False`` where they differ or the walk cannot tell
    (a value with no JSON form, a NaN): make the JSON to be sure (a replay compares
    what a run asks and streams again with its journal, and nearly all of it is
    equal). Scalars are equal only of the same type and JSON (``True`` and
    ``1``, ``1`` and ``1.0``, or ``-0.0`` and ``0.0``, are told apart: then the JSON is
    made, and compared as :func:`same_json` does), so that a protocol object found
    equal can be added to ``known`` with ``expected`` as its JSON: the very JSON it has
    (as ``unstructure_known`` would have added what it made), if its identity vouches
    for it (:func:`identity_vouches`: an agent's action made with a plain dict is
    walked again each time, it may have changed in place). Each tagged class is walked
    by code of its own (:func:`_fast_match_fn`)."""
    cls = type(value)
    if cls in _SCALARS:  # of its type exactly (JSON read back keeps 1, 1.0 and True apart)
        if cls is float:  # as JSON writes it: -0.0 is not 0.0 (nor NaN unlike NaN)
            return type(expected) is float and same_json(value, expected)
        return type(expected) is cls and bool(value == expected)
    match = _MATCH_TAGGED.get(cls)
    if match is not None:
        seen = known.get(id(value))
        if seen is not None and seen[0] is value:
            # Its JSON, as known (the journal's, or made): the very object mostly, else
            # compared as JSON (``==`` would take ``true`` for ``1``).
            return seen[1] is expected or same_json(seen[1], expected)
        return match(value, expected, known)
    # A list's and a dict's items walked here (a scalar compared in place: most are,
    # and a call each is most of it), as the generated code walks a field's.
    if isinstance(value, list | tuple):
        if type(expected) is not list or len(expected) != len(value):
            return False
        for item, wanted in zip(value, expected, strict=True):
            kind = type(item)
            if kind in _EXACT_SCALARS:
                if type(wanted) is not kind or item != wanted:
                    return False
                continue
            # (a tagged item's walk called from here, its known JSON compared here:
            # a conversation's messages are mostly known, and a call each is most of it)
            match = _MATCH_TAGGED.get(kind)
            if match is None:
                if not matches_known(item, wanted, known):
                    return False
                continue
            seen = known.get(id(item))
            if seen is not None and seen[0] is item:
                if seen[1] is not wanted and not same_json(seen[1], wanted):
                    return False
            elif not match(item, wanted, known):
                return False
        return True
    if isinstance(value, dict) and cls not in _CONVERTED:
        if "$type" in value:  # (written escaped: see unstructure_any)
            if (
                type(expected) is not dict
                or len(expected) != 2
                or expected.get(TYPE_KEY) != DICT_TAG
            ):
                return False
            expected = expected.get(_DICT_VALUE)
        if type(expected) is not dict or len(expected) != len(value):
            return False
        get = expected.get
        for key, item in value.items():
            wanted = get(key if type(key) is str else _written_key(key), _ABSENT)
            if type(item) in _EXACT_SCALARS:
                if type(wanted) is not type(item) or item != wanted:
                    return False
            elif wanted is _ABSENT or not matches_known(item, wanted, known):
                return False
        return True
    try:
        # (a str, int or float subclass, an enum: of its JSON type, not ``==``'s, where
        # an IntEnum's 1 equals the journal's true; a float's sign of zero counts)
        return same_json(unstructure_any(value), expected)
    except SerializationError:
        return False


def _written_key(key: object) -> object:
    """The key a JSON object read back has for the dict key ``key`` that is not
    exactly a ``str``: a ``str`` subclass's text (an ``enum.StrEnum`` member's value,
    as ``json.dumps`` writes it), else :data:`_ABSENT` (no JSON form)."""
    return str.__str__(key) if isinstance(key, str) else _ABSENT


_MATCH_TAGGED: Final[dict[type, Callable[[Any, Any, dict[int, tuple[Any, Any]]], bool]]] = {}
"""Each tagged class's walk for :func:`matches_known` (filled below, once the function
is defined: the generated code calls it for what it holds)."""


def _fast_match_fn(cls: type) -> Callable[[Any, Any, dict[int, tuple[Any, Any]]], bool]:
    """:func:`matches_known` of an object of the tagged class ``cls`` (not known yet),
    as generated code: its fields read by name (no ``getattr``, no loop over their
    names), a scalar compared in place, a tuple's and a plain or frozen dict's items
    walked in place (a scalar item compared there, anything else by
    :func:`matches_known`), the rest by :func:`matches_known`. Strict as it is: a
    scalar equal only to one of its type, a tuple to a list of as many items, a dict to
    a dict of the same keys. Equal, the object is known by ``expected`` after, if
    nothing in it changes in place (:func:`identity_vouches`). About
    half the instructions of the walk by names (a replayed agent turn's two chunks and
    two requests, measured under callgrind: see docs/journal.md)."""
    tag, names = _FIELDS[cls]
    namespace: dict[str, Any] = {
        "_absent": _ABSENT,
        "_scalars": _EXACT_SCALARS,
        "_matches": matches_known,
        "_tagged": _MATCH_TAGGED.get,  # (filled once every walk is made: read at call time)
        "_same": same_json,
        "_written_key": _written_key,
        "_frozen": FrozenDict,
        "_flist": FrozenList,
    }
    lines = [
        "def match(value, expected, known):",
        f"    if type(expected) is not dict or len(expected) != {len(names) + 1}"
        f" or expected.get({TYPE_KEY!r}) != {tag!r}:",
        "        return False",
        "    get = expected.get",
    ]
    scalar = [
        "        if type(w) is not type(i) or i != w:",
        "            return False",
    ]

    def walked(item: str, wanted: str, indent: str) -> list[str]:
        """Lines: ``item`` (not a scalar) walked against ``wanted``: a tagged object
        by its class's walk, called from here, or by its known JSON, compared here (as
        :func:`matches_known` does; a call less for each)."""
        return [
            indent + f"walk = _tagged(type({item}))",
            indent + "if walk is None:",
            indent + f"    if not _matches({item}, {wanted}, known):",
            indent + "        return False",
            indent + "else:",
            indent + f"    seen = known.get(id({item}))",
            indent + f"    if seen is not None and seen[0] is {item}:",
            indent + f"        if seen[1] is not {wanted} and not _same(seen[1], {wanted}):",
            indent + "            return False",
            indent + f"    elif not walk({item}, {wanted}, known):",
            indent + "        return False",
        ]

    attrs.resolve_types(cls)
    hints = {field.name: field.type for field in attrs.fields(cls)}
    as_is = {field.name for field in attrs.fields(cls) if _read_as_is(field)}
    namespace["_as_is"] = unstructure_as_is
    for name in names:
        # A dict in a field typed to hold one is written as it is; in any other (an
        # ``Any`` field), one with a "$type" key is escaped: matches_known walks it.
        plain = "" if _holds_dicts(hints[name]) else ' and "$type" not in item'
        # A tool call's ``args`` hold JSON written as it is all through: its items are
        # compared as JSON (made only where they are not, or differ).
        inner = (
            "elif w is _absent or not (_same(i, w) or _same(_as_is(i), w)):"
            if name in as_is
            else "elif w is _absent or not _matches(i, w, known):"
        )
        lines += [
            f"    item = value.{name}",
            f"    wanted = get({name!r}, _absent)",
            "    kind = type(item)",
            "    if kind in _scalars:",
            "        if type(wanted) is not kind or item != wanted:",
            "            return False",
            "    elif kind is tuple or kind is _flist or kind is list:",
            "        if type(wanted) is not list or len(wanted) != len(item):",
            "            return False",
            "        for i, w in zip(item, wanted):",
            "            if type(i) in _scalars:",
            *["        " + line for line in scalar],
            "            else:",
            *walked("i", "w", "                "),
            f"    elif (kind is _frozen or kind is dict){plain}:",
            "        if type(wanted) is not dict or len(wanted) != len(item):",
            "            return False",
            "        for k, i in item.items():",
            "            w = wanted.get(k if type(k) is str else _written_key(k), _absent)",
            "            if type(i) in _scalars:",
            *["        " + line for line in scalar],
            f"            {inner}",
            "                return False",
            "    elif wanted is _absent:",
            "        return False",
            "    else:",
            *walked("item", "wanted", "        "),
        ]
    # Known by ``expected`` after, if nothing in it changes in place (identity_vouches)
    test = _class_vouch_test(cls, "value")
    if test == "True":
        lines.append("    known[id(value)] = (value, expected)")
    elif test is not None:
        namespace.update((c.__name__, c) for c in _FIELDS)
        lines += [f"    if {test}:", "        known[id(value)] = (value, expected)"]
    lines.append("    return True")
    exec(compile("\n".join(lines), f"<fast match {cls.__qualname__}>", "exec"), namespace)
    match: Callable[[Any, Any, dict[int, tuple[Any, Any]]], bool] = namespace["match"]
    return match


_ABSENT: Final = object()
"""A key :func:`matches_known` does not find."""


def _read_as_is(field: attrs.Attribute[Any]) -> bool:
    """Whether ``field`` holds JSON data read back as it is (a tool call's ``args``,
    frozen by its converter), written so (see :func:`unstructure_as_is`)."""
    converter: Any = field.converter  # (attrs types it as a Converter; ours are functions)
    return converter is frozen_json and get_origin(field.type) is dict


def _holds_dicts(hint: Any) -> bool:
    """Whether a field typed ``hint`` holds dicts by its type (``dict[str, Any]``,
    optional or not, or a tuple of them), which the converter writes as they are (not
    escaped; an ``Any`` field's dict is escaped if it has a ``"$type"`` key)."""
    origin = get_origin(hint)
    if origin is dict:
        return True
    if origin in (Union, type(int | str)):
        return any(_holds_dicts(arg) for arg in get_args(hint) if arg is not type(None))
    if origin is tuple:
        return any(_holds_dicts(arg) for arg in get_args(hint) if arg is not Ellipsis)
    return False


def same_json(value: Any, other: Any) -> bool:
    """Whether the JSON values ``value`` and ``other`` (as :func:`unstructure_any` makes
    them, or ``json.loads`` reads them) are the same JSON: ``==``, but of the same JSON
    type all through (Python's ``True == 1`` and ``1 == 1.0`` hold; JSON's ``true``, ``1``
    and ``1.0`` differ, and are read back apart), NaN the same as NaN (written and
    read back as ``NaN``; Python's ``==`` says no), and ``-0.0`` not ``0.0`` (Python's
    ``==`` says yes; written and read back apart). A tuple is the list of its
    items, a dict's keys are in any order, a ``str`` or ``int`` subclass (an enum) is
    the string or number it is written as. What a journal holds is compared so: a
    replay that asks or streams again what it did (:func:`matches_known` is this, told
    without making the JSON), and a delta encoder's items written before."""
    if value is other:
        return True
    cls = type(value)
    if cls is type(other):
        if cls is str or cls is int or cls is bool:
            return bool(value == other)
        kind = cls if cls is dict or cls is list else _json_kind(value)
    else:  # (subclasses: a tuple, a frozen dict, an enum; what is no JSON value)
        kind = _json_kind(value)
        if kind is not _json_kind(other):
            return False
    if kind is dict:
        if len(value) != len(other):
            return False
        get = other.get
        return _all_same((item, get(key, _ABSENT)) for key, item in value.items())
    if kind is list:
        return len(value) == len(other) and _all_same(zip(value, other, strict=True))
    if kind is float:  # its JSON text: NaN is NaN, and -0.0 is not 0.0 (read back apart)
        return float.__repr__(value) == float.__repr__(other)
    return bool(value == other)


def _all_same(pairs: Iterable[tuple[Any, Any]]) -> bool:
    """Whether each pair is the same JSON (:func:`same_json`), a list's or a dict's."""
    for item, wanted in pairs:
        # (a string or an integer compared here: most items are, and a call each is
        # most of it)
        kind = type(item)
        if kind is type(wanted) and (kind is str or kind is int or kind is bool):
            if item != wanted:
                return False
        elif item is not wanted and not same_json(item, wanted):
            return False
    return True


def _json_kind(value: Any) -> type | None:
    """The JSON type ``value`` is written as (``None`` for none of them)."""
    for kind in (bool, int, float, str, dict):
        if isinstance(value, kind):
            return kind
    if isinstance(value, list | tuple):
        return list
    return type(None) if value is None else None


def _walk_made_when_first_called(
    cls: type,
) -> Callable[[Any, Any, dict[int, tuple[Any, Any]]], bool]:
    """``cls``'s place in ``_MATCH_TAGGED`` until its walk is first called: it makes the
    walk (:func:`_fast_match_fn`), puts it in its place, and calls it. Compiling the 30
    walks was over half of what importing the protocol cost (about 140 ms of 250), paid
    by every process, while only a replay compares; a process that compares makes each
    class's walk once (two threads at once may both make it: the same code)."""

    def first(value: Any, expected: Any, known: dict[int, tuple[Any, Any]]) -> bool:
        match = _MATCH_TAGGED[cls] = _fast_match_fn(cls)
        return match(value, expected, known)

    return first


_MATCH_TAGGED.update((cls, _walk_made_when_first_called(cls)) for cls in TAGGED_CLASSES)


def identity_vouches(value: Any) -> bool:
    """Whether ``value``'s identity vouches for its JSON: nothing in it can change in
    place (a scalar; a message; a protocol object whose dicts are read-only, a
    :class:`FrozenDict`), so that the JSON it was found to have is the JSON it has
    whenever it is met again. An agent's action made with a plain dict, a tool's
    schema, a request's ``Any`` arguments: a change in place would not be seen."""
    if isinstance(value, str | int | float) or value is None:
        return True
    try:
        vouches = _VOUCHES.get(type(value))
    except TypeError:  # a class its metaclass made unhashable: not ours
        return False
    return vouches is not None and (vouches is True or bool(vouches(value)))


def json_default(value: Any) -> Any:
    """For ``json.dumps(obj, default=json_default)``: protocol objects (step chunks,
    messages, events) as the converter writes them.

    Raises:
        TypeError: ``value`` is not a protocol object (as ``json.dumps`` expects).
    """
    cls = type(value)
    if cls in _CONVERTED:
        return converter.unstructure(value, cls)
    raise TypeError(f"Object of type {cls.__name__} is not JSON serializable")


def _key(key: object) -> str:
    if not isinstance(key, str):
        raise SerializationError(f"JSON object keys must be strings, got {shown_repr(key)}")
    return key


def structure_any(value: Any, _: object = None) -> Any:
    """The inverse of :func:`unstructure_any`: tagged objects become protocol objects
    again, everything else stays as it is."""
    if isinstance(value, dict):
        tag = value.get(TYPE_KEY)
        if isinstance(tag, str):
            structure = _STRUCTURE_TAGGED.get(tag)
            if structure is not None:  # the converter's hook for its class, called direct
                return structure(value)
            if tag == DICT_TAG:  # an escaped dict (see the module's docstring)
                return _unescaped(value)
        return {k: structure_any(v) for k, v in value.items()}
    if isinstance(value, list):
        return [structure_any(v) for v in value]
    return value


def _unescaped(value: dict[str, Any]) -> dict[str, Any]:
    """The plain dict that ``value``, ``{"$type": "$dict", "value": {...}}``, escapes
    (see the module's docstring): exactly the inner dict, its values structured.

    Raises:
        SerializationError: ``value`` is not of that form.
    """
    inner = value.get(_DICT_VALUE)
    if len(value) != 2 or not isinstance(inner, dict):
        raise SerializationError(
            f'an escaped dict is {{"{TYPE_KEY}": "{DICT_TAG}", "{_DICT_VALUE}": {{...}}}}, '
            f"got {shown_repr(value):.200}"
        )
    return {k: structure_any(v) for k, v in inner.items()}


def _structure_tagged(value: Any, cls: type) -> Any:
    if not isinstance(value, dict) or not isinstance(value.get(TYPE_KEY), str):
        raise SerializationError(f"expected an object with a {TYPE_KEY!r} tag, got {value!r}")
    tag = value[TYPE_KEY]
    target = _BY_TAG.get(tag)
    if target is None or not _admits(cls, target):
        raise SerializationError(f"{TYPE_KEY}={tag!r} is not one of {cls}")
    return converter.structure(value, target)


def _admits(union: Any, target: type) -> bool:
    return target in get_args(union)


def _is_tagged_union(tp: Any) -> bool:
    args = [a for a in get_args(tp) if a is not type(None)]
    return (
        get_origin(tp) in (Union, type(int | str))
        and len(args) > 1
        and all(a in _BY_TAG.values() for a in args)
    )


def _is_optional_tagged_union(tp: Any) -> bool:
    return _is_tagged_union(tp) and type(None) in get_args(tp)


def _make_converter() -> JsonConverter:
    conv = make_converter()
    conv.register_unstructure_hook_func(lambda t: t is Any, unstructure_any)
    conv.register_structure_hook_func(lambda t: t is Any, structure_any)
    # Each tagged class's hooks are made when the converter is first asked for one
    # (cattrs keeps what a factory made: no cost per call), and its tag's structure
    # function is made when first called: making the 30 classes' hooks at import was
    # most of what importing the protocol cost (about 100 ms), paid by every process.
    made: dict[type, tuple[Callable[[Any], Any], Callable[[Any, Any], Any]]] = {}

    def hooks(cls: type) -> tuple[Callable[[Any], Any], Callable[[Any, Any], Any]]:
        if cls not in made:
            made[cls] = _tagged_hooks(conv, cls)
        return made[cls]

    def tagged(t: Any) -> bool:
        return isinstance(t, type) and t in _BY_CLASS

    conv.register_unstructure_hook_factory(tagged, lambda cls: hooks(cls)[0])
    conv.register_structure_hook_factory(tagged, lambda cls: hooks(cls)[1])
    for cls in TAGGED_CLASSES:
        # (at once, not with the hooks: unstructure_known and the walks read the
        # fields' resolved types and this table whether or not a hook was made yet)
        attrs.resolve_types(cls)
        typed = _typed_fields(conv, cls)
        if typed:
            _TYPED[cls] = typed
        _STRUCTURE_TAGGED[cls.__name__] = _structure_made_when_first_called(conv, cls)
    conv.register_structure_hook_func(
        _is_optional_tagged_union,
        lambda v, t: None if v is None else _structure_tagged(v, t),
    )
    conv.register_structure_hook_func(_is_tagged_union, _structure_tagged)
    conv.register_unstructure_hook(
        EventData, lambda d: {k: unstructure_any(v) for k, v in d.items()}
    )
    conv.register_structure_hook(EventData, _structure_event_data)
    conv.register_unstructure_hook(StreamEvent, _unstructure_event)
    conv.register_structure_hook(StreamEvent, _structure_event)
    return conv


def _typed_fields(conv: JsonConverter, cls: type) -> dict[str, Callable[[Any], Any]]:
    """The tagged class ``cls``'s fields typed to hold dicts, each with its unstructure
    function (see :data:`_TYPED`); ``cls``'s types resolved."""
    return {
        f.name: _dict_as_is
        if _read_as_is(f)
        else partial(_unstructure_as, conv.unstructure, f.type)
        for f in attrs.fields(cls)
        if not f.metadata.get(IN_PROCESS_ONLY) and _holds_dicts(f.type)
    }


def _structure_made_when_first_called(
    conv: JsonConverter, cls: type
) -> Callable[[dict[str, Any]], Any]:
    """``cls``'s place in ``_STRUCTURE_TAGGED`` until first called: it has the
    converter make ``cls``'s hooks (which put its structure function in its place),
    then calls what is there."""
    tag = cls.__name__

    def first(data: dict[str, Any]) -> Any:
        conv.get_structure_hook(cls)
        return _STRUCTURE_TAGGED[tag](data)

    return first


def _tagged_hooks(
    conv: JsonConverter, cls: type
) -> tuple[Callable[[Any], Any], Callable[[Any, Any], Any]]:
    """The tagged class ``cls``'s unstructure and structure hooks (its tag's structure
    function put in ``_STRUCTURE_TAGGED``). The hooks of the classes its fields hold
    are made first, when cattrs asks for them (no class holds one listed after it)."""
    local: dict[str, Any] = {
        f.name: override(omit=True) for f in attrs.fields(cls) if f.metadata.get(IN_PROCESS_ONLY)
    }
    attrs.resolve_types(cls)
    # A field of JSON data read back as it is (a tool call's ``args``, frozen by its
    # converter): written as it is all through, no dict in it escaped (see
    # unstructure_as_is), and read so by cattrs' code too (the fast code takes it so).
    as_is = {f.name for f in attrs.fields(cls) if _read_as_is(f) and f.name not in local}
    unstructured: dict[str, Any] = {
        **local,
        **dict.fromkeys(as_is, override(unstruct_hook=_dict_as_is)),
    }
    plain_unstructure: Callable[[Any], dict[str, Any]] = make_dict_unstructure_fn(
        cls, conv, **unstructured
    )
    # A field whose converter checks its value (a message's text) is given the JSON value
    # as it is: cattrs' hook for ``str`` would make a list its repr, which the check
    # then takes.
    checked = {f.name for f in attrs.fields(cls) if checks(f.converter)}
    given: dict[str, Any] = {
        **local,
        **dict.fromkeys(checked, override(struct_hook=_as_given)),
        **dict.fromkeys(as_is, override(struct_hook=_dict_as_given)),
    }
    plain_structure: Callable[[Any, Any], Any] = make_dict_structure_fn(cls, conv, **given)
    fast_structure = _fast_structure_fn(cls, conv, plain_structure, set(local), checked)
    tag = cls.__name__
    _STRUCTURE_TAGGED[tag] = fast_structure

    def unstructure(obj: Any) -> dict[str, Any]:
        return {TYPE_KEY: tag, **plain_unstructure(obj)}

    def structure(data: Any, _: object) -> Any:
        if not isinstance(data, dict):
            raise SerializationError(f"expected a JSON object for {tag}, got {data!r}")
        found = data.get(TYPE_KEY, tag)
        if found != tag:
            raise SerializationError(f"expected {TYPE_KEY}={tag!r}, got {found!r}")
        return fast_structure(data)

    return unstructure, structure


def _as_given(value: Any, _: object) -> Any:
    return value


def _dict_as_given(value: Any, _: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SerializationError(f"expected a JSON object, got {shown_repr(value):.200}")
    return value


def _unstructure_as(unstructure: Callable[[Any, Any], Any], hint: Any, value: Any) -> Any:
    """``unstructure(value, hint)``: a field's value as the converter writes it by the
    field's type (see :data:`_TYPED`)."""
    return unstructure(value, hint)


_PLAIN: Final = (str, int, float, bool)


def _fast_structure_fn(
    cls: type,
    conv: JsonConverter,
    plain: Callable[[Any, Any], Any],
    omitted: set[str],
    checked: set[str],
) -> Callable[[dict[str, Any]], Any]:
    """``cls``'s structure function, the converter's own (``plain``, generated by
    cattrs) made quicker where the JSON is what it should be: a field whose value is of
    its type exactly (a ``str`` for a ``str``, ``None`` or a ``str`` for an optional
    one, an empty list for a tuple) is taken as it is, the others go through the
    converter's hook for their type, and any error has ``plain`` run again, for its
    detailed message. The objects are the same as ``plain`` makes; the time is not: a
    thread of a thousand messages (500 turns of a question and an answer with its
    usage), loaded before a run, is structured in 0.75 ms instead of 1.4 (and 2.9
    through cattrs' code, which notes each field's errors as it goes and calls a hook
    per field, for a ``str`` too). The generated code calls the class's constructor
    (:func:`constructor`: a :func:`fast_new` class's plain function) once, its
    arguments by position, a missing key's being the field's default, as attrs would
    give it (its converter runs on it as attrs' would). A ``checked`` field's value is
    given to the constructor as it is: its converter checks it."""
    attrs.resolve_types(cls)  # (as cattrs did for ``plain``: a no-op then)
    lines = ["def structure(o):", "    try:"]
    namespace: dict[str, Any] = {
        "_cls": constructor(cls),
        "_type": cls,
        "_plain": plain,
        "_missing": _MISSING,
        "_structure": conv.structure,
        "_tagged": _STRUCTURE_TAGGED,  # (filled as each class is registered: read at call time)
        "_again": _again,
    }
    positional: list[str] = []
    keyword: list[str] = []
    for index, field in enumerate(attrs.fields(cls)):
        if not field.init:
            continue
        name, arg = field.name, f"a{index}"
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]  # attrs' own check
            if default.takes_self:
                raise TypeError(f"{cls.__name__}.{name}: a factory that takes self")
            namespace[f"_d{index}"] = default.factory
            given = f"_d{index}()"
        else:
            namespace[f"_d{index}"] = default
            given = f"_d{index}"
        if name in omitted:  # not in the JSON: the default, as cattrs leaves it to attrs
            lines.append(f"        {arg} = {given}")
        else:
            if name in checked:
                value = "v"
            elif field.converter is frozen_json and field.type == dict[str, Any]:
                # its constructor freezes it, a copy: a JSON object of text keys is
                # given as it is (cattrs' hook would copy it first, for the same dict)
                slow = _field_value(field.type, index, namespace)
                namespace["_text_keys"] = _text_keys
                value = f"v if type(v) is dict and _text_keys(v) else {slow}"
            else:
                value = _field_value(field.type, index, namespace)
            if default is attrs.NOTHING:  # required: a missing key is plain's error
                lines.append(f"        v = o[{name!r}]")
                lines.append(f"        {arg} = {value}")
            elif default is None:  # a missing key is None, which every value takes as it is
                lines.append(f"        v = o.get({name!r})")
                lines.append(f"        {arg} = {value}")
            else:
                lines.append(f"        v = o.get({name!r}, _missing)")
                lines.append(f"        {arg} = {given} if v is _missing else {value}")
        (keyword if field.kw_only else positional).append(
            f"{field.alias}={arg}" if field.kw_only else arg
        )
    lines += [
        f"        return _cls({', '.join([*positional, *keyword])})",
        "    except Exception as exc:",  # the converter's own code again, for its detailed error
        "        return _again(_plain, o, _type, exc)",
    ]
    exec(compile("\n".join(lines), f"<fast structure {cls.__qualname__}>", "exec"), namespace)
    fast: Callable[[dict[str, Any]], Any] = namespace["structure"]
    return fast


class _Again(threading.local):
    failed: dict[tuple[int, type], tuple[Any, Exception]] | None = None


_AGAIN: Final = _Again()


def _again(plain: Callable[[Any, Any], Any], value: Any, cls: type, exc: Exception) -> Any:
    """In generated structure code: ``plain(value, cls)`` where the fast code failed
    on ``value``, for its detailed error, each object once: within another object's
    ``plain``, an object whose ``plain`` failed already raises that error again
    instead of being walked again (that doubled the work at every level: the JSON of
    objects nested 20 deep through ``Any`` fields, the innermost not of its class, took
    hours to read; one nested past what the stack holds never ended). Its error is
    cattrs' own, the inner objects' detailed errors in it (raised bare from the fast
    code, they named only the first key missing, and not the inner class). A
    ``RecursionError`` goes up as it is (``plain`` walks with more frames)."""
    if isinstance(exc, RecursionError):
        raise exc
    failed = _AGAIN.failed
    if failed is not None:  # within another object's plain
        key = (id(value), cls)
        known = failed.get(key)
        if known is not None and known[0] is value:  # (kept alive: its id not reused)
            raise known[1]
        try:
            return plain(value, cls)
        except Exception as error:
            failed[key] = (value, error)
            raise
    _AGAIN.failed = {}
    try:
        return plain(value, cls)
    finally:
        _AGAIN.failed = None


_MISSING: Final = object()
"""In generated structure code: a key the JSON object does not hold."""


def _field_value(hint: Any, index: int, namespace: dict[str, Any]) -> str:
    """Generated code: the field ``index`` (of type ``hint``) of the JSON value ``v``,
    as it is where it is exactly of its type, else through the converter's hook."""
    namespace[f"_t{index}"] = hint
    slow = f"_structure(v, _t{index})"
    args = [a for a in get_args(hint) if a is not type(None)]
    if hint in _PLAIN:
        return f"v if type(v) is {hint.__name__} else {slow}"
    if _is_optional(hint) and len(args) == 1 and args[0] in _PLAIN:
        return f"v if v is None or type(v) is {args[0].__name__} else {slow}"
    if _is_optional(hint) and len(args) == 1 and args[0] in TAGGED_CLASSES:
        # the class's own hook (as cattrs' would call it), when the tag is its own
        tagged = f"_tagged[{args[0].__name__!r}](v)"
        return f"v if v is None else {tagged} if {_own_tag(args[0])} else {slow}"
    if _is_optional(hint):
        return f"v if v is None else {slow}"
    if get_origin(hint) is tuple and (item := _tagged_items(hint)) is not None:
        namespace["_tagged_tuple"] = _tagged_tuple
        tagged = f"_tagged_tuple(v, {item.__name__!r}) if type(v) is list else None"
        return f"() if type(v) is list and not v else ({tagged}) or {slow}"
    if get_origin(hint) is tuple:
        return f"() if type(v) is list and not v else {slow}"
    return slow


def _tagged_tuple(items: list[Any], tag: str) -> tuple[Any, ...] | None:
    """In generated structure code: the JSON list ``items`` of objects tagged ``tag``
    as the tuple of their objects (each by its class's own structure function, as
    cattrs' hook would call it); ``None`` if one is not such an object (then the
    converter's hook). (A function, not a comprehension: in generated code that makes
    a function object at each call.)"""
    structure = _STRUCTURE_TAGGED[tag]
    made = []
    for item in items:
        if type(item) is not dict or item.get(TYPE_KEY) != tag:
            return None
        made.append(structure(item))
    return tuple(made)


def _text_keys(value: dict[Any, Any]) -> bool:
    """In generated structure code: whether every key of ``value`` is exactly a ``str``."""
    for key in value:  # noqa: SIM110  # (a loop: a generator is a frame more)
        if type(key) is not str:
            return False
    return True


def _own_tag(cls: type) -> str:
    """Generated code: ``v`` is a JSON object tagged as ``cls``."""
    return f"type(v) is dict and v.get({TYPE_KEY!r}) == {cls.__name__!r}"


def _tagged_items(hint: Any) -> type | None:
    """The tagged class of ``tuple[X, ...]``'s items, if they are one."""
    args = get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis and args[0] in TAGGED_CLASSES:
        return args[0]  # type: ignore[no-any-return]
    return None


def _is_optional(hint: Any) -> bool:
    return get_origin(hint) in (Union, type(int | str)) and type(None) in get_args(hint)


def _unstructure_event(event: StreamEvent) -> dict[str, Any]:
    # Flat, in LangChain's v2 shape: the shared RunInfo is spread into the event.
    run = event.run
    return {
        "event": event.event,
        "name": run.name,
        "run_id": run.run_id,
        "parent_ids": list(run.parent_ids),
        "tags": list(run.tags),
        "metadata": unstructure_entries(run.metadata),  # (a dict field: not escaped)
        # A custom event's data is its payload, as in LangChain.
        "data": unstructure_any(event.chunk)
        if event.event == CUSTOM_EVENT
        else converter.unstructure(event.data, EventData),
        "kind": run.kind,
        "seq": event.seq,
        "status": event.status,
        "start_time": run.start_time,
        "end_time": event.end_time,
    }


def _structure_event(data: Any, _: object) -> StreamEvent:
    if not isinstance(data, dict):
        raise SerializationError(f"an event must be a JSON object, got {data!r}")
    try:
        return StreamEvent(
            event=converter.structure(data["event"], str),
            run=converter.structure(data, RunInfo),
            seq=converter.structure(data["seq"], int),
            data=EventData(chunk=structure_any(data["data"]))
            if data["event"] == CUSTOM_EVENT
            else converter.structure(data["data"], EventData),
            status=converter.structure(data.get("status"), RunStatus | None),  # type: ignore[arg-type]  # a Literal union is a valid cattrs target
            end_time=converter.structure(data.get("end_time"), float | None),  # type: ignore[arg-type]  # as above
        )
    except KeyError as exc:
        raise SerializationError(f"an event needs the key {exc.args[0]!r}") from None


def _structure_event_data(data: Any, _: object) -> EventData:
    if not isinstance(data, dict):
        raise SerializationError(f"event data must be a JSON object, got {data!r}")
    unknown = set(data) - set(EventData._view_keys)
    if unknown:
        raise SerializationError(f"unknown event data keys: {sorted(unknown)}")
    return EventData(**{k: structure_any(v) for k, v in data.items()}, ended="output" in data)


converter: Final[JsonConverter] = _make_converter()
"""The protocol's converter. Use it (not cattrs' global one) for every edge."""


def to_json(obj: Any) -> str:
    """Serialize a protocol object (or a JSON value holding some) to a JSON string."""
    return json.dumps(unstructure_any(obj), ensure_ascii=False)


def from_json(text: str | bytes, cls: type[T]) -> T:
    """Parse JSON text into an instance of ``cls``."""
    return converter.structure(json.loads(text), cls)
