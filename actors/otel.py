"""OpenTelemetry export (the optional extra ``otel``): runs become spans following the
OpenTelemetry GenAI semantic conventions, and model calls feed the GenAI client metrics.

Attach the exporter as a subscriber of a runtime (``open_runtime(callbacks=[exporter])``
or ``await rt.subscribe(exporter)``); it uses the global tracer and meter providers
unless given its own. Importing this module needs ``pip install 'trio-troupe[otel]'``.

- Agent runs are ``invoke_agent {name}`` spans, chat-model runs ``chat {model}`` (CLIENT
  for models reached over HTTP, INTERNAL for the scripted one), tool runs
  ``execute_tool {name}``, other runs INTERNAL spans named after the run. Per-token
  events never become spans; a model span records its time to first token.
- A failed run's span has status ERROR and ``error.type``; a cancelled run's too, with
  ``error.type`` ``cancelled``.
- Message content, tool arguments and results are recorded only when asked for
  (``capture_content=True``, or ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``).
- A run started inside an active span is that span's child, a span of a run started by
  ``troupe serve`` continues the request's ``traceparent``, and requests to model servers
  carry the model span's ``traceparent``.
"""

from __future__ import annotations

import contextvars
import json
import os
from collections.abc import Mapping
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.propagate import inject
from opentelemetry.sdk.trace import Tracer as SDKTracer
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from protocol import AssistantMessage, SerializationError, StreamEvent
from protocol import to_json as protocol_json
from runtime import add_root_metadata_hook

from . import _trace_ids
from ._trace_ids import TRACEPARENT, parse_traceparent, span_id_of, trace_id_of

CAPTURE_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_LOCAL_PROVIDERS: Final = frozenset({"scripted", "troupe"})

_wanted: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "troupe_otel_ids", default=None
)


class _RunIds(IdGenerator):
    """The ids the runs' spans must have (see ``_trace_ids``), else the provider's own."""

    def __init__(self, fallback: IdGenerator) -> None:
        self._fallback = fallback

    def generate_span_id(self) -> int:
        wanted = _wanted.get()
        return wanted[1] if wanted is not None else self._fallback.generate_span_id()

    def generate_trace_id(self) -> int:
        wanted = _wanted.get()
        return wanted[0] if wanted is not None else self._fallback.generate_trace_id()


def _current_traceparent() -> Mapping[str, Any]:
    """The active span's ``traceparent``, for a run started inside it."""
    carrier: dict[str, str] = {}
    if trace.get_current_span().get_span_context().is_valid:
        inject(carrier)
    value = carrier.get(TRACEPARENT)
    return {TRACEPARENT: value} if value else {}


def _capture_default() -> bool:
    return os.environ.get(CAPTURE_ENV, "").strip().lower() in ("1", "true", "yes")


