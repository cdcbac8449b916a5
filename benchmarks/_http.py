"""The HTTP edge: what encoding costs, and what a server process sustains.

- **Encoding**: µs to turn one token event into its SSE frame, per wire protocol.
- **Histories**: ms to turn a frontend's 200-message conversation (AG-UI messages, AI
  SDK UIMessages: questions, tool calls and their results, answers) into the agent's
  request, beside the floor every request pays anyway: parsing the body's JSON, in
  the same rounds. Target: at most 2 ms.
- **Streams**: N concurrent SSE streams of the cat agent (K tokens) from one server
  process (``troupe serve``'s app under hypercorn), read by a client in another process
  over loopback: runs/s, token events/s on the wire, and the server's resident memory
  per open stream.
- **Latency**: N streams of a model that makes 10 tokens a second, each token carrying
  the time it was made: p50/p99 from a token's production to its arrival at the client.
- **The server's floor**, beside each latency row: hypercorn's trio worker serving a
  bare ASGI app that writes what ``troupe serve`` writes for the same run (its headers,
  the starts at once, a token every tenth of a second with its time filled in, the ends
  with the last token: the events of one run of the clock agent, encoded once), read by
  the same client. What is left of a row's latency and CPU over its floor is Troupe's.

``python -m benchmarks._http`` prints one JSON object (``--quick`` for small sizes).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import trio

from actors import Agent, ChunkSink, ScriptedChatModel, ScriptedTurn
from protocol import AssistantMessageChunk, ChatRequest, RunInfo, StreamEvent, Usage
from runtime import Runnable, open_runtime

from ._workload import QUESTION, cat_agent

STAMP: Final = b"@" * 17
"""Where the floor writes a token's time (``%.6f`` of ``time.time()``: 17 characters)."""


class ClockModel(ScriptedChatModel):
    """Streams ``tokens`` tokens at ``rate`` a second; each token is the time it was made."""

    def stamp(self) -> str:
        """A token's text: the time it was made."""
        return f"{time.time():.6f} "

    async def generate(self, request: ChatRequest, sink: ChunkSink) -> None:
        count = len(self.turn_for(request.messages).token_list())
        for _ in range(count):
            await trio.sleep(self.token_delay)
            await sink.send(AssistantMessageChunk(self.stamp()))
        await sink.send(AssistantMessageChunk(finish_reason="stop", usage=Usage(1, count, count)))


class StampModel(ClockModel):
    """The clock model at once, each token's time a placeholder (:data:`STAMP`)."""

    def stamp(self) -> str:
        return STAMP.decode() + " "


def clock_agent(paced_tokens: int, model: type[ClockModel] = ClockModel) -> Agent:
    """The paced rows' agent: a model of ``paced_tokens`` tokens, 10 a second."""
    delay = 0.1 if model is ClockModel else 0.0
    clock = model([ScriptedTurn(tokens=("t",) * paced_tokens)], token_delay=delay)
    return Agent(clock, name="Clock")


def performers(k: int, paced_tokens: int) -> dict[str, Runnable[Any]]:
    return {"cat": cat_agent(k), "clock": clock_agent(paced_tokens)}


def encode_cost(events: int = 20_000) -> dict[str, float]:
    """µs per token event for each protocol's encoder, on fresh chunks of one run."""
    from actors.serve import PROTOCOLS

    name = "on_chat_model_stream"
    info = RunInfo("run-1", "ScriptedChatModel", "chat_model", ("root-1",), ("agent_llm",), {})
    stream = [
        StreamEvent(
            "on_chat_model_stream", info, i, None, None, None, AssistantMessageChunk(" cat")
        )
        for i in range(1, events + 1)
    ]
    out = {}
    for name, make in PROTOCOLS.items():
        best = float("inf")
        for _ in range(5):
            encoder = make("root-1", "root-1")
            start = time.perf_counter()
            for position, event in enumerate(stream, 1):
                encoder.encode(position, event)
            best = min(best, time.perf_counter() - start)
        out[name] = best / events * 1e6
    return out


