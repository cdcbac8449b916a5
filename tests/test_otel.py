"""OpenTelemetry export: the span tree and every attribute, checked with the SDK's own
in-memory exporter and metric reader; and end to end over real OTLP/HTTP to a receiver
on 127.0.0.1 that decodes the protobuf with OpenTelemetry's own proto package."""

from __future__ import annotations

import functools
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any

import h11
import pytest
import trio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from actors import Agent, ModelError, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from actors._demo import make_cat_agent
from actors.otel import OpenTelemetryExporter
from runtime import open_runtime

from .openai_server import fake_openai, text_answer
from .sse_client import read_sse, serving
from .test_openai import model_for


@contextmanager
def exported(capture: bool = False) -> Iterator[tuple[OpenTelemetryExporter, Any, Any]]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    yield OpenTelemetryExporter(provider, meters, capture_content=capture), spans, reader


def attrs_of(span: ReadableSpan) -> dict[str, Any]:
    """A span's attributes, as a plain dict."""
    return dict(span.attributes or {})


def by_name(spans: Any) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans.get_finished_spans()}


def parent_of(span: ReadableSpan, spans: Any) -> ReadableSpan | None:
    for other in spans.get_finished_spans():
        if span.parent is not None and other.context.span_id == span.parent.span_id:
            return other  # type: ignore[no-any-return]  # the SDK's own span
    return None


async def run(agent: Any, exporter: OpenTelemetryExporter, question: Any = "?") -> None:
    async with open_runtime(callbacks=[exporter]):
        with suppress(ModelError):  # a failed run's spans are what some tests look at
            await agent.ainvoke(question)


