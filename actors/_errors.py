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
