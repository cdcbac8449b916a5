"""Guardrails: checks of an agent's input, its final answer and its tool calls.

A guardrail is a function (sync or async) or a performer (an agent, a tool, any
runnable) that judges one value and says whether its tripwire fires. Input guardrails
run concurrently with the agent's first model turn (unless ``parallel=False``: then
before it); a tripwire cancels the model's run through the agent's cancel scope in the
same scheduler step as the verdict is read, so no token the model makes after it
reaches a consumer, and the agent's run ends with an error event that names the
guardrail and its reason (:class:`GuardrailTrippedError`). A guardrail that raises, or
answers something that is not a verdict, fails closed: it counts as tripped, its
exception as the reason. A guardrail that hangs is bounded by the run's ``timeout``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Literal, TypeVar, overload

import trio
from attrs import field, frozen

from protocol import AgentOutput, AgentRequest, ToolCall
from runtime import Run, Runnable, describe_error

from ._errors import GuardrailTrippedError

Stage = Literal["input", "output", "tool"]
STAGES: Final = ("input", "output", "tool")
T = TypeVar("T")
Check = Callable[[Any], Any] | Runnable[Any]
"""What judges: a function of the value (sync or async), or a performer."""


@frozen
class GuardrailResult:
    """A guardrail's verdict: ``tripwire`` fires (the run stops) or not, and why.

    Also an ``output_type`` for an agent that judges as a guardrail (its structured
    answer is the verdict).
    """

    tripwire: bool
    reason: str = ""

    @classmethod
    def passed(cls) -> GuardrailResult:
        """The value passes."""
        return cls(False)

    @classmethod
    def tripped(cls, reason: str) -> GuardrailResult:
        """The value does not pass, because ``reason``."""
        return cls(True, reason)


def _verdict(value: Any) -> GuardrailResult:
    """A guardrail's answer as a verdict: a :class:`GuardrailResult`, ``None`` (passes),
    or an agent's output whose structured answer is a verdict.

    Raises:
        TypeError: anything else (the guardrail then fails closed).
    """
    if value is None:
        return GuardrailResult.passed()
    if isinstance(value, GuardrailResult):
        return value
    if isinstance(value, AgentOutput) and value.structured is not None:
        return _verdict(value.structured)
    raise TypeError(
        f"answered a {type(value).__name__}, not a GuardrailResult or None "
        "(pass verdict= to read the performer's output)"
    )


@frozen(eq=False)
class Guardrail:
    """One guardrail of an agent: make one with :func:`input_guardrail`,
    :func:`output_guardrail` or :func:`tool_guardrail`."""

    stage: Stage
    check: Check = field(repr=False)
    name: str
    parallel: bool = True
    """For an input guardrail: run beside the first model turn (``True``) or before it."""
    verdict: Callable[[Any], Any] | None = field(default=None, repr=False)
    """For a performer: turns its output into a :class:`GuardrailResult` (or ``None``)."""

    def __attrs_post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"a guardrail's stage is one of {STAGES}, got {self.stage!r}")
        if not isinstance(self.check, Runnable) and not callable(self.check):
            raise TypeError(
                f"guardrail {self.name!r}: check must be a function or a performer, "
                f"got {self.check!r:.80}"
            )
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"a guardrail's name must be a non-empty string, got {self.name!r}")

    async def judge(self, run: Run, value: Any) -> GuardrailResult:
        """The verdict on ``value``; an exception of the check (or an answer that is no
        verdict) is a tripwire that names it: guardrails fail closed."""
        try:
            if isinstance(self.check, Runnable):
                performer = self.check.bind()[0]
                asked = performer.coerce_input(_performer_input(value))
                answer = await run.request(self.check, asked)
            else:
                answer = self.check(value)
                if inspect.isawaitable(answer):
                    answer = await answer
            if self.verdict is not None:
                answer = self.verdict(answer)
            return _verdict(answer)
        except Exception as exc:  # fails closed; a cancellation goes on up
            return GuardrailResult.tripped(f"the guardrail failed: {describe_error(exc)}")

    def tripped(self, verdict: GuardrailResult) -> GuardrailTrippedError:
        """The error that ends the run this guardrail stopped."""
        return GuardrailTrippedError(self.name, self.stage, verdict.reason or "no reason given")


def _performer_input(value: Any) -> Any:
    """What a performer guardrail is asked: the user's input, the answer (as text or
    JSON data), or the tool call as ``{"name", "args"}``."""
    if isinstance(value, AgentRequest):
        return value.input or ""
    if isinstance(value, ToolCall):
        return json.dumps({"name": value.name, "args": value.args}, ensure_ascii=False)
    return value


MakeGuardrail = Callable[[Check], Guardrail]
"""What a guardrail decorator with settings returns."""


def _make(
    stage: Stage,
    check: Check | None,
    name: str | None,
    parallel: bool,
    verdict: Callable[[Any], Any] | None,
) -> Guardrail | MakeGuardrail:
    def make(target: Check) -> Guardrail:
        label = name or getattr(target, "name", None) or getattr(target, "__name__", None)
        return Guardrail(stage, target, str(label or stage), parallel, verdict)

    return make(check) if check is not None else make


@overload
def input_guardrail(
    check: Check,
    *,
    name: str | None = None,
    parallel: bool = True,
    verdict: Callable[[Any], Any] | None = None,
) -> Guardrail: ...
@overload
def input_guardrail(
    check: None = None,
    *,
    name: str | None = None,
    parallel: bool = True,
    verdict: Callable[[Any], Any] | None = None,
) -> MakeGuardrail: ...
def input_guardrail(
    check: Check | None = None,
    *,
    name: str | None = None,
    parallel: bool = True,
    verdict: Callable[[Any], Any] | None = None,
) -> Guardrail | MakeGuardrail:
    """A guardrail of an agent's input: ``@input_guardrail`` on a function of the
    :class:`~protocol.AgentRequest` (sync or async) returning a
    :class:`GuardrailResult` or ``None``, or ``input_guardrail(performer)`` (asked with
    the user's input). ``parallel=False`` runs it before the model is asked."""
    return _make("input", check, name, parallel, verdict)


@overload
def output_guardrail(
    check: Check, *, name: str | None = None, verdict: Callable[[Any], Any] | None = None
) -> Guardrail: ...
@overload
def output_guardrail(
    check: None = None, *, name: str | None = None, verdict: Callable[[Any], Any] | None = None
) -> MakeGuardrail: ...
def output_guardrail(
    check: Check | None = None,
    *,
    name: str | None = None,
    verdict: Callable[[Any], Any] | None = None,
) -> Guardrail | MakeGuardrail:
    """A guardrail of an agent's final answer (the text, or the structured value with
    an ``output_type``). It judges the whole answer, so it runs once the answer is
    complete: the answer's tokens have streamed, and a tripwire ends the run with an
    error instead of the answer."""
    return _make("output", check, name, True, verdict)


@overload
def tool_guardrail(
    check: Check, *, name: str | None = None, verdict: Callable[[Any], Any] | None = None
) -> Guardrail: ...
@overload
def tool_guardrail(
    check: None = None, *, name: str | None = None, verdict: Callable[[Any], Any] | None = None
) -> MakeGuardrail: ...
def tool_guardrail(
    check: Check | None = None,
    *,
    name: str | None = None,
    verdict: Callable[[Any], Any] | None = None,
) -> Guardrail | MakeGuardrail:
    """A guardrail of each tool call (a :class:`~protocol.ToolCall`), judged before
    the tool runs; a tripwire ends the run and the tool never runs."""
    return _make("tool", check, name, True, verdict)


def guardrail_tuple(value: Any) -> tuple[Guardrail, ...]:
    """An agent's ``guardrails`` setting, checked."""
    items = tuple(value)
    for item in items:
        if not isinstance(item, Guardrail):
            raise TypeError(
                "guardrails must be made with input_guardrail, output_guardrail or "
                f"tool_guardrail, got {item!r:.80}"
            )
    return items


async def judge_all(run: Run, guardrails: Sequence[Guardrail], value: Any) -> None:
    """Judge ``value`` by every guardrail, concurrently; the first tripwire cancels
    the others.

    Raises:
        GuardrailTrippedError: a guardrail's tripwire fired.
    """
    if not guardrails:
        return
    if len(guardrails) == 1:
        verdict = await guardrails[0].judge(run, value)
        if verdict.tripwire:
            raise guardrails[0].tripped(verdict)
        return
    trips: list[GuardrailTrippedError] = []
    async with trio.open_nursery() as nursery:
        for guard in guardrails:
            nursery.start_soon(_judge_into, run, guard, value, trips, nursery.cancel_scope)
    if trips:
        raise trips[0]


async def _judge_into(
    run: Run,
    guard: Guardrail,
    value: Any,
    trips: list[GuardrailTrippedError],
    scope: trio.CancelScope,
) -> None:
    verdict = await guard.judge(run, value)
    if verdict.tripwire:
        trips.append(guard.tripped(verdict))
        scope.cancel()  # the verdict is read: nothing else of this step goes on


async def beside_input(
    run: Run,
    guardrails: Sequence[Guardrail],
    request: AgentRequest,
    first_turn: Callable[[], Awaitable[T]],
) -> T:
    """The agent's first model turn, with its input guardrails: those with
    ``parallel=False`` first, the others concurrently with the turn. A tripwire cancels
    the turn (its run ends cancelled) before the verdict's task yields, so the model's
    tokens stop where the tripwire fires; the turn's answer is used only once every
    guardrail has passed.

    Raises:
        GuardrailTrippedError: a guardrail's tripwire fired.
        Exception: what the model's turn raised.
    """
    await judge_all(run, [g for g in guardrails if not g.parallel], request)
    beside = [g for g in guardrails if g.parallel]
    if not beside:
        return await first_turn()
    trips: list[GuardrailTrippedError] = []
    failures: list[Exception] = []
    answer: list[T] = []

    async def turn(scope: trio.CancelScope) -> None:
        try:
            answer.append(await first_turn())
        except Exception as exc:  # the model failed: the run fails with its error
            failures.append(exc)
            scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(turn, nursery.cancel_scope)
        for guard in beside:
            nursery.start_soon(_judge_into, run, guard, request, trips, nursery.cancel_scope)
    if trips:
        raise trips[0]
    if failures:
        raise failures[0]
    return answer[0]
