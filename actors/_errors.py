"""Errors of tools and models. Each ends its run with an error event."""

from __future__ import annotations

from runtime import TroupeError


class ToolError(TroupeError):
    """A tool could not do what it was asked."""


class ToolArgumentsError(ToolError):
    """A tool was called with arguments that do not fit its schema."""


class ToolTimeoutError(ToolError):
    """A tool did not finish within its timeout."""


class ToolOutputError(ToolError):
    """A tool returned something that cannot be given to the model as text."""


class ToolDefinitionError(TypeError):
    """A function cannot be made into a tool (missing type hint, docstring, ...)."""


class ModelError(TroupeError):
    """A chat model failed to produce a turn."""


class RunFailedError(TroupeError):
    """Given to ``on_*_error`` callbacks: a run ended with an error or was cancelled.

    Attributes:
        status: ``"error"`` or ``"cancelled"``.
    """

    def __init__(self, message: str, *, status: str = "error") -> None:
        super().__init__(message)
        self.status = status


class OutputTypeError(TypeError):
    """An agent's ``output_type`` cannot be turned into a JSON schema."""


class OutputValidationError(TroupeError):
    """The model gave no answer that fits the agent's ``output_type``, however often it
    was told what was wrong.

    Attributes:
        answer: the model's last answer.
    """

    def __init__(self, message: str, *, answer: str = "") -> None:
        super().__init__(message)
        self.answer = answer


class HandoffError(TroupeError):
    """A handoff could not happen: its target is not an agent, or the conversation was
    handed on more often than the agent's ``max_handoffs``."""


class GuardrailTrippedError(TroupeError):
    """A guardrail stopped the run (its tripwire fired, or it raised: guardrails fail
    closed).

    Attributes:
        guardrail: the guardrail's name.
        stage: ``"input"``, ``"output"`` or ``"tool"``.
        reason: why, in the guardrail's words.
    """

    def __init__(self, guardrail: str, stage: str, reason: str) -> None:
        super().__init__(f"{stage} guardrail {guardrail!r} tripped: {reason}")
        self.guardrail = guardrail
        self.stage = stage
        self.reason = reason
