"""Structured output: an agent's answer as an attrs class, a TypedDict or a JSON schema.

:func:`output_schema` turns the agent's ``output_type`` into a JSON schema once, when
the agent is made, so an ``output_type`` that has no schema fails there and not in a
run. Each final answer is parsed and validated against it; what is wrong is said in
words the model can act on, since it is told and asked again.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Final, get_type_hints, is_typeddict

import attrs
import cattrs
import jsonschema
from attrs import field, frozen

from protocol import ResponseFormat

from ._errors import OutputTypeError, ToolDefinitionError
from ._schema import schema_for

DEFAULT_OUTPUT_RETRIES: Final = 2
"""How many times an agent asks again for an answer that does not fit its output type."""

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)
# A converter of this module's own (cattrs: "prefer creating your own if customizations
# are required"): the user's attrs classes are structured with it, never the protocol's.
_converter = cattrs.Converter()
_FACTORY: Final[type] = type(attrs.Factory(list))


def _object_schema(
    hints: Mapping[str, Any], required: set[str], defaults: Mapping[str, Any], where: str
) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for key, hint in hints.items():
        schema = _value_schema(hint, f"{where}, field {key!r}")
        if key in defaults:
            schema["default"] = defaults[key]
        properties[key] = schema
    return {
        "type": "object",
        "properties": properties,
        "required": [k for k in hints if k in required],
        "additionalProperties": False,
    }


def _value_schema(hint: Any, where: str) -> dict[str, Any]:
    """A type's schema, nested attrs classes and TypedDicts included."""
    inner = typing.get_origin(hint)
    if isinstance(hint, type) and attrs.has(hint):
        return _attrs_schema(hint)
    if is_typeddict(hint):
        return _typeddict_schema(hint)
    if inner is not None:
        args = typing.get_args(hint)
        if any((isinstance(a, type) and attrs.has(a)) or is_typeddict(a) for a in args):
            if inner in (list, tuple) and args:
                return {"type": "array", "items": _value_schema(args[0], where)}
            if inner in (typing.Union, types.UnionType):
                return {"anyOf": [_value_schema(a, where) for a in args]}
    try:
        return schema_for(hint, where)
    except ToolDefinitionError as exc:
        raise OutputTypeError(str(exc)) from None


def _attrs_schema(cls: type) -> dict[str, Any]:
    where = f"output type {cls.__qualname__}"
    try:
        hints = get_type_hints(cls)
    except Exception as exc:  # unresolvable forward references and the like
        raise OutputTypeError(f"{where}: cannot read its type hints: {exc}") from exc
    fields = attrs.fields(cls)
    names = {f.name: (f.alias or f.name) for f in fields if f.init}
    missing = [f.name for f in fields if f.init and f.name not in hints]
    if missing:
        raise OutputTypeError(f"{where}: fields {missing} need type hints (they become the schema)")
    defaults = {
        names[f.name]: f.default
        for f in fields
        if f.init
        and f.default is not attrs.NOTHING
        and not isinstance(f.default, _FACTORY)
        and _is_json(f.default)
    }
    required = {names[f.name] for f in fields if f.init and f.default is attrs.NOTHING}
    return _object_schema(
        {names[f.name]: hints[f.name] for f in fields if f.init}, required, defaults, where
    )


def _typeddict_schema(cls: Any) -> dict[str, Any]:
    where = f"output type {cls.__qualname__}"
    try:
        hints = get_type_hints(cls)
    except Exception as exc:
        raise OutputTypeError(f"{where}: cannot read its type hints: {exc}") from exc
    return _object_schema(hints, set(cls.__required_keys__), {}, where)


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


@frozen
class OutputSpec:
    """An ``output_type`` made ready: its schema and how an answer becomes a value."""

    output_type: Any
    name: str
    schema: dict[str, Any]
    _validator: Any = field(repr=False)

    @property
    def response_format(self) -> ResponseFormat:
        """How a model that can be asked for a JSON shape is asked."""
        return ResponseFormat(self.name, self.schema)

    def instructions(self) -> str:
        """How a model that cannot be asked natively is asked: in the system prompt."""
        return (
            "Answer with a single JSON value, and nothing else, that fits this JSON "
            f"schema:\n{json.dumps(self.schema, ensure_ascii=False)}"
        )

    def parse(self, text: str) -> Any:
        """The value ``text`` (the model's final answer) stands for.

        Raises:
            ValueError: not JSON, or JSON that does not fit the schema; the message says
                what is wrong, in words for the model.
        """
        match = _FENCE.match(text)
        body = match.group(1) if match else text
        try:
            value = json.loads(body)
        except json.JSONDecodeError as exc:
            raise ValueError(f"the answer is not JSON ({exc.msg} at character {exc.pos})") from None
        errors = sorted(self._validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            problems = []
            for error in errors[:5]:
                where = "/".join(str(p) for p in error.absolute_path)
                problems.append(f"at {where!r}: {error.message}" if where else error.message)
            raise ValueError(f"the answer does not fit the schema: {'; '.join(problems)}")
        cls = self.output_type
        if isinstance(cls, type) and attrs.has(cls):
            try:
                return _converter.structure(value, cls)
            except Exception as exc:  # a validator of the class refused it
                raise ValueError(f"the answer does not fit {cls.__qualname__}: {exc}") from None
        return value

    def json_ready(self, value: Any) -> Any:
        """``value`` as JSON-ready data (for events and the wire)."""
        if attrs.has(type(value)):
            return _converter.unstructure(value)
        return value


def output_spec(output_type: Any) -> OutputSpec:
    """Make ``output_type`` (an attrs class, a TypedDict, or a JSON schema as a dict)
    ready to ask for and check answers.

    Raises:
        OutputTypeError: ``output_type`` cannot be turned into a JSON schema.
    """
    if isinstance(output_type, type) and attrs.has(output_type):
        name, schema = output_type.__name__, _attrs_schema(output_type)
    elif is_typeddict(output_type):
        name, schema = output_type.__name__, _typeddict_schema(output_type)
    elif isinstance(output_type, Mapping):
        schema = dict(output_type)
        name = str(schema.get("title") or "answer")
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise OutputTypeError(
                f"output_type is not a valid JSON schema: {exc.message}"
            ) from None
    else:
        raise OutputTypeError(
            "output_type must be an attrs class, a TypedDict or a JSON schema (a dict), "
            f"got {output_type!r:.80}"
        )
    name = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "answer"
    return OutputSpec(output_type, name, schema, jsonschema.Draft202012Validator(schema))
