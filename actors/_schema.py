"""JSON schemas of tool parameters, from Python type hints."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

from ._errors import ToolDefinitionError

_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
    Any: {},
}


def schema_for(hint: Any, where: str) -> dict[str, Any]:
    """The JSON schema of values of type ``hint``.

    Raises:
        ToolDefinitionError: the type has no JSON form (``where`` names the parameter).
    """
    if hint in _SCALARS:
        return dict(_SCALARS[hint])
    origin = get_origin(hint)
    args = get_args(hint)
    if origin is Annotated:
        schema = schema_for(args[0], where)
        notes = [a for a in args[1:] if isinstance(a, str)]
        if notes:
            schema["description"] = " ".join(notes)
        return schema
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (Union, types.UnionType):
        return {"anyOf": [schema_for(a, where) for a in args]}
    if hint in (list, tuple) or origin in (list, tuple, Sequence, typing.Sequence):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return {
                "type": "array",
                "prefixItems": [schema_for(a, where) for a in args],
                "minItems": len(args),
                "maxItems": len(args),
            }
        return {"type": "array", "items": schema_for(args[0], where)} if args else {"type": "array"}
    if hint is dict or origin in (dict, Mapping, typing.Mapping):
        if args and args[0] is not str:
            raise ToolDefinitionError(f"{where}: JSON object keys are strings, not {args[0]!r}")
        mapping: dict[str, Any] = {"type": "object"}
        if args:
            mapping["additionalProperties"] = schema_for(args[1], where)
        return mapping
    raise ToolDefinitionError(f"{where}: no JSON schema for type {hint!r}")


INJECTED_NAMES: Final = {"config": "config", "callbacks": "callbacks"}
"""Parameters LangChain fills in by name: Troupe fills them in too (see ``Tool``)."""


def parameters_schema(
    fn: Callable[..., Any], tool_name: str, context_type: type, state_type: type | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``parameters`` schema of ``fn`` and its injected parameters (name -> what:
    ``context`` for one annotated with ``context_type``, ``state`` for one annotated
    with ``state_type`` (the run tree's shared state), ``config`` for one named
    ``config`` or annotated with LangChain's ``RunnableConfig``, ``callbacks`` for one
    named ``callbacks`` or annotated with LangChain's ``Callbacks``), which the schema
    leaves out.

    Raises:
        ToolDefinitionError: a parameter is ``*args``/``**kwargs``, positional-only,
            has no type hint, has a type with no JSON form, or is LangChain's
            ``run_manager``.
    """
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # unresolvable forward references and the like
        raise ToolDefinitionError(f"tool {tool_name!r}: cannot read type hints: {exc}") from exc
    properties: dict[str, Any] = {}
    required: list[str] = []
    injected: dict[str, str] = {}
    for param in inspect.signature(fn).parameters.values():
        where = f"tool {tool_name!r}, parameter {param.name!r}"
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ToolDefinitionError(f"{where}: tools take named parameters only")
        if param.name == "run_manager":
            raise ToolDefinitionError(
                f"{where}: Troupe has no run manager to give a tool. Take the run's "
                "context with a parameter annotated RunContext, report progress with "
                "adispatch_custom_event, and call models inside the tool as usual (their "
                "runs are children of the tool's run)"
            )
        hint = hints.get(param.name)
        if _is_context(hint, context_type):
            injected[param.name] = "context"
            continue
        if state_type is not None and _is_context(hint, state_type):
            injected[param.name] = "state"
            continue
        what = _langchain_injected(hint) or INJECTED_NAMES.get(param.name)
        if what is not None:
            injected[param.name] = what
            continue
        if hint is None:
            raise ToolDefinitionError(f"{where}: needs a type hint (it becomes the JSON schema)")
        schema = schema_for(hint, where)
        if param.default is param.empty:
            required.append(param.name)
        else:
            schema["default"] = param.default
        properties[param.name] = schema
    result: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    return result, injected


def _langchain_injected(hint: Any) -> str | None:
    """``config`` for LangChain's ``RunnableConfig``, ``callbacks`` for its
    ``Callbacks`` (a union of its callback classes), else ``None``."""
    if hint is None:
        return None
    if getattr(hint, "__name__", None) == "RunnableConfig":
        return "config"
    pending, seen = [hint], 0
    while pending and seen < 32:
        seen += 1
        item = pending.pop()
        if str(getattr(item, "__module__", "")).startswith("langchain_core.callbacks"):
            return "callbacks"
        pending.extend(get_args(item))
    return None


def _is_context(hint: Any, context_type: type) -> bool:
    """Whether ``hint`` is ``context_type``, possibly optional or annotated."""
    if get_origin(hint) is Annotated:
        hint = get_args(hint)[0]
    if get_origin(hint) in (Union, types.UnionType):
        return [a for a in get_args(hint) if a is not type(None)] == [context_type]
    return hint is context_type
