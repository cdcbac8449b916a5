"""Hypothesis strategies for scripted model behaviour over a user's own tools.

``agent_scripts(tools=[...])`` draws the turns a :class:`~actors.ScriptedChatModel`
plays: text, one or several (parallel) calls of the tools with arguments drawn from each
tool's JSON schema, and, unless switched off, the nasty cases: arguments that break the
schema, unknown tool names, arguments that are not JSON, the model failing mid-stream,
slow tokens. Turns print as Python, so a shrunk failing script pastes into a regression
test.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal

import jsonschema
import trio
from attrs import frozen
from hypothesis import strategies as st

from .._guardrails import GuardrailResult
from .._scripted import ScriptedCall, ScriptedTurn
from .._tool import Tool
from ._collect import Faults

WORDS: Final = ("the", "cat", "is", "under", "bed", ",", ".", "socks", "é", "🐈", "\n")
"""The vocabulary of drawn text: words, punctuation, accents, an emoji, a newline."""
MALFORMED_ARGUMENTS: Final = ('{"', "{'place': 'bed'}", "[1, 2", "not json", "{}}", "null]")
"""Argument strings that are not a JSON object a tool could take."""
MODEL_ERROR: Final = "the model fell over mid-stream (drawn by agent_scripts)"
UNKNOWN_TOOL: Final = "no_such_tool"
_MAX_SIZE: Final = 4  # arrays and free-form objects stay small: tools, not data sets
ALPHABET: Final = (
    string.ascii_letters
    + string.digits
    + string.punctuation
    + " \t\n\r\x00\x7f\u00a0\u200b\u2028"
    + "éßñΩжд中文🐈"
)
"""The characters of drawn strings: ASCII, whitespace and control characters, accents,
other scripts and an emoji. An explicit alphabet, not all of Unicode: Hypothesis builds
its table of Unicode characters on first use (about 1.5 s, cached in ``.hypothesis/``),
which on a cold cache trips its ``too_slow`` health check."""
_CHARS: Final = st.sampled_from(ALPHABET)


def _text(min_size: int = 0, max_size: int | None = None) -> st.SearchStrategy[str]:
    return st.text(_CHARS, min_size=min_size, max_size=max_size)


_JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**31), 2**31)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | _text(max_size=12)
)
_ANY_JSON: st.SearchStrategy[Any] = st.recursive(
    _JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=_MAX_SIZE)
        | st.dictionaries(_text(max_size=8), inner, max_size=_MAX_SIZE)
    ),
    max_leaves=8,
)


def json_values(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid against a JSON schema.

    Builds values from the keywords tools' schemas use (``type``, ``enum``, ``const``,
    ``anyOf``/``oneOf``, ``properties``/``required``/``additionalProperties``,
    ``items``/``prefixItems``, size and range bounds, ``pattern``); every value is then
    checked by ``jsonschema``, so a keyword not understood here filters rather than lies.

    Raises:
        jsonschema.SchemaError: ``schema`` is not a valid JSON schema.
    """
    validator = _validator(schema)
    return _values(schema).filter(validator.is_valid)


