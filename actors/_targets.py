"""What an edge serves: performers named by ``module:attr`` and by name.

Shared by the HTTP edge (``troupe serve MODULE:ATTR``), the MCP edge (``troupe mcp``)
and the cluster's hosts, which are given a registry's ``module:attr`` and build its
performers themselves (a Ray actor is given names and data, not closures).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import Any

from runtime import Runnable


def load_object(spec: str, what: str = "what to serve") -> Any:
    """The object named by ``module:attr``, imported (from the current directory too).

    Raises:
        ValueError: the spec is not ``module:attr``, or names nothing.
    """
    if not isinstance(spec, str):
        raise ValueError(f"name {what} as MODULE:ATTR, got a {type(spec).__name__}")
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"name {what} as MODULE:ATTR, got {spec!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")  # the current directory, as `python -m` has it
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"{module_name!r} has no {attr!r}") from None


def load_target(spec: str) -> Runnable[Any] | dict[str, Runnable[Any]]:
    """``module:attr`` (a performer or a dict of them, or a function of no arguments
    that makes one, called here), imported.

    Raises:
        ValueError: the spec is not ``module:attr``, or names nothing servable.
    """
    target = load_object(spec)
    if isinstance(target, Runnable | dict):
        return target
    if callable(target) and not isinstance(target, type):
        try:
            made = target()
        except TypeError as exc:
            raise ValueError(f"{spec}() failed: {exc}") from None
        if isinstance(made, Runnable | dict):
            return made
        raise ValueError(
            f"{spec}() made a {type(made).__name__}, not a performer or a dict of them"
        )
    raise ValueError(f"{spec} is a {type(target).__name__}, not a performer or a dict of them")


def named_performers(performers: object) -> dict[str, Runnable[Any]]:
    """``performers`` (one, or a dict of them by name) as a dict by name.

    Raises:
        TypeError: not a performer nor a non-empty dict of them by non-empty names.
    """
    if isinstance(performers, Runnable):
        performer = performers.bind()[0]
        return {performer.name: performers}
    if not isinstance(performers, Mapping) or not performers:
        raise TypeError(
            f"serve a performer or a dict of them by name, got {type(performers).__name__}"
        )
    for name, value in performers.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"performer names must be non-empty strings, got {name!r}")
        if not isinstance(value, Runnable):
            raise TypeError(f"{name!r} is not a performer (agent, model, tool): {value!r:.60}")
    return dict(performers)


def input_schema(target: Runnable[Any]) -> dict[str, Any]:
    """The JSON schema of what a performer takes as ``input``."""
    performer = target.bind()[0]
    parameters = getattr(performer, "parameters", None)
    if performer.run_kind == "tool" and isinstance(parameters, dict):
        return parameters
    message = {
        "type": "object",
        "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
        "required": ["role", "content"],
    }
    messages = {"type": "array", "items": message}
    if performer.run_kind == "chat_model":
        return {"anyOf": [{"type": "string"}, messages]}
    return {
        "anyOf": [
            {"type": "string"},
            {
                "type": "object",
                "properties": {"input": {"type": "string"}, "chat_history": messages},
                "required": ["input"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"messages": messages},
                "required": ["messages"],
                "additionalProperties": False,
            },
        ]
    }