async def test_the_cat_agent_becomes_a_tree_of_genai_spans() -> None:
    with exported() as (exporter, spans, reader):
        await run(make_cat_agent(random.Random(1), nested=True), exporter)
    named = by_name(spans)
    agent = named["invoke_agent Agent"]
    assert agent.kind == SpanKind.INTERNAL and agent.parent is None
    assert agent.attributes is not None
    assert attrs_of(agent)["gen_ai.operation.name"] == "invoke_agent"
    assert attrs_of(agent)["gen_ai.agent.name"] == "Agent"
    tools = [s for s in spans.get_finished_spans() if s.name.startswith("execute_tool")]
    assert {s.attributes["gen_ai.tool.name"] for s in tools} == {"where_cat_is_hiding", "get_items"}
    for span in tools:
        assert attrs_of(span)["gen_ai.tool.call.id"].startswith("call_")
        assert parent_of(span, spans) is agent
    chats = [s for s in spans.get_finished_spans() if s.name.startswith("chat ")]
    assert len(chats) == 4
    inside = [c for c in chats if parent_of(c, spans) is named["execute_tool get_items"]]
    assert len(inside) == 1  # the model called inside the tool is the tool's child
    for chat in chats:
        attributes = chat.attributes
        model = chat.name.removeprefix("chat ")
        assert chat.kind == SpanKind.INTERNAL  # the scripted model is not a remote call
        assert attributes["gen_ai.provider.name"] == "scripted"
        assert attributes["gen_ai.request.model"] == attributes["gen_ai.response.model"] == model
        assert attributes["gen_ai.usage.input_tokens"] > 0
        assert attributes["gen_ai.response.finish_reasons"] in (("tool_calls",), ("stop",))
        assert attributes["gen_ai.response.time_to_first_chunk"] >= 0
        assert "gen_ai.input.messages" not in attributes  # content is off by default
    assert len({s.context.trace_id for s in spans.get_finished_spans()}) == 1
    assert not [e for s in chats for e in s.events]  # tokens never become spans or events
    metrics = {
        m.name: m
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    usage = metrics["gen_ai.client.token.usage"].data.data_points
    assert {p.attributes["gen_ai.token.type"] for p in usage} == {"input", "output"}
    durations = metrics["gen_ai.client.operation.duration"].data.data_points
    assert sum(p.count for p in durations) == 4  # four model calls


async def test_content_is_captured_only_when_asked() -> None:
    with exported(capture=True) as (exporter, spans, _):
        await run(make_cat_agent(random.Random(1)), exporter, "where is the cat?")
    named = by_name(spans)
    chats = [attrs_of(s) for s in spans.get_finished_spans() if s.name.startswith("chat")]
    assert all("where is the cat" in c["gen_ai.input.messages"] for c in chats)
    assert any("The cat is" in c["gen_ai.output.messages"] for c in chats)
    assert attrs_of(named["execute_tool get_items"])["gen_ai.tool.call.arguments"]
    assert "socks" in attrs_of(named["execute_tool get_items"])["gen_ai.tool.call.result"]


@tool
async def explode() -> str:
    """Always fails."""
    raise RuntimeError("kaboom")


@tool
async def calm() -> str:
    """Answers."""
    return "fine"


async def test_parallel_tools_and_a_tool_error() -> None:
    model = ScriptedChatModel(
        [
            ScriptedTurn(tool_calls=[ScriptedCall("explode"), ScriptedCall("calm")]),
            ScriptedTurn("done"),
        ]
    )
    with exported() as (exporter, spans, _):
        await run(Agent(model, [explode, calm]), exporter)
    named = by_name(spans)
    failed = named["execute_tool explode"]
    assert failed.status.status_code == StatusCode.ERROR
    assert attrs_of(failed)["error.type"] == "RuntimeError"
    assert named["execute_tool calm"].status.status_code == StatusCode.UNSET
    agent = named["invoke_agent Agent"]
    assert (
        parent_of(failed, spans) is agent and parent_of(named["execute_tool calm"], spans) is agent
    )
    assert agent.status.status_code == StatusCode.UNSET  # the model was told; the run went on


async def test_a_model_error_and_a_cancelled_run() -> None:
    broken = Agent(ScriptedChatModel([ScriptedTurn("half", error="fell over")]))
    with exported() as (exporter, spans, _):
        await run(broken, exporter)
    named = by_name(spans)
    assert attrs_of(named["chat ScriptedChatModel"])["error.type"] == "ModelError"
    assert named["invoke_agent Agent"].status.status_code == StatusCode.ERROR

    slow = Agent(ScriptedChatModel([ScriptedTurn("a b c d e f")], token_delay=0.05))
    with exported() as (exporter, spans, _):
        async with open_runtime(callbacks=[exporter]):
            with trio.move_on_after(0.08):
                await slow.ainvoke("?")
    for span in spans.get_finished_spans():
        assert span.status.status_code == StatusCode.ERROR
        assert attrs_of(span)["error.type"] == "cancelled"


async def test_a_run_inside_an_active_span_is_its_child() -> None:
    with exported() as (exporter, spans, _):
        outer_tracer = exporter._tracer  # the same provider
        with outer_tracer.start_as_current_span("request") as request:
            await run(Agent(ScriptedChatModel([ScriptedTurn("hi")])), exporter)
    agent = by_name(spans)["invoke_agent Agent"]
    assert agent.parent is not None and agent.parent.span_id == request.get_span_context().span_id
    assert agent.context.trace_id == request.get_span_context().trace_id


async def test_requests_to_model_servers_carry_the_model_spans_traceparent() -> None:
    with exported() as (exporter, spans, _):
        async with fake_openai(text_answer(["hi"])) as server:
            await run(Agent(model_for(server.base_url, temperature=0.3)), exporter)
    chat = by_name(spans)["chat test-model"]
    assert chat.kind == SpanKind.CLIENT
    attributes = attrs_of(chat)
    assert (attributes["server.address"], attributes["server.port"]) == ("127.0.0.1", server.port)
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.temperature"] == 0.3
    header = server.requests[0].headers["traceparent"]
    _, trace_id, span_id, _ = header.split("-")
    assert int(trace_id, 16) == chat.context.trace_id and int(span_id, 16) == chat.context.span_id


async def test_troupe_serve_continues_an_incoming_traceparent() -> None:
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with exported() as (exporter, spans, _):
        async with (
            open_runtime(callbacks=[exporter]) as rt,
            serving(make_cat_agent(random.Random(1)), runtime=rt) as served,
            served.client.stream(
                "POST", "/runs/stream", json={"input": "?"}, headers={"traceparent": incoming}
            ) as response,
        ):
            await read_sse(response)
    agent = by_name(spans)["invoke_agent Agent"]
    assert f"{agent.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert agent.parent is not None and f"{agent.parent.span_id:016x}" == "b7ad6b7169203331"


def test_bad_settings_fail_clearly() -> None:
    with pytest.raises(TypeError, match="capture_content"):
        OpenTelemetryExporter(capture_content="yes")  # type: ignore[arg-type]  # on purpose


# -- end to end over OTLP/HTTP -----------------------------------------------------------


@asynccontextmanager
async def otlp_receiver() -> AsyncIterator[tuple[str, list[ExportTraceServiceRequest]]]:
    """An OTLP/HTTP trace receiver on 127.0.0.1 (h11), decoding with OpenTelemetry's proto."""
    received: list[ExportTraceServiceRequest] = []

    async def handle(stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER)
        body = b""
        async with stream:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(1 << 16)
                    if not data:
                        return
                    connection.receive_data(data)
                elif isinstance(event, h11.Data):
                    body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    received.append(request)
                    headers = [("content-type", "application/x-protobuf"), ("content-length", "0")]
                    await stream.send_all(
                        connection.send(h11.Response(status_code=200, headers=headers))
                    )
                    await stream.send_all(connection.send(h11.EndOfMessage()))
                    connection.start_next_cycle()
                    body = b""
                elif isinstance(event, h11.ConnectionClosed):
                    return

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        yield f"http://127.0.0.1:{port}/v1/traces", received
        nursery.cancel_scope.cancel()


async def test_spans_reach_an_otlp_receiver_over_http() -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    async with otlp_receiver() as (endpoint, received):
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        exporter = OpenTelemetryExporter(provider)
        await run(make_cat_agent(random.Random(1), nested=True), exporter)
        await trio.to_thread.run_sync(provider.force_flush)
        await trio.to_thread.run_sync(provider.shutdown)
    spans = [
        span
        for request in received
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    names = sorted(span.name for span in spans if not span.name.startswith("chat "))
    assert names == [
        "execute_tool get_items",
        "execute_tool where_cat_is_hiding",
        "invoke_agent Agent",
    ]
    assert sum(span.name.startswith("chat ") for span in spans) == 4
    ids = {span.span_id: span for span in spans}
    root = next(span for span in spans if span.name == "invoke_agent Agent")
    tool_span = next(span for span in spans if span.name == "execute_tool get_items")
    nested = next(span for span in spans if span.parent_span_id == tool_span.span_id)
    assert nested.name.startswith("chat ")
    assert ids[ids[nested.parent_span_id].parent_span_id] is root and not root.parent_span_id
    attributes = {a.key: a.value for a in nested.attributes}
    assert attributes["gen_ai.operation.name"].string_value == "chat"


async def test_the_demo_exports_to_the_console() -> None:
    from .test_demo import TROUPE

    done = await trio.run_process(
        [*TROUPE, "demo", "--otel"], capture_stdout=True, capture_stderr=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"Done agent: Agent" in done.stdout
    spans = done.stderr.decode()
    assert '"name": "invoke_agent Agent"' in spans and '"name": "execute_tool get_items"' in spans