def _validator(schema: Mapping[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(dict(schema))
    return cls(dict(schema))


def _values(schema: Any) -> st.SearchStrategy[Any]:
    if schema is True or not isinstance(schema, Mapping):
        return _ANY_JSON
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(list(schema["enum"]))
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([_values(s) for s in schema[key]])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([_values({**schema, "type": k}) for k in kind])
    if kind == "string":
        if "pattern" in schema:  # all of Unicode: the pattern may need any character
            return st.from_regex(schema["pattern"])
        low = schema.get("minLength", 0)
        return _text(low, schema.get("maxLength", max(low, 16)))
    if kind == "integer":
        low = schema.get("minimum", schema.get("exclusiveMinimum", None))
        high = schema.get("maximum", schema.get("exclusiveMaximum", None))
        return st.integers(low, high)
    if kind == "number":
        return st.integers(schema.get("minimum"), schema.get("maximum")) | st.floats(
            schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return _arrays(schema)
    if kind == "object":
        return _objects(schema)
    return _ANY_JSON


def _arrays(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    low = schema.get("minItems", 0)
    high = schema.get("maxItems", max(low, _MAX_SIZE))
    prefix = schema.get("prefixItems")
    if prefix is not None:
        return st.tuples(*[_values(s) for s in prefix]).map(list)
    return st.lists(_values(schema.get("items", True)), min_size=low, max_size=high)


def _objects(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    properties: Mapping[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    extra = schema.get("additionalProperties", True)
    fixed = st.fixed_dictionaries(
        {k: _values(s) for k, s in properties.items() if k in required},
        optional={k: _values(s) for k, s in properties.items() if k not in required},
    )
    if extra is False or properties:
        return fixed
    return st.dictionaries(_text(max_size=8), _values(extra), max_size=_MAX_SIZE)


def tool_arguments(tool: Tool[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Arguments that fit ``tool``'s schema."""
    return json_values(tool.spec.parameters)


def invalid_tool_arguments(tool: Tool[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Arguments that break ``tool``'s schema: a required one left out, one of the wrong
    type, or one the tool does not take."""
    schema = tool.spec.parameters
    validator = _validator(schema)
    properties: Mapping[str, Any] = schema.get("properties", {})
    required = list(schema.get("required", ()))
    valid = json_values(schema)
    ways: list[st.SearchStrategy[dict[str, Any]]] = []
    if required:
        ways.append(
            st.tuples(valid, st.sampled_from(required)).map(
                lambda pair: {k: v for k, v in pair[0].items() if k != pair[1]}
            )
        )
    if properties:
        ways.append(
            st.tuples(valid, st.sampled_from(sorted(properties)), _ANY_JSON).map(
                lambda triple: {**triple[0], triple[1]: triple[2]}
            )
        )
    if schema.get("additionalProperties") is False:
        ways.append(valid.map(lambda args: {**args, "not_a_parameter": 1}))
    if not ways:
        ways.append(st.just({"not_a_parameter": 1}))
    return st.one_of(ways).filter(lambda args: not validator.is_valid(args))


def tool_calls(
    tools: Sequence[Tool[Any]],
    *,
    invalid_arguments: bool = True,
    unknown_tools: bool = True,
    malformed_arguments: bool = True,
) -> st.SearchStrategy[ScriptedCall]:
    """A call of one of ``tools``: valid arguments first (Hypothesis shrinks towards
    them), then, unless switched off, arguments that break the schema, a tool that does
    not exist and arguments that are not JSON."""
    ways: list[st.SearchStrategy[ScriptedCall]] = [
        st.builds(ScriptedCall, st.just(t.name), tool_arguments(t)) for t in tools
    ]
    if invalid_arguments:
        ways += [st.builds(ScriptedCall, st.just(t.name), invalid_tool_arguments(t)) for t in tools]
    if unknown_tools or not tools:
        ways.append(st.builds(ScriptedCall, st.just(UNKNOWN_TOOL)))
    if malformed_arguments:
        names = [t.name for t in tools] or [UNKNOWN_TOOL]
        ways.append(
            st.builds(ScriptedCall, st.sampled_from(names), st.sampled_from(MALFORMED_ARGUMENTS))
        )
    return st.one_of(ways)


def texts(max_tokens: int = 40, words: Iterable[str] = WORDS) -> st.SearchStrategy[str]:
    """Text of up to ``max_tokens`` words from ``words``."""
    return st.lists(st.sampled_from(tuple(words)), max_size=max_tokens).map(" ".join)


def agent_scripts(
    tools: Sequence[Tool[Any]] = (),
    *,
    max_turns: int = 4,
    max_parallel: int = 3,
    max_tokens: int = 40,
    words: Iterable[str] = WORDS,
    invalid_arguments: bool = True,
    unknown_tools: bool = True,
    malformed_arguments: bool = True,
    model_errors: bool = True,
    slow_tokens: bool = True,
    handoffs: Sequence[str] = (),
) -> st.SearchStrategy[list[ScriptedTurn]]:
    """Scripts for ``ScriptedChatModel(turns)`` driving an agent over ``tools``.

    0 to ``max_turns`` turns of 1 to ``max_parallel`` tool calls (see :func:`tool_calls`),
    then a final answer of up to ``max_tokens`` tokens. With ``model_errors`` a turn may
    fail mid-stream (``ScriptedTurn.error``), with ``slow_tokens`` it may pace its
    tokens (up to 2 ms apart). With ``handoffs`` (the agent's handoff tool names, such
    as ``"transfer_to_billing"``) the last turn may hand the conversation on instead of
    answering. Shrinking heads for one plain answer.

    Raises:
        TypeError: ``tools`` holds something that is not a tool.
    """
    tools = tuple(tools)
    for item in tools:
        if not isinstance(item, Tool):
            raise TypeError(f"agent_scripts takes tools (made with @tool), got {item!r:.80}")
    if max_turns < 0 or max_parallel < 1 or max_tokens < 0:
        raise ValueError("max_turns and max_tokens must be >= 0, max_parallel >= 1")
    calls = st.lists(
        tool_calls(
            tools,
            invalid_arguments=invalid_arguments,
            unknown_tools=unknown_tools,
            malformed_arguments=malformed_arguments,
        ),
        min_size=1,
        max_size=max_parallel,
    )
    text = texts(max_tokens, words)
    errors = st.sampled_from([None, None, None, MODEL_ERROR]) if model_errors else st.none()
    delays = st.sampled_from([None, None, 0.0005, 0.002]) if slow_tokens else st.none()

    @st.composite
    def scripts(draw: st.DrawFn) -> list[ScriptedTurn]:
        turns = [
            ScriptedTurn(
                draw(texts(8, words)),
                draw(calls),
                error=draw(errors),
                token_delay=draw(delays),
            )
            for _ in range(draw(st.integers(0, max_turns)))
        ]
        last = ScriptedTurn(draw(text), error=draw(errors), token_delay=draw(delays))
        hands_on: bool = draw(st.booleans()) if handoffs else False
        if hands_on:
            target = ScriptedCall(draw(st.sampled_from(tuple(handoffs))))
            last = ScriptedTurn(draw(texts(8, words)), [target], token_delay=draw(delays))
        turns.append(last)
        return turns

    return scripts()


def team_scripts(
    team: Mapping[str, Sequence[Tool[Any]]],
    handoffs: Mapping[str, Sequence[str]] | None = None,
    **options: Any,
) -> st.SearchStrategy[dict[str, list[ScriptedTurn]]]:
    """Scripts for several agents at once: ``team`` maps each agent's name to its
    tools, ``handoffs`` each agent's name to its handoff tool names; each agent's
    script is drawn by :func:`agent_scripts` (``options`` go to it)."""
    links = handoffs or {}
    return st.fixed_dictionaries(
        {
            name: agent_scripts(tools, handoffs=links.get(name, ()), **options)
            for name, tools in team.items()
        }
    )


@frozen(repr=False)
class GuardrailOutcome:
    """What a drawn guardrail does: passes, trips or raises (it fails closed), after
    ``delay`` seconds (``None``: it hangs until the run's timeout or cancellation).
    :meth:`check` is the guardrail's function."""

    verdict: Literal["pass", "trip", "raise"]
    delay: float | None = 0.0

    def __repr__(self) -> str:
        return f"GuardrailOutcome({self.verdict!r}, delay={self.delay!r})"

    async def check(self, value: Any) -> GuardrailResult | None:
        """Judge ``value`` as drawn."""
        if self.delay is None:
            await trio.sleep_forever()
        await trio.sleep(self.delay or 0)
        if self.verdict == "raise":
            raise RuntimeError("the guardrail fell over (drawn by guardrail_outcomes)")
        if self.verdict == "trip":
            return GuardrailResult.tripped("drawn by guardrail_outcomes")
        return None


def guardrail_outcomes(
    *, trips: bool = True, raises: bool = True, hangs: bool = False
) -> st.SearchStrategy[GuardrailOutcome]:
    """Guardrail behaviour: passing at once first (for shrinking), then passing late,
    tripping, raising and, with ``hangs``, never answering."""
    verdicts: list[Literal["pass", "trip", "raise"]] = ["pass"]
    if trips:
        verdicts.append("trip")
    if raises:
        verdicts.append("raise")
    delays: list[float | None] = [0.0, 0.0005, 0.003]
    if hangs:
        delays.append(None)
    return st.builds(GuardrailOutcome, st.sampled_from(verdicts), st.sampled_from(delays))


def faults(max_events: int = 60) -> st.SearchStrategy[Faults]:
    """No fault first (for shrinking), then a consumer that leaves at a drawn event and
    a handler that raises on a drawn event."""
    at = st.one_of(st.none(), st.integers(1, max_events))
    return st.builds(Faults, at, at)


def script_as_python(turns: Sequence[ScriptedTurn]) -> str:
    """The script as Python source, one turn per line."""
    body = "".join(f"    {turn!r},\n" for turn in turns)
    return f"[\n{body}]"
