"""Troupe's cast: the agent, chat models and tools, built on ``runtime`` and ``protocol``."""

try:
    from runtime import refuse_shadowed as _refuse_shadowed
except ImportError:  # 'runtime' is not Troupe's: a module of the user's hides it
    import runtime as _hiding

    raise ImportError(
        f"{getattr(_hiding, '__file__', _hiding)} hides Troupe's package 'runtime' (Python "
        "finds it first, because it is beside your script or on sys.path): rename that file"
    ) from None

_refuse_shadowed(("protocol", "runtime"))


from ._agent import DEFAULT_MAX_ITERATIONS as DEFAULT_MAX_ITERATIONS
from ._agent import Agent as Agent
from ._callbacks import CALLBACK_METHODS as CALLBACK_METHODS
from ._callbacks import AgentFinish as AgentFinish
from ._callbacks import AsyncCallbackHandler as AsyncCallbackHandler
from ._callbacks import BaseCallbackHandler as BaseCallbackHandler
from ._callbacks import ChatGeneration as ChatGeneration
from ._callbacks import ChatGenerationChunk as ChatGenerationChunk
from ._callbacks import LLMResult as LLMResult
from ._chat_model import ChatModel as ChatModel
from ._chat_model import ChunkSink as ChunkSink
from ._errors import GuardrailTrippedError as GuardrailTrippedError
from ._errors import HandoffError as HandoffError
from ._errors import ModelError as ModelError
from ._errors import OutputTypeError as OutputTypeError
from ._errors import OutputValidationError as OutputValidationError
from ._errors import RunFailedError as RunFailedError
from ._errors import ToolArgumentsError as ToolArgumentsError
from ._errors import ToolDefinitionError as ToolDefinitionError
from ._errors import ToolError as ToolError
from ._errors import ToolOutputError as ToolOutputError
from ._errors import ToolTimeoutError as ToolTimeoutError
from ._guardrails import Guardrail as Guardrail
from ._guardrails import GuardrailResult as GuardrailResult
from ._guardrails import input_guardrail as input_guardrail
from ._guardrails import output_guardrail as output_guardrail
from ._guardrails import tool_guardrail as tool_guardrail
from ._handoff import DEFAULT_MAX_HANDOFFS as DEFAULT_MAX_HANDOFFS
from ._handoff import HANDOFF_FROM as HANDOFF_FROM
from ._handoff import Handoff as Handoff
from ._handoff import HistoryFilter as HistoryFilter
from ._handoff import handoff as handoff
from ._handoff import without_tool_calls as without_tool_calls
from ._openai import OpenAIChatModel as OpenAIChatModel
from ._output import DEFAULT_OUTPUT_RETRIES as DEFAULT_OUTPUT_RETRIES
from ._scripted import ScriptedCall as ScriptedCall
from ._scripted import ScriptedChatModel as ScriptedChatModel
from ._scripted import ScriptedTurn as ScriptedTurn
from ._scripted import tokenize as tokenize
from ._tool import ErrorPolicy as ErrorPolicy
from ._tool import Tool as Tool
from ._tool import ToolDecorator as ToolDecorator
from ._tool import render_output as render_output
from ._tool import tool as tool

__all__ = [
    # agent
    "DEFAULT_MAX_ITERATIONS",
    "Agent",
    # composing agents: structured output, handoffs, guardrails
    "DEFAULT_OUTPUT_RETRIES",
    "DEFAULT_MAX_HANDOFFS",
    "HANDOFF_FROM",
    "Handoff",
    "HistoryFilter",
    "handoff",
    "without_tool_calls",
    "Guardrail",
    "GuardrailResult",
    "input_guardrail",
    "output_guardrail",
    "tool_guardrail",
    # chat models
    "ChatModel",
    "ChunkSink",
    "OpenAIChatModel",
    "ScriptedCall",
    "ScriptedChatModel",
    "ScriptedTurn",
    "tokenize",
    # callbacks
    "CALLBACK_METHODS",
    "AgentFinish",
    "AsyncCallbackHandler",
    "BaseCallbackHandler",
    "ChatGeneration",
    "ChatGenerationChunk",
    "LLMResult",
    # tools
    "ErrorPolicy",
    "Tool",
    "ToolDecorator",
    "render_output",
    "tool",
    # errors
    "GuardrailTrippedError",
    "HandoffError",
    "OutputTypeError",
    "OutputValidationError",
    "ModelError",
    "RunFailedError",
    "ToolArgumentsError",
    "ToolDefinitionError",
    "ToolError",
    "ToolOutputError",
    "ToolTimeoutError",
]
