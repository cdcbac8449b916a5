"""Cheap construction for the frozen messages made once per token (and the chat
messages a thread loads by the thousand).

attrs builds a frozen class's ``__init__`` from ``object.__setattr__`` calls, one per
field, because the class's own ``__setattr__`` refuses every write. For the few
classes made per streamed token (a chunk, its lifecycle message, its event, the event's
data), and the chat messages (a thread of a thousand is structured before each run's
first load), those calls were most of the cost of the object: about 0.7 µs for an event of
eight fields where a plain slotted class takes 0.2.

:func:`fast_new` gives such a class a generated ``__new__`` that fills a new instance
while it is briefly of a twin subclass that allows writes (same slots, same layout, no
fields of its own), then makes it an instance of the class itself. What the caller gets
is an ordinary frozen instance of the class: ``type(obj) is cls``, writes raise
``FrozenInstanceError``, and ``attrs.evolve``, cattrs, ``copy`` and ``pickle`` work as
before. The class keeps attrs' declaration (and a type checker's view of its
constructor); only the run-time construction changes.

The other way past the frozen ``__setattr__``, each slot's descriptor (``cls.x.__set__``),
keeps the instance's class but costs twice as much: 540 ns for eight fields against
245 for the twin class (attrs' own ``__init__``: 640-950 ns), measured here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

_C = TypeVar("_C", bound=type)
_T = TypeVar("_T")


_MAKERS: dict[type, Any] = {}
_BUILDING: dict[type, type] = {}
_MISSING: Any = object()  # an argument not given, whose field has a factory
_PASSED: dict[Callable[..., Any], tuple[type, ...]] = {}


def passes(types: tuple[type, ...], *converters: Callable[[Any], Any]) -> None:
    """Mark ``converters`` as returning a value whose type is exactly one of ``types``
    as it is (checks that refuse anything else, as a message's text fields have): a
    :func:`fast_new` class's constructor then tests the type inline and calls the
    converter only for other values. By callgrind, a call costs about 750 instructions
    a field, the test about 150 (a thread of a thousand messages is structured by the
    constructor before a run's first load: +24 % with the calls, +3.7 % with the
    tests). Call it before the class is made."""
    for convert in converters:
        _PASSED[convert] = types


def checks(convert: object) -> bool:
    """Whether ``convert`` is a check marked by :func:`passes` (it refuses what is not
    of its types, rather than making one: a structure hook must hand it the JSON value
    as it is, not made a ``str`` first)."""
    return convert in _PASSED


def maker(cls: type[_T]) -> Callable[..., _T]:
    """The constructor of the :func:`fast_new` class ``cls`` itself, as a plain function
    (no ``type.__call__``, no ``__init__``): for the per-token paths. Takes the same
    arguments as ``cls``; makes only ``cls`` (not a subclass)."""
    return _MAKERS[cls]  # type: ignore[no-any-return]


def building(cls: type[_T]) -> type[_T]:
    """The twin subclass that the :func:`fast_new` class ``cls``'s constructor fills
    before it makes the instance a ``cls`` (``obj.__class__ = cls``): for the one place
    where even :func:`maker`'s call costs too much per token, written out inline there.
    ``building(cls)()`` makes a bare one (no field set, no ``__init__``); every field
    must be stored before the swap."""
    return _BUILDING[cls]


def constructor(cls: type[_T]) -> Callable[..., _T]:
    """The quickest way to make a ``cls``: its :func:`maker` if it is a :func:`fast_new`
    class, else the class itself."""
    return _MAKERS.get(cls, cls)  # type: ignore[no-any-return]


def _rebuild(cls: type, values: dict[str, Any]) -> Any:
    return cls(**values)


def fast_new(cls: _C) -> _C:
    """Make constructing the frozen, slotted attrs class ``cls`` cheap (see the module).

    Only plain fields are supported (defaults allowed, factories that take no
    argument, and converters that are plain functions of the value; no validators or
    ``__attrs_post_init__``): the generated code is a list of stores.

    Raises:
        TypeError: ``cls`` is not a frozen slotted attrs class of plain fields.
    """
    fields = attrs.fields(cls)
    if "__slots__" not in cls.__dict__ or "__setattr__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen, slotted attrs class")
    if hasattr(cls, "__attrs_post_init__") or hasattr(cls, "__attrs_pre_init__"):
        raise TypeError(f"{cls.__name__}: fast_new does not run attrs' init hooks")
    if any("__init__" in vars(base) for base in cls.__mro__[1:-1]):
        # building(cls)() would run it (type's call), and cls's instances would too
        raise TypeError(f"{cls.__name__}: fast_new takes no base class with an __init__")
    building = type(
        f"_Building{cls.__name__}",
        (cls,),
        {
            "__slots__": (),
            "__module__": cls.__module__,
            # Both, so that CPython uses the plain C store for ``self.x = ...``.
            "__setattr__": object.__setattr__,
            "__delattr__": object.__delattr__,
            # object's own, so that ``building()`` makes a bare instance in C (type's
            # call, no argument tuple); ``cls``'s generated ``__new__`` comes later.
            "__new__": object.__new__,
        },
    )
    namespace: dict[str, Any] = {
        "_base": cls,
        "_building": building,
        "_missing": _MISSING,
    }
    positional: list[str] = []
    keyword: list[str] = []
    fast: list[str] = []
    call: list[str] = []
    for index, f in enumerate(fields):
        if (
            not f.init
            or (f.converter is not None and not inspect.isfunction(f.converter))
            or f.validator is not None
            or (isinstance(f.default, attrs.Factory) and f.default.takes_self)  # type: ignore[arg-type]
        ):
            raise TypeError(f"{cls.__name__}.{f.name}: fast_new takes plain fields only")
        param = f.alias
        value = f.alias
        if isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
            # A new one for each instance made without it, as attrs' own __init__ does.
            namespace[f"_factory{index}"] = f.default.factory
            param += "=_missing"
            value = f"(_factory{index}() if {f.alias} is _missing else {f.alias})"
        elif f.default is not attrs.NOTHING:
            namespace[f"_default{index}"] = f.default
            param += f"=_default{index}"
        (keyword if f.kw_only else positional).append(param)
        if f.converter is None:
            fast.append(f"self.{f.name} = {value}")
        else:  # as attrs does: the value given (or the default) through the converter
            namespace[f"_convert{index}"] = f.converter
            converted = f"_convert{index}({value})"
            passed = _PASSED.get(f.converter) if value == f.alias else None
            if passed:  # (the types it returns as they are: tested inline, see passes)
                tests = []
                for number, kind in enumerate(passed):
                    namespace[f"_passes{index}_{number}"] = kind
                    test = f"{value} is None" if kind is type(None) else None
                    tests.append(test or f"{value}.__class__ is _passes{index}_{number}")
                converted = f"{value} if {' or '.join(tests)} else {converted}"
            fast.append(f"self.{f.name} = {converted}")
        call.append(f"{f.alias}={f.alias}")
    params = ", ".join([*positional, *(["*", *keyword] if keyword else [])])
    source = "\n".join(
        [
            f"def __new__(cls, {params}):",
            "    if cls is _base:",
            "        self = _building()",
            *(f"        {line}" for line in fast),
            "        self.__class__ = _base",
            "        return self",
            "    return _subclass_new(cls, " + ", ".join(call) + ")",
            f"def make({params}):",
            "    self = _building()",
            *(f"    {line}" for line in fast),
            "    self.__class__ = _base",
            "    return self",
        ]
    )
    exec(compile(source, f"<fast_new {cls.__qualname__}>", "exec"), namespace)
    names = tuple((f.alias, f.name) for f in fields)
    attrs_init = cls.__dict__["__init__"]

    def __reduce__(self: Any) -> tuple[Any, ...]:
        kind = type(self)
        pairs = names if kind is cls else ((f.alias, f.name) for f in attrs.fields(kind))
        return _rebuild, (kind, {alias: getattr(self, name) for alias, name in pairs})

    def subclass_new(sub: Any, /, *args: Any, **kwargs: Any) -> Any:
        self: Any = object.__new__(sub)
        if sub.__init__ is object.__init__:  # a plain subclass: the fields are cls's
            # (an argument not given to a field with a factory: attrs' init makes it)
            attrs_init(self, *args, **{k: v for k, v in kwargs.items() if v is not _MISSING})
        return self  # an attrs subclass: its own __init__ sets its fields

    def __init_subclass__(sub: Any, /, **kwargs: Any) -> None:
        super(base, sub).__init_subclass__(**kwargs)
        sub.__new__ = staticmethod(subclass_new)

    base: Any = cls
    namespace["_subclass_new"] = subclass_new
    _MAKERS[cls] = namespace["make"]
    _BUILDING[cls] = building
    base.__new__ = staticmethod(namespace["__new__"])
    del base.__init__  # then object's, which ignores the arguments __new__ took
    base.__reduce__ = __reduce__
    base.__init_subclass__ = classmethod(__init_subclass__)
    return cls
