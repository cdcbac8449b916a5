"""Tools: async (or sync) functions the model may call, each served by its own actor."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, Generic, Literal, Protocol, TypeVar, overload

import jsonschema
import trio
from attrs import field, frozen

from protocol import ToolCall, ToolRequest, ToolSpec, thawed
from runtime import (
    Performer,
    Run,
    RunContext,
    SharedState,
    describe_error,
    make_config,
    new_run_id,
    positive_int,
)

from ._errors import (
    ToolArgumentsError,
    ToolDefinitionError,
    ToolOutputError,
    ToolTimeoutError,
)
from ._fields import metadata_dict, run_name, tag_tuple
from ._schema import parameters_schema

ErrorPolicy = Literal["tell", "raise"]
"""What a tool's failure does: ``tell`` the model (as an error tool message; the loop
goes on) or ``raise`` (the agent run fails with the tool's exception)."""

DEFAULT_MAX_OUTPUT_CHARS: Final = 100_000

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


@frozen(eq=False)
class Tool(Performer[ToolRequest, R], Generic[R]):
    """A tool: its name, description and JSON schema, and the function that does it.

    Make one with :func:`tool`. Arguments are validated against the schema before the
    function runs. Some parameters are filled in and hidden from the schema: one
    annotated :class:`~runtime.RunContext` gets the tool run's context; one annotated
    :class:`~runtime.SharedState` the run tree's shared state, to read and change; one named
    ``config`` (or annotated with LangChain's ``RunnableConfig``) gets LangChain's
    config of the run (``tags``, ``metadata``, ``callbacks``), to pass on to nested
    calls; one named ``callbacks`` (or annotated with LangChain's ``Callbacks``) the
    handlers watching the run. Sync functions run in a worker thread. ``timeout``
    bounds a call (:class:`ToolTimeoutError`); ``on_error`` overrides the agent's
    policy for this tool's failures; ``max_output_chars`` caps what the model is given
    (:class:`ToolOutputError` beyond it). ``needs_approval`` (``True``, or a predicate
    over the call's arguments) makes an agent pause its run instead of calling the tool
    until a person approves the call (see ``Runtime.resume``); it needs a runtime with a
    store, since the pause must outlive the process.
    """

    run_kind = "tool"
    name: str = field(converter=run_name)
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any] = field(repr=False)
    injected: dict[str, str] = field(factory=dict)
    """Parameters filled in when the tool runs: name -> ``context``, ``state``,
    ``config`` or ``callbacks``."""
    tags: tuple[str, ...] = field(default=(), converter=tag_tuple)
    metadata: dict[str, Any] = field(factory=dict, converter=metadata_dict)
    timeout: float | None = None
    on_error: ErrorPolicy | None = None
    max_output_chars: int | None = DEFAULT_MAX_OUTPUT_CHARS
    needs_approval: bool | Callable[[dict[str, Any]], bool] = False
    restart_limit: int = 3
    restart_window: float = 10.0
    _validator: Any = field(init=False, repr=False)
    _is_async: bool = field(init=False, repr=False)
    _spec: ToolSpec = field(init=False, repr=False)  # made once: every agent run offers it

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.description, str) or not self.description:
            raise TypeError(
                f"tool {self.name!r}: description must be a non-empty string, "
                f"got {self.description!r}"
            )
        if self.timeout is not None:
            try:
                make_config(timeout=self.timeout)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"tool {self.name!r}: {exc}") from None
        if self.on_error not in (None, "tell", "raise"):
            raise ValueError(
                f"tool {self.name!r}: on_error must be 'tell' or 'raise', got {self.on_error!r}"
            )
        positive_int(self.max_output_chars, f"tool {self.name!r}: max_output_chars", optional=True)
        if not isinstance(self.needs_approval, bool) and not callable(self.needs_approval):
            raise TypeError(
                f"tool {self.name!r}: needs_approval must be a bool or a function of the "
                f"call's arguments, got {self.needs_approval!r}"
            )
        try:
            jsonschema.Draft202012Validator.check_schema(self.parameters)
        except jsonschema.SchemaError as exc:
            raise ToolDefinitionError(
                f"tool {self.name!r}: invalid JSON schema: {exc.message}"
            ) from exc
        object.__setattr__(self, "_validator", jsonschema.Draft202012Validator(self.parameters))
        object.__setattr__(self, "_is_async", inspect.iscoroutinefunction(self.fn))
        object.__setattr__(self, "_spec", ToolSpec(self.name, self.description, self.parameters))

    def approval_needed(self, arguments: dict[str, Any]) -> bool:
        """Whether a call with ``arguments`` waits for a person's approval.

        Raises:
            ToolDefinitionError: the predicate raised, or did not return a bool (the
                call is not made unapproved: a predicate that fails, fails closed).
        """
        needs = self.needs_approval
        if isinstance(needs, bool):
            return needs
        try:
            answer = needs(arguments)
        except Exception as exc:
            raise ToolDefinitionError(
                f"tool {self.name!r}: its needs_approval predicate raised {describe_error(exc)}"
            ) from exc
        if not isinstance(answer, bool):
            raise ToolDefinitionError(
                f"tool {self.name!r}: its needs_approval predicate returned {answer!r}, not a bool"
            )
        return answer

    @property
    def context_param(self) -> str | None:
        """The parameter that gets the run's :class:`~runtime.RunContext`, if any."""
        return next((n for n, what in self.injected.items() if what == "context"), None)

    @property
    def spec(self) -> ToolSpec:
        """What the model is told about this tool."""
        return self._spec

    @property
    def is_async(self) -> bool:
        """Whether the function is a coroutine function (else it runs in a thread)."""
        return self._is_async

    def coerce_input(self, value: Any) -> ToolRequest:
        """Accept a :class:`ToolRequest`, a :class:`ToolCall`, a dict of arguments, or,
        for a tool with exactly one required parameter, that parameter's value alone."""
        if isinstance(value, ToolRequest):
            return value
        if isinstance(value, ToolCall):
            return ToolRequest(value)
        if isinstance(value, Mapping):
            return ToolRequest(
                ToolCall(id=f"call_{new_run_id()}", name=self.name, args=dict(value))
            )
        required = self.parameters.get("required", [])
        if len(required) == 1:
            return self.coerce_input({required[0]: value})
        names = list(self.parameters.get("properties", {}))
        raise TypeError(
            f"tool {self.name!r} takes a dict of arguments {names}, got {type(value).__name__}"
        )

    def event_input(self, message: ToolRequest) -> Any:
        return message.call.args

    def local_metadata(self, message: ToolRequest) -> dict[str, Any]:
        """The call's ``tool_call_id``: edges pair the model's call with the tool's
        result by it."""
        return {"tool_call_id": message.call.id}

    def validate(self, args: Mapping[str, Any]) -> None:
        """Check ``args`` against the schema.

        Raises:
            ToolArgumentsError: listing every problem, each with the argument it is at.
        """
        errors = sorted(self._validator.iter_errors(args), key=lambda e: list(e.absolute_path))
        if not errors:
            return
        problems = []
        for error in errors:
            where = "/".join(str(p) for p in error.absolute_path)
            problems.append(f"at {where!r}: {error.message}" if where else error.message)
        raise ToolArgumentsError(f"invalid arguments for tool {self.name!r}: {'; '.join(problems)}")

    async def perform(self, message: ToolRequest, run: Run) -> R:
        args = message.call.args
        self.validate(args)
        kwargs = thawed(args)  # the tool's own (the message's are read-only)
        for name, what in self.injected.items():
            kwargs[name] = _injected(what, run.context)
        if self.timeout is None:
            return await self._call(kwargs)
        # Leaving this block other than by return means the timeout struck.
        with trio.move_on_after(self.timeout):
            return await self._call(kwargs)
        raise ToolTimeoutError(f"tool {self.name!r} did not finish within {self.timeout} s")

    async def _call(self, kwargs: dict[str, Any]) -> R:
        if self.is_async:
            result: R = await self.fn(**kwargs)
            return result
        return await trio.to_thread.run_sync(
            functools.partial(self.fn, **kwargs), abandon_on_cancel=True
        )

    def render(self, output: Any) -> str:
        """The text the model reads for this tool's ``output``.

        Raises:
            ToolOutputError: the output has no JSON form, or is over ``max_output_chars``.
        """
        text = render_output(self.name, output)
        limit = self.max_output_chars
        if limit is not None and len(text) > limit:
            raise ToolOutputError(
                f"tool {self.name!r} returned {len(text):,} characters, over its limit of "
                f"{limit:,} (max_output_chars)"
            )
        return text


