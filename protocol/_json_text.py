"""JSON text made straight from protocol objects, as a run journal writes its records.

A journal's record was made in two walks: the converter turned each object into dicts
and lists (cattrs' generated code, a dict per object), and the ``json`` module's C
encoder turned those into text, at about 800 instructions a value (a string object
made for every bracket, comma and key, a tuple for every dict item, then joined).
Here each tagged class has a writer of its own, generated from its fields as its
structure function is (:func:`text_of`): its text is one f-string of the class's
constant parts and its fields' texts (a ``str`` through the C ``encode_basestring``,
an ``int`` through ``int.__repr__``, a tagged field by its class's writer). The text
is byte for byte what ``dump(converter.unstructure(obj, cls))`` makes; where a field
holds what its type does not say (a ``str`` field holding something else, a tuple's
item of another class), the object is written that way instead, so the two never
differ. Measured under callgrind, the records of a cat agent run's 26 events that are
not tokens: see docs/journal.md ("The codec's records as text").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal, Union, get_args, get_origin

import attrs

from ._convert import _FIELDS, _TYPED, TYPE_KEY, converter, unstructure_any
from ._frozen import FrozenDict


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _c_dump() -> Callable[[Any], str]:
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # a Python without the C encoder
        return json.JSONEncoder(
            ensure_ascii=False, separators=(",", ":"), check_circular=False
        ).encode
    encode = make(None, _refuse, json.encoder.encode_basestring, None, ":", ",", False, False, True)

    def dump(value: Any) -> str:
        return "".join(encode(value, 0))

    return dump


dump: Final = _c_dump()
"""A JSON value as the journal writes it: ``json.dumps(value, ensure_ascii=False,
separators=(",", ":"), check_circular=False)``, by an encoder made once (no circle
check: a value that holds itself fails with ``RecursionError``)."""

text: Final[Callable[[str], str]] = json.encoder.encode_basestring
"""A ``str`` as JSON (not ASCII-escaped; in C): what the encoder writes for it."""
_int: Final = int.__repr__
_float: Final = float.__repr__


def value_text(value: Any) -> str:
    """``dump(unstructure_any(value))``, the common values written without the
    converter: text, integers, ``None``, booleans, finite floats, tagged objects
    (their writer).

    Raises:
        SerializationError: a value has no JSON form (as :func:`unstructure_any`).
    """
    cls = type(value)
    if cls is str:
        return text(value)
    if value is None:
        return "null"
    if cls is int:
        return _int(value)
    if cls is bool:
        return "true" if value else "false"
    if cls is float and value - value == 0:  # (finite: NaN and the infinities are dumped)
        return _float(value)
    write = _WRITERS.get(cls)
    if write is not None or cls in _FIELDS:
        return (write or _WRITERS[cls])(value)
    return dump(unstructure_any(value))


def json_text(shown: Any) -> str:
    """The text of ``shown``, JSON already made (as :func:`unstructure_any` makes it):
    ``dump(shown)``, a string, an integer and ``None`` without the encoder. (Not
    :func:`value_text`, which makes the JSON of an object: of JSON already made, it
    would escape the dicts of tagged objects, ``"$type"`` keys, again.)"""
    return value_text(shown) if type(shown) in _FLAT else dump(shown)


def _any_text(value: Any) -> str:
    """In generated code: the text of an ``Any`` field's value, :func:`value_text`'s
    but a tagged object's, which is the converter's (its objects' writers call each
    other through such fields: nested in itself past the stack, a payload raised
    ``RecursionError``, not the converter's ``SerializationError`` (its repr written),
    and the journal of its run failed; and its JSON, nested deeper than the
    converter's, was more than a reader's stack walks back)."""
    if type(value) in _FIELDS:
        return dump(unstructure_any(value))
    return value_text(value)


_FLAT: Final = frozenset((str, int, float, bool, type(None)))
_STR: Final = frozenset((str,))


def flat(value: Any) -> bool:
    """Whether ``value`` is a dict of ``str`` keys and scalar values (a tool call's
    arguments, a run's metadata, mostly) and no ``"$type"`` key (which an ``Any``
    position escapes): its JSON value is itself (what the converter makes of it is an
    equal copy), so the C encoder writes it as it is. By types, in C: two passes, where
    the converter's copy is a call per value."""
    return (
        (type(value) is dict or type(value) is FrozenDict)
        and "$type" not in value  # (TYPE_KEY)
        and set(map(type, value.values())) <= _FLAT
        and set(map(type, value)) <= _STR
    )


def text_of(value: Any) -> str:
    """The JSON text of the tagged object ``value`` (its class's writer, see the
    module's docstring): ``dump(converter.unstructure(value, type(value)))``."""
    return _WRITERS[type(value)](value)


def _tagged_items(items: Sequence[Any], writers: dict[type, Callable[[Any], str]]) -> str | None:
    """In generated code: the text of a tuple of tagged objects each of a class of
    ``writers``; ``None`` if one is not (the object is then written the slow way)."""
    if not items:
        return "[]"
    parts = []
    for item in items:
        write = writers.get(type(item))
        if write is None:
            return None
        parts.append(write(item))
    return f"[{','.join(parts)}]"