def _conversations(messages: int) -> dict[str, list[dict[str, Any]]]:
    """A frontend's conversation of about ``messages`` messages (as the client sends
    them) in each protocol's shape: turns of a question, a tool call, its result and an
    answer (an AI SDK assistant message holds its turn's call, result and answer as
    parts: its 200 messages are 400 of the agent's)."""
    ag_ui: list[dict[str, Any]] = []
    ui: list[dict[str, Any]] = []
    for n in range(messages // 4):
        question = f"Where is the cat, question {n}?"
        call = {"id": f"c{n}", "type": "function", "function": {"name": "where", "arguments": "{}"}}
        ag_ui += [
            {"id": f"u{n}", "role": "user", "content": question},
            {"id": f"a{n}", "role": "assistant", "content": "", "toolCalls": [call]},
            {"id": f"t{n}", "role": "tool", "toolCallId": f"c{n}", "content": "under the bed"},
            {"id": f"b{n}", "role": "assistant", "content": f"Under the bed ({n})."},
        ]
    for n in range(messages // 2):
        question = f"Where is the cat, question {n}?"
        ui += [
            {"id": f"u{n}", "role": "user", "parts": [{"type": "text", "text": question}]},
            {
                "id": f"a{n}",
                "role": "assistant",
                "parts": [
                    {"type": "step-start"},
                    {
                        "type": "tool-where",
                        "toolCallId": f"c{n}",
                        "state": "output-available",
                        "input": {},
                        "output": "under the bed",
                    },
                    {"type": "step-start"},
                    {"type": "text", "text": f"Under the bed ({n}).", "state": "done"},
                ],
            },
        ]
    question = "And now?"
    ag_ui.append({"id": "q", "role": "user", "content": question})
    ui.append({"id": "q", "role": "user", "parts": [{"type": "text", "text": question}]})
    return {"ag-ui": ag_ui, "ui-message-stream": ui}


def history_cost(messages: int = 200, rounds: int = 9) -> dict[str, Any]:
    """ms to convert a ``messages``-message conversation into an agent's request, per
    protocol (the server's conversion, then the agent's coercion into its messages),
    and the floor: ``json.loads`` of the same body. Rounds alternate the two; each
    figure is the median of its rounds."""
    from actors.serve._history import traced_conversation

    agent = cat_agent(1)
    out: dict[str, Any] = {"messages": messages, "rounds": rounds}
    for name, conversation in _conversations(messages).items():
        body = json.dumps({"id": "chat-1", "threadId": "t", "messages": conversation})
        assert len(json.loads(body)["messages"]) >= messages - 3

        def convert(body: str = body) -> None:
            said = traced_conversation(json.loads(body)["messages"])
            agent.coerce_input({"messages": [message for _, message in said]})

        def parse(body: str = body) -> None:
            json.loads(body)["messages"]

        times: dict[str, list[float]] = {"convert": [], "parse": []}
        for _ in range(rounds):
            for what, call in (("convert", convert), ("parse", parse)):
                start = time.perf_counter()
                for _ in range(20):
                    call()
                times[what].append((time.perf_counter() - start) / 20 * 1e3)
        convert_ms = statistics.median(times["convert"])
        parse_ms = statistics.median(times["parse"])
        out[name] = {
            "ms": convert_ms,
            "json_ms": parse_ms,
            "over_json": statistics.median(
                c / p for c, p in zip(times["convert"], times["parse"], strict=True)
            ),
        }
    return out


class StreamScript(NamedTuple):
    """What ``troupe serve`` writes for one paced stream: its response's headers, the
    frames before the first token, a frame per token (its time :data:`STAMP`), and the
    frames after the last token (the ends, which go out with the last token)."""

    headers: list[tuple[bytes, bytes]]
    head: bytes
    tokens: list[bytes]
    tail: bytes


def stream_script(paced_tokens: int) -> StreamScript:
    """The bytes of a paced stream, as ``troupe serve`` writes them: the events of one
    run of the clock agent (its times placeholders), through the events encoder."""
    from actors.serve import PROTOCOLS
    from actors.serve._guard import SECURITY_HEADERS

    async def run() -> list[StreamEvent]:
        async with open_runtime() as runtime:
            agent = clock_agent(paced_tokens, StampModel)
            async with runtime.astream_events(agent, QUESTION) as stream:
                return [event async for event in stream]

    events = trio.run(run)
    root = events[0].run_id
    encoder = PROTOCOLS["events"](root, root)
    frames = [b"".join(encoder.encode(at, event)) for at, event in enumerate(events, 1)]
    tokens = [
        i
        for i, event in enumerate(events)
        if event.event == "on_chat_model_stream" and STAMP in frames[i]
    ]
    first, last = tokens[0], tokens[-1]
    assert len(tokens) == paced_tokens, len(tokens)
    headers = [
        (b"cache-control", b"no-store"),
        (b"x-accel-buffering", b"no"),
        (b"x-troupe-run-id", root.encode()),
        (b"content-type", b"text/event-stream; charset=utf-8"),
        *SECURITY_HEADERS,
    ]
    return StreamScript(
        headers,
        b"".join(frames[:first]),
        frames[first : last + 1],
        b"".join(frames[last + 1 :]),
    )


def floor_app(script: StreamScript) -> Any:
    """A bare ASGI app that writes ``script`` (a stream's bytes as ``troupe serve``
    writes them), a token every tenth of a second with its time: the server's part of
    a paced row, without Troupe."""
    last = len(script.tokens) - 1

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]  # lifespan.startup, then .shutdown
                await send({"type": kind + ".complete"})
                if kind == "lifespan.shutdown":
                    return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": script.headers})
        await send({"type": "http.response.body", "body": script.head, "more_body": True})
        for at, token in enumerate(script.tokens):
            await trio.sleep(0.1)
            data = token.replace(STAMP, b"%.6f" % time.time())
            if at == last:  # the ends come at once, and go out with it
                data += script.tail
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def _cpu_seconds(pid: int) -> float:
    """The CPU time process ``pid`` has used so far, user and system (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        # after the command's name, which may hold spaces: state is field 3, utime 14
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def _read_stream(host: str, port: int, performer: str, arrivals: list[float] | None) -> int:
    """One streamed run over a connection of its own, read as a browser reads it (h11
    parses the HTTP; each SSE frame is taken apart as it arrives). A lighter client than
    httpx, so the client process is not what is measured."""
    import h11

    body = json.dumps({"performer": performer, "input": QUESTION}).encode()
    connection = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="POST",
        target="/runs/stream",
        headers=[
            ("host", f"{host}:{port}"),
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
        ],
    )
    stream = await trio.open_tcp_stream(host, port)
    events = 0
    pending = b""
    marker = b'"event":"on_chat_model_stream"'
    async with stream:
        await stream.send_all(connection.send(request) + connection.send(h11.Data(data=body)))
        await stream.send_all(connection.send(h11.EndOfMessage()))
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some(1 << 16))
                continue
            if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return events
            if not isinstance(event, h11.Data):
                continue
            now = time.time()
            pending += bytes(event.data)
            *frames, pending = pending.split(b"\n\n")
            events += len(frames)
            if arrivals is None:
                continue
            for frame in frames:
                if marker in frame:
                    at = frame.find(b'"content":"') + 11
                    text = frame[at : frame.find(b'"', at)]
                    if text:
                        arrivals.append(now - float(text))


async def load(url: str, pid: int, n: int, performer: str) -> dict[str, Any]:
    """``n`` streams at once of ``performer``; the server's RSS sampled while they run,
    and the CPU time it used for them."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    arrivals: list[float] = []
    counts: list[int] = []
    await _read_stream(host, int(port), performer, None)  # warm-up
    peak = before = _rss_kib(pid)
    timed = arrivals if performer in ("clock", "floor") else None
    cpu = _cpu_seconds(pid)

    async def one() -> None:
        counts.append(await _read_stream(host, int(port), performer, timed))

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)
        while len(counts) < n:  # the server's memory, while the streams are open
            peak = max(peak, _rss_kib(pid))
            await trio.sleep(0.05)
    elapsed = time.perf_counter() - start
    cpu = _cpu_seconds(pid) - cpu
    result: dict[str, Any] = {
        "streams": n,
        "performer": performer,
        "seconds": elapsed,
        "runs_per_second": n / elapsed,
        "events_per_second": sum(counts) / elapsed,
        "server_rss_per_stream_kib": max(0, peak - before) / n,
        # What each stream cost the server, and how busy it was: a server process runs
        # on one core, so a share near 1 means it could not have served more.
        "server_cpu_ms_per_stream": cpu / n * 1000,
        "server_cpu_share": cpu / elapsed,
    }
    if arrivals:
        ms = sorted(a * 1000 for a in arrivals)
        result["latency_ms_p50"] = statistics.median(ms)
        result["latency_ms_p99"] = ms[int(len(ms) * 0.99) - 1]
    return result


