"""The agent: OpenAI's tool-calling loop, each tool call a request to a tool actor."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Unpack, final

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
    positive_int,
)

if TYPE_CHECKING:
    from protocol import StepChunk
    from runtime import ChunkStream, RunConfig, StreamOptions

from ._errors import (
    HandoffError,
    OutputValidationError,
    ToolArgumentsError,
    ToolDefinitionError,
    ToolOutputError,
)
from ._fields import metadata_dict, run_name, tag_tuple
from ._guardrails import STAGES, Guardrail, beside_input, guardrail_tuple, judge_all
from ._handoff import DEFAULT_MAX_HANDOFFS, HANDOFF_FROM, Handoff, handoff_tuple, next_request
from ._output import DEFAULT_OUTPUT_RETRIES, OutputSpec, output_spec
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


def tool_specs(value: Any, what: str = "client_tools") -> tuple[ToolSpec, ...]:
    """Tools a caller carries out itself, as :class:`~protocol.ToolSpec` s: each a
    ``ToolSpec`` or a ``{"name", "description", "parameters"}`` dict (a JSON schema;
    ``{"type": "object"}`` if left out). Names are unique.

    Raises:
        TypeError: ``value`` is not a list of such specs, or a name repeats (``what``
            names the field).
    """
    if not isinstance(value, list | tuple):
        raise TypeError(f"{what!r} must be a list, got {value!r:.80}")
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
                f"{what}[{index}] must be a tool spec "
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
    names = [spec.name for spec in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise TypeError(f"{what}: tool names must be unique, repeated: {repeated}")
    return tuple(specs)


def _declared_client_tools(value: Any) -> tuple[ToolSpec, ...]:
    return tool_specs(value, "client_tools")


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

    Composition: ``output_type`` (an attrs class, a TypedDict or a JSON schema) asks
    the model for a structured answer and validates it (an invalid one is told to the
    model, at most ``output_retries`` times, then :class:`OutputValidationError`);
    ``handoffs`` are agents the model may hand the conversation to (each a tool
    ``transfer_to_<name>``; at most ``max_handoffs`` in a row); ``guardrails`` check
    the input, the answer and each tool call; :meth:`as_tool` makes the agent a tool
    of another agent. See ``docs/agents.md``.

    ``client_tools`` are tools the caller carries out itself (a browser's, say: the
    AI SDK's tools without ``execute``): specs with no body, offered to the model
    beside the agent's own. A call of one ends the run (``finish_reason``
    ``"client_tool_calls"``) without a result made up; the caller's next request
    brings the result as a tool message and the conversation goes on. A request's
    own ``tools`` (AG-UI's frontend tools) join them, and replace a declared one of
    the same name.
    """

    model: Runnable[Any]
    tools: tuple[Tool[Any], ...] = field(default=(), converter=_tools)
    name: str = field(default="Agent", converter=run_name)
    max_iterations: int | None = DEFAULT_MAX_ITERATIONS
    system_prompt: str | None = None
    tool_errors: ErrorPolicy = "tell"
    tags: tuple[str, ...] = field(default=(), converter=tag_tuple)
    metadata: dict[str, Any] = field(factory=dict, converter=metadata_dict)
    output_type: Any = None
    output_retries: int = DEFAULT_OUTPUT_RETRIES
    handoffs: tuple[Handoff, ...] = field(default=(), converter=handoff_tuple)
    max_handoffs: int = DEFAULT_MAX_HANDOFFS
    guardrails: tuple[Guardrail, ...] = field(default=(), converter=guardrail_tuple)
    client_tools: tuple[ToolSpec, ...] = field(default=(), converter=_declared_client_tools)
    _output: OutputSpec | None = field(init=False, repr=False)
    # What every run of the agent uses, made once (thousands of runs may be open at
    # once, and each would hold its own copies): the tools and handoffs by name, the
    # specs of both, and the guardrails of each stage.
    _tool_map: dict[str, Tool[Any]] = field(init=False, repr=False)
    _handoff_map: dict[str, Handoff] = field(init=False, repr=False)
    _own_specs: tuple[ToolSpec, ...] = field(init=False, repr=False)
    _guards: dict[str, tuple[Guardrail, ...]] = field(init=False, repr=False)
    _approving: list[str] = field(init=False, repr=False)  # tools that need a person

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.model, Runnable) or self.model.bind()[0].run_kind != "chat_model":
            raise TypeError(f"model must be a chat model, got {self.model!r}")
        positive_int(self.max_iterations, "max_iterations", optional=True)
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise TypeError(f"system_prompt must be a string or None, got {self.system_prompt!r}")
        if self.tool_errors not in ("tell", "raise"):
            raise ValueError(f"tool_errors must be 'tell' or 'raise', got {self.tool_errors!r}")
        for what in ("output_retries", "max_handoffs"):
            value = getattr(self, what)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{what} must be an integer >= 0, got {value!r}")
        clash = sorted({h.tool_name for h in self.handoffs} & {t.name for t in self.tools})
        if clash:
            raise ValueError(f"handoff tool names clash with tools: {clash}")
        own = {h.tool_name for h in self.handoffs} | {t.name for t in self.tools}
        clash = sorted(spec.name for spec in self.client_tools if spec.name in own)
        if clash:
            raise ValueError(f"client tool names clash with the agent's own tools: {clash}")
        spec = None if self.output_type is None else output_spec(self.output_type)
        object.__setattr__(self, "_output", spec)
        object.__setattr__(self, "_tool_map", {t.name: t for t in self.tools})
        object.__setattr__(self, "_handoff_map", {h.tool_name: h for h in self.handoffs})
        specs = (*(t.spec for t in self.tools), *(h.spec for h in self.handoffs))
        object.__setattr__(self, "_own_specs", specs)
        guards = {stage: tuple(g for g in self.guardrails if g.stage == stage) for stage in STAGES}
        object.__setattr__(self, "_guards", guards)
        object.__setattr__(self, "_approving", [t.name for t in self.tools if t.needs_approval])

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
        try:
            return tool_specs(value, "tools")
        except TypeError as exc:
            raise TypeError(f"agent {self.name!r}: {exc}") from None

    def _checked(self, request: AgentRequest) -> AgentRequest:
        if not request.client_tools:  # (the common request: no sets made per run)
            return request
        own = {t.name for t in self.tools} | {h.tool_name for h in self.handoffs}
        clashes = sorted(spec.name for spec in request.client_tools if spec.name in own)
        if clashes:
            raise TypeError(
                f"agent {self.name!r}: the caller's tools {clashes} have the names of the "
                "agent's own tools"
            )
        return request

    def offered_client_tools(self, message: AgentRequest) -> tuple[ToolSpec, ...]:
        """The tools the caller carries out, as the model is offered them: the agent's
        declared ``client_tools``, each replaced by the caller's tool of its name if
        the request brings one, then the request's others."""
        if not message.client_tools:
            return self.client_tools
        theirs = {spec.name for spec in message.client_tools}
        kept = tuple(spec for spec in self.client_tools if spec.name not in theirs)
        return (*kept, *message.client_tools)

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
        return attrs.evolve(message, chat_history=(*earlier, *message.chat_history))

    def conversation(self, message: AgentRequest, output: Any) -> Sequence[Any]:
        """The run's messages, its system prompt left out (a thread keeps what was said,
        not how the agent was told to behave)."""
        if not isinstance(output, AgentOutput):
            raise TypeError(f"agent {self.name!r} ended with {type(output).__name__}")
        messages = output.messages
        if self.system_prompt and messages and isinstance(messages[0], SystemMessage):
            messages = messages[1:]
        return messages

    def local_metadata(self, message: AgentRequest) -> dict[str, Any]:
        """``handoff_from``: the agent that handed this run the conversation, if one
        did (edges say by it which agent speaks)."""
        if message.handoffs:
            return {HANDOFF_FROM: message.handoffs[-1]}
        return {}

    def event_output(self, output: AgentOutput) -> Any:
        """The output, its structured answer as JSON data (events leave the process)."""
        if output.structured is None or self._output is None:
            return output
        return attrs.evolve(output, structured=self._output.json_ready(output.structured))

    def as_tool(
        self,
        name: str | None = None,
        description: str | None = None,
        *,
        output: Callable[[AgentOutput], Any] | None = None,
        timeout: float | None = None,
    ) -> Tool[Any]:
        """This agent as a tool of another agent: the model calls it with ``input``
        (a question), this agent's run is a child of the tool's run (its tokens and
        tool calls stream as events of that subtree; tags and metadata inherit), and
        the calling model reads its final answer: the text, the structured answer as
        JSON with an ``output_type``, or what ``output`` makes of the
        :class:`~protocol.AgentOutput`.

        Raises:
            ToolDefinitionError: ``name`` is not an identifier.
        """
        agent = self
        spec = self._output

        async def call(input: str) -> Any:
            result: AgentOutput = await agent.ainvoke(input)
            if output is not None:
                return output(result)
            if spec is not None and result.structured is not None:
                return spec.json_ready(result.structured)
            return result.output

        tool_name = name or _identifier(self.name)
        if not tool_name.isidentifier():
            raise ToolDefinitionError(f"tool name must be an identifier, got {tool_name!r}")
        return Tool(
            name=tool_name,
            description=description or f"Ask the agent {self.name!r}; it answers in full.",
            parameters={
                "type": "object",
                "properties": {
                    "input": {"type": "string", "description": "What to ask the agent."}
                },
                "required": ["input"],
                "additionalProperties": False,
            },
            fn=call,
            timeout=timeout,
        )

    async def perform(self, message: AgentRequest, run: Run) -> AgentOutput:
        if self._approving and run.runtime.journal is None:
            raise NoStoreError(
                f"agent {self.name!r}: tools {self._approving} need a person's approval, and a run "
                "that waits for one must outlive its process: open the runtime with a "
                "store (open_runtime(store='sqlite:///runs.db'), troupe serve --store)"
            )
        message = self._checked(message)
        offered = self.offered_client_tools(message)
        specs = (*self._own_specs, *offered) if offered else self._own_specs
        theirs = frozenset(spec.name for spec in offered) if offered else _NONE
        asked = message.input or ""
        shape = self._output
        conversation: list[ChatMessage] = []
        prompt = self.system_prompt
        if shape is not None and not _native_format(self.model):
            prompt = f"{prompt}\n\n{shape.instructions()}" if prompt else shape.instructions()
        if prompt:
            conversation.append(SystemMessage(prompt))
        conversation.extend(message.chat_history)
        if message.input is not None:
            conversation.append(UserMessage(message.input))
        guards = self._guards
        # the conversation goes on (no input): no new input to judge
        input_guards = guards["input"] if message.input is not None else ()
        fmt = shape.response_format if shape is not None else None
        usage: Usage | None = None
        decided: set[str] = set()
        retries = self.output_retries
        limit = self.max_iterations
        turns = itertools.count(1) if limit is None else range(1, limit + 1)
        for iteration in turns:
            request = ChatRequest(tuple(conversation), specs, fmt)
            if iteration == 1 and input_guards:
                reply: AssistantMessage = await beside_input(
                    run, input_guards, message, partial(run.request, self.model, request)
                )
            else:
                reply = await run.request(self.model, request)
            conversation.append(reply)
            usage = _add_usage(usage, reply.usage)
            if not reply.tool_calls and not reply.invalid_tool_calls:
                structured = None
                if shape is not None:
                    try:
                        structured = shape.parse(reply.content)
                    except ValueError as exc:
                        if retries == 0:
                            raise OutputValidationError(
                                f"agent {self.name!r} got no answer that fits its output type "
                                f"after {self.output_retries + 1} tries: {exc}",
                                answer=reply.content,
                            ) from None
                        retries -= 1
                        conversation.append(UserMessage(_retry_prompt(exc)))
                        continue
                await judge_all(
                    run, guards["output"], reply.content if structured is None else structured
                )
                await run.emit(FinishChunk(reply.content, (reply,), "stop"))
                return AgentOutput(
                    asked,
                    reply.content,
                    "stop",
                    iteration,
                    conversation,
                    usage,
                    structured,
                )
            ended = await self._tool_turn(
                run, reply, theirs, decided, message, conversation, usage, iteration
            )
            if ended is not None:
                return ended
        assert limit is not None  # only a limited loop ends here
        output = (
            f"Agent stopped after {limit} model turns "
            f"(max_iterations={limit}) without a final answer."
        )
        await run.emit(FinishChunk(output, (), "max_iterations"))
        return AgentOutput(asked, output, "max_iterations", limit, conversation, usage)

    async def _tool_turn(
        self,
        run: Run,
        reply: AssistantMessage,
        theirs: frozenset[str],
        decided: set[str],
        message: AgentRequest,
        conversation: list[ChatMessage],
        usage: Usage | None,
        iteration: int,
    ) -> AgentOutput | None:
        """Carry out the tool calls of the model's ``reply`` and add their results to
        ``conversation``; the run's output if the turn ends it (the caller's tools were
        called, or a handoff made), else ``None``. (A method of its own: what a turn
        makes is freed before the next model turn, which a run may wait on long.)"""
        calls: tuple[ToolCall | InvalidToolCall, ...] = (
            *reply.tool_calls,
            *reply.invalid_tool_calls,
        )
        actions = [_action(call) for call in calls]
        await run.emit(ActionsChunk(tuple(actions), (reply,)))
        for_them = _calling(reply.tool_calls, theirs) if theirs else False
        ours = reply
        if for_them:  # the caller's tools: ours run now, theirs end the run
            ours, actions = _ours_only(reply, actions, theirs)
        # A handoff is made unless the turn also calls the caller's tools: those end
        # the run first (the caller must answer them).
        handoffs = self._handoff_map
        chosen = None if for_them or not handoffs else _first_handoff(ours, handoffs)
        results = (
            await self._call_tools(run, self._tool_map, ours, decided, self._guards["tool"], chosen)
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
            return AgentOutput(
                message.input or "", "", "client_tool_calls", iteration, conversation, usage
            )
        if chosen is not None:
            return await self._hand_on(run, chosen, message, conversation, usage, iteration)
        return None

    async def _hand_on(
        self,
        run: Run,
        chosen: Handoff,
        message: AgentRequest,
        conversation: list[ChatMessage],
        usage: Usage | None,
        iteration: int,
    ) -> AgentOutput:
        """Hand the conversation to ``chosen``'s agent, as a child run; its answer is
        this run's."""
        target = chosen.resolve()
        if not isinstance(target, Agent):
            raise HandoffError(
                f"handoff {chosen.tool_name!r} of agent {self.name!r} leads to "
                f"{target!r:.80}, which is not an Agent"
            )
        request = next_request(chosen, message, self.name, self.max_handoffs)
        result: AgentOutput = await run.request(target, request)
        await run.emit(FinishChunk(result.output, result.messages[-1:], result.finish_reason))
        return AgentOutput(
            message.input or "",
            result.output,
            result.finish_reason,
            iteration + result.iterations,
            (*conversation, *_after_question(result.messages, request)),
            _add_usage(usage, result.usage),
            result.structured,
        )

    async def _call_tools(
        self,
        run: Run,
        tools: Mapping[str, Tool[Any]],
        reply: AssistantMessage,
        decided: set[str],
        guards: Sequence[Guardrail] = (),
        chosen: Handoff | None = None,
    ) -> list[ToolMessage]:
        calls: tuple[ToolCall | InvalidToolCall, ...] = (
            *reply.tool_calls,
            *reply.invalid_tool_calls,
        )
        turn = _ToolCalls(run, tools, calls, self.tool_errors, decided, guards)
        handoffs = self._handoff_map
        if handoffs:
            turn.handoffs = handoffs
            turn.chosen = chosen
            turn.first = _first_call_of(calls, handoffs)
        if len(calls) == 1:
            await turn.call(0, None)
        else:
            async with trio.open_nursery() as nursery:
                for index in range(len(calls)):
                    nursery.start_soon(turn.call, index, nursery.cancel_scope)
        if turn.fatal:
            raise turn.fatal[0]  # the tool's own exception, not an ExceptionGroup
        if turn.pending:
            raise RunPaused(turn.pending)  # the run ends, paused, once the other calls are done
        return [r for r in turn.results if r is not None]


@final
class _ToolCalls:
    """The tool calls of one model turn, made concurrently: what they share. (An
    object, not a closure: a closure's variables are a cell each, and thousands of
    runs may be calling tools at once.)"""

    __slots__ = (
        "calls",
        "chosen",
        "decided",
        "fatal",
        "first",
        "guards",
        "handoffs",
        "pending",
        "policy",
        "results",
        "run",
        "tools",
    )

    def __init__(
        self,
        run: Run,
        tools: Mapping[str, Tool[Any]],
        calls: Sequence[ToolCall | InvalidToolCall],
        policy: ErrorPolicy,
        decided: set[str],
        guards: Sequence[Guardrail],
    ) -> None:
        self.run = run
        self.tools = tools
        self.calls = calls
        self.policy = policy
        self.decided = decided
        self.guards = guards
        self.results: list[ToolMessage | None] = [None] * len(calls)
        self.fatal: list[Exception] = []
        self.pending: list[PendingRequest] = []
        self.handoffs: Mapping[str, Handoff] = _NO_HANDOFFS
        self.chosen: Handoff | None = None
        self.first: ToolCall | InvalidToolCall | None = None

    async def call(self, index: int, scope: trio.CancelScope | None) -> None:
        """Make call ``index``; its result goes to ``results[index]``. A tool that
        raises (policy ``"raise"``) cancels ``scope``, stopping the sibling calls."""
        call = self.calls[index]
        run = self.run
        try:
            if call.name in self.handoffs and isinstance(call, ToolCall):
                self.results[index] = _handoff_message(call, self.chosen, call is self.first)
                return
            if self.guards and isinstance(call, ToolCall) and call.name in self.tools:
                await judge_all(run, self.guards, call)
            self.results[index] = await _call_tool(
                run, self.tools, call, self.policy, self.decided, self.handoffs
            )
        except RunPaused as paused:  # the call waits for a person; the others go on
            self.pending.extend(paused.pending)
        except Exception as exc:  # a tool whose policy is "raise"
            self.fatal.append(exc)
            if scope is not None:
                scope.cancel()  # the run fails: stop the sibling calls


def _first_call_of(
    calls: Sequence[ToolCall | InvalidToolCall], names: Mapping[str, Any]
) -> ToolCall | InvalidToolCall | None:
    """The first of ``calls`` that calls one of ``names``, if any."""
    return next((c for c in calls if c.name in names), None)


_NONE: Final[frozenset[str]] = frozenset()
_NO_HANDOFFS: Final[Mapping[str, Handoff]] = MappingProxyType({})


# Helpers of Agent.perform, as functions: a comprehension inside perform would keep its
# variables in cells for as long as the run is open.
def _calling(calls: Sequence[ToolCall], names: frozenset[str]) -> bool:
    """Whether any of ``calls`` calls one of ``names``."""
    return any(call.name in names for call in calls)


def _ours_only(
    reply: AssistantMessage, actions: list[AgentAction], theirs: frozenset[str]
) -> tuple[AssistantMessage, list[AgentAction]]:
    """``reply`` and ``actions`` without the calls of the caller's tools ``theirs``."""
    kept = tuple(c for c in reply.tool_calls if c.name not in theirs)
    ours = attrs.evolve(reply, tool_calls=kept)
    return ours, [a for a in actions if a.tool not in theirs]


def _first_handoff(reply: AssistantMessage, handoffs: Mapping[str, Handoff]) -> Handoff | None:
    """The handoff of the first call of ``reply`` that makes one, if any."""
    return next((handoffs[c.name] for c in reply.tool_calls if c.name in handoffs), None)


def _native_format(model: Runnable[Any]) -> bool:
    """Whether the model is asked for a JSON shape natively (else by prompt)."""
    return bool(getattr(model.bind()[0], "native_response_format", False))


def _retry_prompt(problem: ValueError) -> str:
    return (
        f"Error: {problem}. Answer again, with only a JSON value that fits the schema "
        "you were given."
    )


def _handoff_message(call: ToolCall, chosen: Handoff | None, first: bool) -> ToolMessage:
    if first and chosen is not None:
        return ToolMessage(f"Transferred: {chosen.tool_name}.", call.id, call.name)
    return ToolMessage(
        "Error: this handoff was not made (only a turn's first handoff is, and none in a "
        "turn that also calls the caller's tools).",
        call.id,
        call.name,
        is_error=True,
    )


def _after_question(
    messages: Sequence[ChatMessage], request: AgentRequest
) -> Sequence[ChatMessage]:
    """What an agent added to a conversation: its messages after its system prompt,
    the history it was given and the question (if it was asked one)."""
    start = next((i for i, m in enumerate(messages) if not isinstance(m, SystemMessage)), 0)
    given = len(request.chat_history) + (request.input is not None)
    return messages[start + given :]


def _identifier(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_") or "agent"


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
    handoffs: Iterable[str] = (),
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
        known = ", ".join(sorted([*tools, *handoffs])) or "none"
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