class OpenTelemetryExporter:
    """A subscriber that exports runs as OpenTelemetry spans and GenAI metrics."""

    stream_events: Final = "first"
    """Of the stream events, it needs only each run's first (its time to first token)."""
    batch_events: Final = 64
    """Spans are made from the events' own times, so they can wait to be taken in batches."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        *,
        capture_content: bool | None = None,
    ) -> None:
        if capture_content is not None and not isinstance(capture_content, bool):
            raise TypeError(f"capture_content must be True, False or None, got {capture_content!r}")
        tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("troupe")
        if isinstance(tracer, SDKTracer) and not isinstance(tracer.id_generator, _RunIds):
            tracer.id_generator = _RunIds(tracer.id_generator)
        self._tracer = tracer
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("troupe")
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Tokens used per call"
        )
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="Duration of a call"
        )
        self.capture_content = _capture_default() if capture_content is None else capture_content
        self._spans: dict[str, Any] = {}
        self._contexts: dict[str, otel_context.Context] = {}
        self._first_token: dict[str, float] = {}
        add_root_metadata_hook(_current_traceparent)
        _trace_ids.propagating = True

    async def on_event(self, event: StreamEvent) -> None:
        """Turn one event into span work (subscribers get every event of the runs)."""
        phase = event.phase
        if phase == "start":
            self._start(event)
        elif phase == "stream":
            if event.kind == "chat_model" and event.run_id not in self._first_token:
                self._first_token[event.run_id] = _now()
        elif phase == "custom":
            span = self._spans.get(event.run_id)
            if span is not None:
                span.add_event(event.name, {"troupe.data": _json(event.data.chunk)})
        elif event.status is not None:
            self._end(event)

    # -- spans --------------------------------------------------------------------

    def _start(self, event: StreamEvent) -> None:
        metadata = event.metadata
        root = event.parent_ids[0] if event.parent_ids else event.run_id
        # Each span's context is made once, when it starts, for its children to use.
        parent = self._contexts.get(event.parent_ids[-1]) if event.parent_ids else None
        if parent is None:
            parent = _remote_parent(metadata.get(TRACEPARENT))
        name, kind, attributes = _describe(event, self.capture_content)
        ids = _wanted.set((trace_id_of(root, metadata), span_id_of(event.run_id)))
        try:
            span = self._tracer.start_span(
                name,
                context=parent,
                kind=kind,
                attributes=attributes,
                start_time=int(event.start_time * 1e9),
            )
        finally:
            _wanted.reset(ids)
        self._spans[event.run_id] = span
        if event.kind != "chat_model":  # a model run has no children to parent
            self._contexts[event.run_id] = trace.set_span_in_context(span)

    def _end(self, event: StreamEvent) -> None:
        span = self._spans.pop(event.run_id, None)
        self._contexts.pop(event.run_id, None)
        first = self._first_token.pop(event.run_id, None)
        if span is None:
            return  # it started before this exporter was attached
        end = event.end_time or _now()
        error_type: str | None = None
        attributes: dict[str, Any] = {}  # set at once: each set_attribute takes a lock
        if event.status == "ok":
            self._finish_ok(attributes, event)
        else:
            error_type = "cancelled" if event.status == "cancelled" else _error_type(event)
            span.set_status(Status(StatusCode.ERROR, event.data.error or event.status))
            attributes["error.type"] = error_type
        if event.kind == "chat_model":
            if first is not None:
                attributes["gen_ai.response.time_to_first_chunk"] = first - event.start_time
            self._record_metrics(event, end, error_type)
        if attributes:
            span.set_attributes(attributes)
        span.end(end_time=int(end * 1e9))

    def _finish_ok(self, attributes: dict[str, Any], event: StreamEvent) -> None:
        output = event.data.output
        if event.kind == "chat_model" and isinstance(output, AssistantMessage):
            model = event.metadata.get("ls_model_name")
            if model:
                attributes["gen_ai.response.model"] = model
            if output.finish_reason:
                attributes["gen_ai.response.finish_reasons"] = [output.finish_reason]
            if output.usage is not None:
                attributes["gen_ai.usage.input_tokens"] = output.usage.prompt_tokens
                attributes["gen_ai.usage.output_tokens"] = output.usage.completion_tokens
            if self.capture_content:
                attributes["gen_ai.output.messages"] = _json([output])
        elif event.kind == "tool" and self.capture_content:
            attributes["gen_ai.tool.call.result"] = _json(output)

    def _record_metrics(self, event: StreamEvent, end: float, error_type: str | None) -> None:
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": event.metadata.get("ls_provider", "troupe"),
            "gen_ai.request.model": event.metadata.get("ls_model_name", event.name),
        }
        if error_type is not None:
            attributes["error.type"] = error_type
        self._duration.record(max(0.0, end - event.start_time), attributes)
        output = event.data.output
        if isinstance(output, AssistantMessage) and output.usage is not None:
            usage = output.usage
            for token_type, count in (
                ("input", usage.prompt_tokens),
                ("output", usage.completion_tokens),
            ):
                self._tokens.record(count, {**attributes, "gen_ai.token.type": token_type})


def _describe(event: StreamEvent, capture: bool) -> tuple[str, SpanKind, dict[str, Any]]:
    """A run's span name, kind, and the attributes known at its start (what sampling
    needs is set when the span starts)."""
    metadata = event.metadata
    if event.kind == "chat_model":
        model = metadata.get("ls_model_name", event.name)
        provider = metadata.get("ls_provider", "troupe")
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
        }
        for key in ("temperature", "max_tokens", "top_p", "seed"):
            if f"ls_{key}" in metadata:
                attributes[f"gen_ai.request.{key}"] = metadata[f"ls_{key}"]
        if "ls_server_address" in metadata:
            attributes["server.address"] = metadata["ls_server_address"]
            attributes["server.port"] = metadata["ls_server_port"]
        if capture:
            attributes["gen_ai.input.messages"] = _json(event.data.input.get("messages", []))
        kind = SpanKind.INTERNAL if provider in _LOCAL_PROVIDERS else SpanKind.CLIENT
        return f"chat {model}", kind, attributes
    if event.kind == "tool":
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": event.name,
            "gen_ai.tool.type": "function",
        }
        if "tool_call_id" in metadata:
            attributes["gen_ai.tool.call.id"] = metadata["tool_call_id"]
        if capture:
            attributes["gen_ai.tool.call.arguments"] = _json(event.data.input)
        return f"execute_tool {event.name}", SpanKind.INTERNAL, attributes
    if event.kind == "chain":
        attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": event.name}
        return f"invoke_agent {event.name}", SpanKind.INTERNAL, attributes
    return event.name, SpanKind.INTERNAL, {}


def _remote_parent(traceparent: object) -> otel_context.Context | None:
    parsed = parse_traceparent(traceparent)
    if parsed is None:
        return None
    trace_id, span_id, flags = parsed
    remote = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
    return trace.set_span_in_context(NonRecordingSpan(remote))


def _error_type(event: StreamEvent) -> str:
    text = event.data.error or ""
    name = text.split(":", 1)[0].strip()
    return name if name.isidentifier() else "_OTHER"


def _json(value: Any) -> str:
    """``value`` as JSON through the protocol's converter (its repr if it has none)."""
    try:
        return protocol_json(value)
    except (SerializationError, TypeError, ValueError, RecursionError):
        return json.dumps(repr(value))


def _now() -> float:
    import time

    return time.time()


__all__ = ["CAPTURE_ENV", "OpenTelemetryExporter"]