def serve_main(port: int, k: int, paced_tokens: int) -> None:
    from actors.serve import serve

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                lambda task_status: serve(
                    performers(k, paced_tokens), port=port, task_status=task_status
                )
            )
            print(urls[0], flush=True)

    trio.run(run)


def floor_main(port: int, paced_tokens: int) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    from actors.serve._server import tune_collector

    app = floor_app(stream_script(paced_tokens))
    tune_collector()  # the collector as troupe serve sets it, as its backlog below
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.backlog = 4096  # as troupe serve's
    config.accesslog = config.errorlog = None

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                lambda task_status: hypercorn_serve(app, config, task_status=task_status)
            )
            print(binds[0], flush=True)

    trio.run(run)


def _with_fresh_server(k: int, paced: int, n: int, performer: str) -> dict[str, Any]:
    """One row, from a server process of its own (so its memory is that row's);
    performer ``floor`` is the bare hypercorn app."""
    mode = ["floor", "0", str(paced)]
    if performer != "floor":
        mode = ["serve", "0", str(k), str(paced)]
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._http", *mode],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        result: dict[str, Any] = trio.run(load, url, server.pid, n, performer)
        return result
    finally:
        server.terminate()
        server.wait(timeout=30)


_MEDIANS: Final = (
    "seconds",
    "runs_per_second",
    "events_per_second",
    "server_rss_per_stream_kib",
    "server_cpu_ms_per_stream",
    "server_cpu_share",
    "latency_ms_p50",
    "latency_ms_p99",
)