def _injected(what: str, context: RunContext) -> Any:
    if what == "context":
        return context
    if what == "state":
        return SharedState(context.state)
    if what == "callbacks":
        return list(context.handlers)
    return {
        "tags": list(context.tags),
        "metadata": dict(context.metadata),
        "callbacks": list(context.handlers),
    }


def render_output(tool_name: str, output: Any) -> str:
    """The text the model reads for a tool's output: strings as they are, other values
    as JSON.

    Raises:
        ToolOutputError: the output has no JSON form.
    """
    if isinstance(output, str):
        return output
    try:
        return json.dumps(output, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ToolOutputError(
            f"tool {tool_name!r} returned a {type(output).__name__}, which cannot be given to "
            f"the model: return a str or a JSON value ({exc})"
        ) from exc
    except RecursionError:
        raise ToolOutputError(
            f"tool {tool_name!r} returned a {type(output).__name__} nested too deeply to be "
            "given to the model as JSON"
        ) from None


class ToolDecorator(Protocol):
    """What ``@tool(...)`` with settings returns: it makes a function a tool."""

    @overload
    def __call__(self, fn: Callable[..., Awaitable[R]], /) -> Tool[R]: ...
    @overload
    def __call__(self, fn: Callable[..., R], /) -> Tool[R]: ...


@overload
def tool(fn: Callable[..., Awaitable[R]], /) -> Tool[R]: ...


@overload
def tool(fn: Callable[..., R], /) -> Tool[R]: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    tags: Iterable[str] = (),
    metadata: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    on_error: ErrorPolicy | None = None,
    max_output_chars: int | None = DEFAULT_MAX_OUTPUT_CHARS,
    needs_approval: bool | Callable[[dict[str, Any]], bool] = False,
) -> ToolDecorator: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    tags: Iterable[str] = (),
    metadata: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    on_error: ErrorPolicy | None = None,
    max_output_chars: int | None = DEFAULT_MAX_OUTPUT_CHARS,
    needs_approval: bool | Callable[[dict[str, Any]], bool] = False,
) -> Tool[Any] | ToolDecorator:
    """Make a function a tool: ``@tool`` or ``@tool(name=..., description=...)``.

    The name defaults to the function's name, the description to its docstring, the
    parameters' JSON schema comes from the type hints (defaults make a parameter
    optional; ``Annotated[str, "text"]`` adds a description).

    Raises:
        ToolDefinitionError: no docstring or description, a parameter without a type
            hint, or a type with no JSON form.
    """

    def make(func: Callable[..., Any]) -> Tool[Any]:
        if not callable(func):
            raise ToolDefinitionError(f"@tool needs a function, got {type(func).__name__}")
        if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
            raise ToolDefinitionError(
                f"@tool needs a function that returns its result, got the generator "
                f"function {getattr(func, '__name__', func)!r}"
            )
        tool_name = name if name is not None else getattr(func, "__name__", "")
        if not isinstance(tool_name, str) or not tool_name.isidentifier():
            raise ToolDefinitionError(f"tool name must be an identifier, got {tool_name!r}")
        if description is not None and not isinstance(description, str):
            raise ToolDefinitionError(
                f"tool {tool_name!r}: description must be a string, got {description!r}"
            )
        text = description if description is not None else inspect.getdoc(func)
        if not text:
            raise ToolDefinitionError(
                f"tool {tool_name!r} needs a description: write a docstring or pass description="
            )
        schema, injected = parameters_schema(func, tool_name, RunContext, SharedState)
        return Tool(
            name=tool_name,
            description=text,
            parameters=schema,
            fn=func,
            injected=injected,
            tags=tag_tuple(tags),
            metadata=metadata_dict(metadata if metadata is not None else {}),
            timeout=timeout,
            on_error=on_error,
            max_output_chars=max_output_chars,
            needs_approval=needs_approval,
        )

    if fn is not None:
        return make(fn)
    return make