def _escaped(constant: str) -> str:
    return constant.replace("{", "{{").replace("}", "}}")


def _field_text(
    hint: Any,
    index: int,
    namespace: dict[str, Any],
    typed: Callable[[Any], Any] | None = None,
) -> tuple[str, str]:
    """Generated code for a field of type ``hint`` held in ``a{index}``: a test that
    it is of a form written here (``""`` for always), and its text. ``typed``: the
    field's unstructure function, of a field that holds dicts (the converter's,
    :data:`protocol._convert._TYPED`: a tool call's ``args`` are written as they are)."""
    a = f"a{index}"
    args = get_args(hint)
    optional = get_origin(hint) in (Union, type(int | str)) and type(None) in args
    plain = [arg for arg in args if arg is not type(None)] if optional else [hint]
    if len(plain) == 1:
        one = plain[0]
        test, shown = "", ""
        if one is str or (
            get_origin(one) is Literal and all(type(v) is str for v in get_args(one))
        ):
            test, shown = f"type({a}) is str", f"_s({a})"
        elif one is int:
            test, shown = f"type({a}) is int", f"_i({a})"
        elif one is bool:
            test, shown = f"({a} is True or {a} is False)", f'("true" if {a} else "false")'
        elif one in _FIELDS:
            namespace[f"_c{index}"] = one
            namespace[f"_w{index}"] = _WRITERS  # (filled once every writer is made)
            test, shown = f"type({a}) is _c{index}", f"_w{index}[_c{index}]({a})"
        if test:
            if optional:
                return f"({a} is None or {test})", f'("null" if {a} is None else {shown})'
            return test, shown
    if hint is Any:
        namespace["_value"] = _any_text
        return "", f"_value({a})"
    if get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = args[0]
        members = get_args(item) if get_origin(item) in (Union, type(int | str)) else (item,)
        if all(member in _FIELDS for member in members):
            namespace[f"_m{index}"] = members
            namespace["_items"] = _tagged_items
            namespace[f"_k{index}"] = {}  # (each member's writer, filled at the first call)
            return "", f"_items({a}, _k{index} or _fill(_k{index}, _m{index}))"
    # Anything else as the converter writes it, then dumped (a dict's, a union's); a
    # dict of scalars is its own JSON (see flat).
    namespace[f"_h{index}"] = hint
    if typed is not None:
        namespace[f"_u{index}"] = typed
        if get_origin(hint) is dict:
            namespace["_flat"] = flat
            return "", f"_dump({a} if _flat({a}) else _u{index}({a}))"
        return "", f"_dump(_u{index}({a}))"
    return "", f"_dump(_unstructure({a}, _h{index}))"


def _fill(writers: dict[type, Callable[[Any], str]], members: tuple[type, ...]) -> dict[type, Any]:
    """In generated code: ``writers`` filled with the writers of ``members``."""
    writers.update((member, _WRITERS[member]) for member in members)
    return writers


def _writer(cls: type) -> Callable[[Any], str]:
    """``cls``'s writer (see the module's docstring)."""
    tag, names = _FIELDS[cls]
    attrs.resolve_types(cls)
    fields = {field.name: field for field in attrs.fields(cls)}
    namespace: dict[str, Any] = {
        "_s": text,
        "_i": _int,
        "_dump": dump,
        "_unstructure": converter.unstructure,
        "_cls": cls,
        "_fill": _fill,
    }
    reads: list[str] = []
    tests: list[str] = []
    walks: list[str] = []
    pieces = [_escaped(f"{{{json.dumps(TYPE_KEY)}:{json.dumps(tag)}")]
    for index, name in enumerate(names):
        reads.append(f"    a{index} = v.{name}")
        typed = _TYPED.get(cls, {}).get(name)
        test, shown = _field_text(fields[name].type, index, namespace, typed)
        if test:
            tests.append(test)
        if shown.startswith("_items("):  # (a tuple's text, None where it is not of its type)
            walks.append(f"    t{index} = {shown}")
            shown = f"t{index}"
        pieces.append(_escaped(f",{json.dumps(name)}:") + "{" + shown + "}")
    slow = "        return _dump(_unstructure(v, _cls))"
    lines = ["def write(v):", *reads]
    if tests:
        lines += [f"    if not ({' and '.join(tests)}):", slow]
    if walks:  # (after the tests: a tuple's items are walked only if the rest fits)
        nones = " or ".join(f"{walk.split()[0]} is None" for walk in walks)
        lines += [*walks, f"    if {nones}:", slow]
    lines.append(f"    return f'{''.join(pieces)}}}}}'")
    exec(compile("\n".join(lines), f"<json text {cls.__qualname__}>", "exec"), namespace)
    write: Callable[[Any], str] = namespace["write"]
    return write


class _Writers(dict[type, Callable[[Any], str]]):
    """Each tagged class's writer, made at its first use (compiling them all costs
    about 50 M instructions, 20 ms, which a process that journals nothing would pay at
    import)."""

    def __missing__(self, cls: type) -> Callable[[Any], str]:
        if cls not in _FIELDS:
            raise KeyError(cls)
        write = self[cls] = _writer(cls)
        return write


_WRITERS: Final = _Writers()