def paced_rows(
    k: int, paced: int, sizes: Sequence[int], rounds: int, short: int | None = 2
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each size's row of paced streams and its floor's, alternating, ``rounds`` times
    (the machine may be shared: each figure is the median of its rounds).

    Unless ``short`` is ``None``, the largest size is also run with streams of
    ``short`` tokens, Troupe's and the
    floor's, in the same rounds: a row's ``server_cpu_us_per_token_event`` is the
    server's CPU per token event (per stream, of ``paced`` tokens less that of
    ``short``, over the tokens between: what a stream's start and end cost is not in
    it), and ``server_cpu_over_floor`` the median of each round's ratio of Troupe's to
    the floor's."""
    samples: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for round_ in range(rounds):
        for n in sizes:
            for tokens in (paced, short) if n == sizes[-1] and short else (paced,):
                order = ("clock", "floor") if round_ % 2 == 0 else ("floor", "clock")
                for performer in order:
                    row = _with_fresh_server(k, tokens, n, performer)
                    samples.setdefault((performer, n, tokens), []).append(row)

    def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
        keys = [key for key in _MEDIANS if all(key in row for row in rows)]
        medians = {key: statistics.median(row[key] for row in rows) for key in keys}
        return {**rows[0], **medians, "rounds": len(rows)}

    troupe, floor = [], []
    for n in sizes:
        ours, bare = samples[("clock", n, paced)], samples[("floor", n, paced)]
        troupe.append(median_row(ours))
        floor.append(median_row(bare))
    if not short:
        return troupe, floor
    between = paced - short

    def per_token(rows: list[dict[str, Any]], shorter: list[dict[str, Any]]) -> list[float]:
        return [
            (long["server_cpu_ms_per_stream"] - brief["server_cpu_ms_per_stream"]) * 1000 / between
            for long, brief in zip(rows, shorter, strict=True)
        ]

    n = sizes[-1]
    mine = per_token(samples[("clock", n, paced)], samples[("clock", n, short)])
    bares = per_token(samples[("floor", n, paced)], samples[("floor", n, short)])
    troupe[-1]["server_cpu_us_per_token_event"] = statistics.median(mine)
    floor[-1]["server_cpu_us_per_token_event"] = statistics.median(bares)
    ratios = [a / b for a, b in zip(mine, bares, strict=True) if b > 0]
    troupe[-1]["server_cpu_over_floor"] = statistics.median(ratios) if ratios else None
    return troupe, floor


def main(argv: Sequence[str]) -> dict[str, Any]:
    quick = "--quick" in argv
    k, paced = (20, 5) if quick else (200, 20)
    sizes = (1, 10) if quick else (1, 100, 1_000)
    # The paced streams are all open at once: their rows say what an open stream costs.
    # (quick mode judges nothing: one round, no streams of 2 tokens)
    troupe, floor = paced_rows(
        k,
        paced,
        sizes[-1:] if quick else (100, 250, 1_000),
        1 if quick else 3,
        None if quick else 2,
    )
    return {
        "encode_us_per_token_event": encode_cost(2_000 if quick else 20_000),
        "history": history_cost(200, 1 if quick else 9),
        "streams": [_with_fresh_server(k, paced, n, "cat") for n in sizes],
        "paced": troupe,
        "paced_floor": floor,
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1:2] == ["floor"]:
        floor_main(int(sys.argv[2]), int(sys.argv[3]))
    else:
        print(json.dumps(main(sys.argv[1:]), indent=2))
