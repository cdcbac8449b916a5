"""The agent: OpenAI's tool-calling loop, each tool call a request to a tool actor."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Unpack

import attrs
import trio
from attrs import field, frozen

from protocol import (
    ActionsChunk,
    AgentAction,
    AgentOutput,
    AgentRequest,
    AgentStep,
    AssistantMessage,
    ChatMessage,
    ChatRequest,
    FinishChunk,
    InvalidToolCall,
    PendingRequest,
    StepsChunk,
    SystemMessage,
    ToolCall,
    ToolMessage,
    ToolRequest,
    ToolSpec,
    Usage,
    UserMessage,
    coerce_messages,
)
from runtime import (
    ActorFailedError,
    NoStoreError,
    Performer,
    ReplayDivergenceError,
    Run,
    Runnable,
    RunPaused,
    describe_error,
)

if TYPE_CHECKING:
    from protocol import StepChunk
    from runtime import ChunkStream, RunConfig, StreamOptions

from ._errors import ToolArgumentsError, ToolOutputError
from ._fields import metadata_dict, run_name, tag_tuple
from ._tool import ErrorPolicy, Tool

DEFAULT_MAX_ITERATIONS: Final = 15


def _tools(value: Iterable[Tool[Any]]) -> tuple[Tool[Any], ...]:
    if isinstance(value, str | Mapping) or not isinstance(value, Iterable):
        raise TypeError(f"tools must be a list of tools (use @tool), got {value!r:.80}")
    tools = tuple(value)
    for item in tools:
        if not isinstance(item, Tool):
            raise TypeError(f"tools must be Tool objects (use @tool), got {type(item).__name__}")
    names = [t.name for t in tools]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"tool names must be unique, repeated: {duplicates}")
    return tools


@frozen(eq=False)
class Agent(Performer[AgentRequest, AgentOutput]):
    """A tool-calling agent.

    Each iteration asks the model for a turn; tool calls of one turn run concurrently,
    each in its tool's actor; their results go back to the model as tool messages. The
    loop ends when the model answers without tool calls (``finish_reason="stop"``) or
    after ``max_iterations`` model turns (``"max_iterations"``; ``None``: no limit, as in
    LangChain).

    Bad tool calls never end the run: an unknown tool, arguments that are not JSON or
    do not fit the schema, and output the model cannot be given each become an error
    tool message the model reads. A tool that raises (or times out) is told to the
    model too, unless ``tool_errors="raise"`` (or the tool's own ``on_error="raise"``):
    then the run fails with that tool's exception. A model error ends the run.
    """

    model: Runnable[Any]
    tools: tuple[Tool[Any], ...] = field(default=(), converter=_tools)
    name: str = field(default="Agent", converter=run_name)
    max_iterations: int | None = DEFAULT_MAX_ITERATIONS
    system_prompt: str | None = None
    tool_errors: ErrorPolicy = "tell"
    tags: tuple[str, ...] = field(default=(), converter=tag_tuple)
    metadata: dict[str, Any] = field(factory=dict, converter=metadata_dict)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.model, Runnable) or self.model.bind()[0].run_kind != "chat_model":
            raise TypeError(f"model must be a chat model, got {self.model!r}")
        if self.max_iterations is not None and (
            isinstance(self.max_iterations, bool)
            or not isinstance(self.max_iterations, int)
            or self.max_iterations < 1
        ):
            raise ValueError(
                f"max_iterations must be an integer >= 1 or None, got {self.max_iterations!r}"
            )
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise TypeError(f"system_prompt must be a string or None, got {self.system_prompt!r}")
        if self.tool_errors not in ("tell", "raise"):
            raise ValueError(f"tool_errors must be 'tell' or 'raise', got {self.tool_errors!r}")

    if TYPE_CHECKING:

        def astream(
            self,
            input: Any,
            config: RunConfig | Mapping[str, Any] | None = None,
            **kw: Unpack[StreamOptions],
        ) -> ChunkStream[StepChunk]:
            """The agent's steps: actions, their results, the answer."""

    def coerce_input(self, value: Any) -> AgentRequest:
        r"""Accept a string; ``{"input": str, "chat_history": [...]}`` (AgentExecutor's);
        ``{"messages": [...]}`` or a list of messages (LangGraph's), whose last message
        is the user's question, or tool results that answer the calls of the assistant
        message before them (the conversation goes on); or an :class:`AgentRequest`.
        Messages may be Troupe's, ``{"role": ..., "content": ...}`` dicts or
        ``(role, content)`` tuples. A ``"tools"`` key beside them lists tools the caller
        carries out itself (``ToolSpec``\ s or ``{"name", "description", "parameters"}``
        dicts; see :class:`AgentRequest`).

        Raises:
            TypeError: anything else, keys the agent does not take (never ignored), or
                a caller's tool named as one of the agent's own.
        """
        if isinstance(value, AgentRequest):
            return self._checked(value)
        if isinstance(value, str):
            return AgentRequest(value)
        if isinstance(value, Mapping):
            keys = set(value)
            tools = self._client_tools(value.get("tools", ()))
            if "messages" in keys:
                if keys - {"tools"} != {"messages"}:
                    raise TypeError(
                        f"agent {self.name!r} takes 'messages' alone, but also "
                        f"got {sorted(keys - {'messages', 'tools'})}"
                    )
                request = self._from_messages(value["messages"])
                return self._checked(attrs.evolve(request, client_tools=tools))
            unknown = keys - {"input", "chat_history", "tools"}
            if unknown:
                raise TypeError(
                    f"agent {self.name!r} does not take {sorted(unknown)}: it takes "
                    "{'input': str, 'chat_history': [...]} or {'messages': [...]}"
                )
            question = value.get("input")
            if question is not None and not isinstance(question, str):
                raise TypeError(
                    f"agent {self.name!r} needs 'input' as a string, got {question!r:.80}"
                )
            try:
                history = coerce_messages(value.get("chat_history", ()), "chat_history")
            except TypeError as exc:
                raise TypeError(f"agent {self.name!r}: {exc}") from None
            if question is None and not (history and isinstance(history[-1], ToolMessage)):
                raise TypeError(
                    f"agent {self.name!r} needs 'input' as a string (or a 'chat_history' "
                    "that ends with tool results, to go on)"
                )
            return self._checked(AgentRequest(question, history, tools))
        if isinstance(value, list | tuple):
            return self._from_messages(value)
        raise TypeError(
            f"agent {self.name!r} takes a string, {{'input': str, 'chat_history': [...]}} "
            f"or {{'messages': [...]}}, got {type(value).__name__}: {value!r:.80}"
        )

    def _from_messages(self, value: Any) -> AgentRequest:
        try:
            messages = coerce_messages(value, "messages")
        except TypeError as exc:
            raise TypeError(f"agent {self.name!r}: {exc}") from None
        if messages and isinstance(messages[-1], ToolMessage):
            return AgentRequest(None, messages)  # tool results: the conversation goes on
        if not messages or not isinstance(messages[-1], UserMessage):
            raise TypeError(
                f"agent {self.name!r} answers the user: the last of 'messages' must be "
                "the user's question (or the results of the tool calls before it)"
            )
        return AgentRequest(messages[-1].content, messages[:-1])

    def _client_tools(self, value: Any) -> tuple[ToolSpec, ...]:
        if not isinstance(value, list | tuple):
            raise TypeError(f"agent {self.name!r}: 'tools' must be a list, got {value!r:.80}")
        specs = []
        for index, spec in enumerate(value):
            if isinstance(spec, ToolSpec):
                specs.append(spec)
                continue
            if (
                not isinstance(spec, Mapping)
                or not isinstance(spec.get("name"), str)
                or not spec["name"]
                or not isinstance(spec.get("parameters", {}), Mapping)
            ):
                raise TypeError(
                    f"agent {self.name!r}: tools[{index}] must be a tool spec "
                    "{'name': str, 'description': str, 'parameters': {...}}, got "
                    f"{spec!r:.80}"
                )
            specs.append(
                ToolSpec(
                    spec["name"],
                    str(spec.get("description") or ""),
                    dict(spec.get("parameters") or {"type": "object"}),
                )
            )
        return tuple(specs)

    def _checked(self, request: AgentRequest) -> AgentRequest:
        own = {t.name for t in self.tools}
        clashes = sorted(spec.name for spec in request.client_tools if spec.name in own)
        if clashes:
            raise TypeError(
                f"agent {self.name!r}: the caller's tools {clashes} have the names of the "
                "agent's own tools"
            )
        return request

    def event_input(self, message: AgentRequest) -> Any:
        shown: dict[str, Any] = {}
        if message.input is not None:
            shown["input"] = message.input
        if message.chat_history:
            shown["chat_history"] = list(message.chat_history)
        if message.client_tools:
            shown["tools"] = list(message.client_tools)
        return shown

    def with_history(self, message: AgentRequest, history: Sequence[Any]) -> AgentRequest:
        """The request after a thread's messages: they come before its own history.

        Raises:
            TypeError: the thread holds something that is not a chat message.
        """
        try:
            earlier = coerce_messages(history, "the thread's messages")
        except TypeError as exc:
            raise TypeError(f"agent {self.name!r}: {exc}") from None
        return AgentRequest(message.input, (*earlier, *message.chat_history), message.client_tools)

    def conversation(self, message: AgentRequest, output: Any) -> Sequence[Any]:
        """The run's messages, its system prompt left out (a thread keeps what was said,
        not how the agent was told to behave)."""
        if not isinstance(output, AgentOutput):
            raise TypeError(f"agent {self.name!r} ended with {type(output).__name__}")
        messages = output.messages
        if self.system_prompt and messages and isinstance(messages[0], SystemMessage):
            messages = messages[1:]
        return messages

    async def perform(self, message: AgentRequest, run: Run) -> AgentOutput:
        if run.runtime.journal is None and any(t.needs_approval for t in self.tools):
            names = [t.name for t in self.tools if t.needs_approval]
            raise NoStoreError(
                f"agent {self.name!r}: tools {names} need a person's approval, and a run "
                "that waits for one must outlive its process: open the runtime with a "
                "store (open_runtime(store='sqlite:///runs.db'), troupe serve --store)"
            )
        message = self._checked(message)
        tools = {t.name: t for t in self.tools}
        specs = (*(t.spec for t in self.tools), *message.client_tools)
        theirs = {spec.name for spec in message.client_tools}
        asked = message.input or ""
        conversation: list[ChatMessage] = []
        if self.system_prompt:
            conversation.append(SystemMessage(self.system_prompt))
        conversation.extend(message.chat_history)
        if message.input is not None:
            conversation.append(UserMessage(message.input))
        usage: Usage | None = None
        decided: set[str] = set()
        limit = self.max_iterations
        turns = itertools.count(1) if limit is None else range(1, limit + 1)
        for iteration in turns:
            reply: AssistantMessage = await run.request(
                self.model, ChatRequest(tuple(conversation), specs)
            )
            conversation.append(reply)
            usage = _add_usage(usage, reply.usage)
            if not reply.tool_calls and not reply.invalid_tool_calls:
                await run.emit(FinishChunk(reply.content, (reply,), "stop"))
                return AgentOutput(asked, reply.content, "stop", iteration, conversation, usage)
            calls: tuple[ToolCall | InvalidToolCall, ...] = (
                *reply.tool_calls,
                *reply.invalid_tool_calls,
            )
            actions = [_action(call) for call in calls]
            await run.emit(ActionsChunk(tuple(actions), (reply,)))
            for_them = [call for call in reply.tool_calls if call.name in theirs]
            ours = reply
            if for_them:  # the caller's tools: ours run now, theirs end the run
                ours = attrs.evolve(
                    reply, tool_calls=tuple(c for c in reply.tool_calls if c.name not in theirs)
                )
                actions = [a for a in actions if a.tool not in theirs]
            results = (
                await self._call_tools(run, tools, ours, decided)
                if ours.tool_calls or ours.invalid_tool_calls
                else []
            )
            steps = tuple(
                AgentStep(action, result.content, result.is_error)
                for action, result in zip(actions, results, strict=True)
            )
            if results:
                await run.emit(StepsChunk(steps, tuple(results)))
            conversation.extend(results)
            if for_them:
                await run.emit(FinishChunk("", (reply,), "client_tool_calls"))
                return AgentOutput(asked, "", "client_tool_calls", iteration, conversation, usage)
        assert limit is not None  # only a limited loop ends here
        output = (
            f"Agent stopped after {limit} model turns "
            f"(max_iterations={limit}) without a final answer."
        )
        await run.emit(FinishChunk(output, (), "max_iterations"))
        return AgentOutput(asked, output, "max_iterations", limit, conversation, usage)

    async def _call_tools(
        self,
        run: Run,
        tools: Mapping[str, Tool[Any]],
        reply: AssistantMessage,
        decided: set[str],
    ) -> list[ToolMessage]:
        calls: Sequence[ToolCall | InvalidToolCall] = (*reply.tool_calls, *reply.invalid_tool_calls)
        results: list[ToolMessage | None] = [None] * len(calls)
        fatal: list[Exception] = []
        pending: list[PendingRequest] = []

        async def call_one(index: int, scope: trio.CancelScope | None) -> None:
            try:
                results[index] = await _call_tool(
                    run, tools, calls[index], self.tool_errors, decided
                )
            except RunPaused as paused:  # the call waits for a person; the others go on
                pending.extend(paused.pending)
            except Exception as exc:  # a tool whose policy is "raise"
                fatal.append(exc)
                if scope is not None:
                    scope.cancel()  # the run fails: stop the sibling calls

        if len(calls) == 1:
            await call_one(0, None)
        else:
            async with trio.open_nursery() as nursery:
                for index in range(len(calls)):
                    nursery.start_soon(call_one, index, nursery.cancel_scope)
        if fatal:
            raise fatal[0]  # the tool's own exception, not an ExceptionGroup
        if pending:
            raise RunPaused(pending)  # the run ends, paused, once the other calls are done
        return [r for r in results if r is not None]


def _add_usage(total: Usage | None, more: Usage | None) -> Usage | None:
    if more is None:
        return total
    if total is None:
        return more
    return Usage(
        total.prompt_tokens + more.prompt_tokens,
        total.completion_tokens + more.completion_tokens,
        total.total_tokens + more.total_tokens,
    )


def _action(call: ToolCall | InvalidToolCall) -> AgentAction:
    if isinstance(call, InvalidToolCall):
        return AgentAction(call.name, {}, call.id, f"invalid call of {call.name}: {call.error}")
    return AgentAction(call.name, call.args, call.id, f"Invoking: `{call.name}` with `{call.args}`")


async def _call_tool(
    run: Run,
    tools: Mapping[str, Tool[Any]],
    call: ToolCall | InvalidToolCall,
    policy: ErrorPolicy,
    decided: set[str],
) -> ToolMessage:
    """One call of the model's, told as a tool message. ``decided``: the ids of calls
    a person's decision was used for in this run (each decision once)."""
    if isinstance(call, InvalidToolCall):
        return ToolMessage(
            f"Error: the arguments of this call of {call.name!r} are invalid: {call.error}. "
            "Call the tool again with a JSON object of arguments.",
            call.id,
            call.name,
            is_error=True,
        )
    target = tools.get(call.name)
    if target is None:
        known = ", ".join(sorted(tools)) or "none"
        return ToolMessage(
            f"Error: there is no tool named {call.name!r}. Available tools: {known}.",
            call.id,
            call.name,
            is_error=True,
        )
    if target.approval_needed(call.args):
        decision = run.context.decisions.get(call.id)
        asked = decision.request if decision is not None else None
        if decision is not None and (
            call.id in decided
            or (asked is not None and (asked.name != call.name or asked.arguments != call.args))
        ):
            decision = None  # a decision answers one call: that tool, those arguments, once
        if decision is not None:
            decided.add(call.id)
        if decision is None:
            raise RunPaused([PendingRequest(call.id, "approval", call.name, call.args)])
        if not decision.approve:
            reason = decision.reason or "no reason was given"
            return ToolMessage(
                f"The person did not approve this call: {reason}", call.id, call.name, is_error=True
            )
        if decision.arguments is not None:
            call = ToolCall(id=call.id, name=call.name, args=dict(decision.arguments))
    try:
        output = await run.request(target, ToolRequest(call))
        content = target.render(output)
    except (ToolArgumentsError, ToolOutputError) as exc:
        # Bad arguments from the model, or output it cannot be given: always told.
        return ToolMessage(f"Error: {describe_error(exc)}", call.id, call.name, is_error=True)
    except (ActorFailedError, RunPaused, ReplayDivergenceError):
        # the tool is gone for good, waits for a person, or its replay went astray: the
        # run cannot go on (a divergence told to the model would let it)
        raise
    except Exception as exc:
        if (target.on_error or policy) == "raise":
            raise
        return ToolMessage(f"Error: {describe_error(exc)}", call.id, call.name, is_error=True)
    return ToolMessage(content, call.id, call.name)
