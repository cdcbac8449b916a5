"""The ``troupe`` command."""

from __future__ import annotations

import argparse
import errno
import functools
import os
import random
import signal
import sys
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from typing import Any

import trio

from runtime import (
    Runnable,
    StoreError,
    TroupeError,
    open_runtime,
    open_store,
    positive_int,
    seconds,
)

from .._demo import (
    DEFAULT_QUESTION,
    make_cat_agent,
    print_callbacks,
    print_events,
    print_jsonl,
    print_log,
    print_steps,
)
from .._openai import DEFAULT_IDLE_TIMEOUT, DEFAULT_TIMEOUT, OpenAIChatModel
from .._targets import load_object

_VIEWS = {
    "events": print_events,
    "steps": print_steps,
    "jsonl": print_jsonl,
    "log": print_log,
    "callbacks": print_callbacks,
}


def _seconds(text: str, *, allow_zero: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    try:
        return seconds(value, "the value", allow_zero=allow_zero)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _non_negative(text: str) -> float:
    return _seconds(text, allow_zero=True)


def _positive(text: str) -> float:
    return _seconds(text)


def _age(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    raw = text.strip().lower()
    scale = units.get(raw[-1:])
    try:
        value = float(raw[:-1] if scale is not None else raw) * (scale or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an age such as 7d, 12h, 30m or 45s, got {text!r}"
        ) from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"an age must be > 0, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535 (0: a free one), got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        return positive_int(int(text), "it")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None


def _add_model_flags(command: argparse.ArgumentParser) -> None:
    """The flags that put the cat agent on an OpenAI-compatible server's model."""
    real = command.add_argument_group(
        "a real model",
        "run the agent on an OpenAI-compatible server's model instead of the scripted one",
    )
    real.add_argument("--base-url", metavar="URL", help="e.g. http://localhost:11434/v1")
    real.add_argument("--model", metavar="NAME", help="the model name the server knows")
    real.add_argument(
        "--api-key",
        metavar="KEY",
        help="default: OPENAI_API_KEY, else 'none' (local servers accept any key)",
    )
    real.add_argument("--temperature", type=float, metavar="T", help="sampling temperature")
    real.add_argument(
        "--max-tokens",
        type=_positive_int,
        metavar="N",
        help="cap on each answer's tokens (a small model may ramble to its context limit)",
    )
    real.add_argument(
        "--tool-choice",
        metavar="CHOICE",
        help="auto, none, required, or a tool's name",
    )
    real.add_argument(
        "--timeout",
        type=_positive,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"wait for an answer to begin (default {DEFAULT_TIMEOUT:g}); not retried",
    )
    real.add_argument(
        "--idle-timeout",
        type=_positive,
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="SECONDS",
        help=f"longest silence within a streamed answer (default {DEFAULT_IDLE_TIMEOUT:g}); "
        "raise it for models that think before they speak",
    )


def _model_from(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> OpenAIChatModel | None:
    """The model the flags name, or ``None`` for the scripted one (or stop with one line
    saying what is wrong)."""
    tuning = ("temperature", "max_tokens", "tool_choice")
    if not (args.base_url or args.model or args.api_key or any(getattr(args, k) for k in tuning)):
        return None
    if not args.model:
        parser.error("--base-url, --api-key and the sampling flags need --model NAME")
    api_key = args.api_key or os.environ.get("OPENAI_API_KEY") or "none"
    try:
        return OpenAIChatModel(
            args.model,
            base_url=args.base_url,
            api_key=api_key,
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            tool_choice=args.tool_choice,
            timeout=args.timeout,
            idle_timeout=args.idle_timeout,
        )
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))


SERVE_EPILOG = """\
endpoints:
  POST /runs/stream        run a performer, stream its events (SSE)
  POST /ag-ui, /api/chat   the same, for AG-UI's HttpAgent and the AI SDK's useChat
  POST /runs/wait          run it, answer with its output (JSON)
  POST /runs               start a detached run; GET /runs lists the live ones
  GET  /runs/ID            a run's status
  GET  /runs/ID/stream     join a run (Last-Event-ID resumes)
  POST /runs/ID/cancel     cancel it
  /threads, /threads/ID, /threads/ID/history, /threads/ID/runs/stream|wait
                           conversations, with --store (multitask: reject, enqueue,
                           interrupt)
  GET  /performers         names, kinds, input schemas
  GET  /health             status and live runs (no token needed)
  GET  /                   the run viewer

performers: with several, name one with ?performer= or "performer" in the body

protocols (?protocol= or "protocol" in the body):
  events (default)         LangChain's astream_events v2 dicts
  ag-ui                    AG-UI events (@ag-ui/client's HttpAgent)
  ui-message-stream        the Vercel AI SDK's UI message stream (useChat)
  compact                  Troupe's own records (protocol.CompactDecoder)

environment:
  TROUPE_TOKEN             the bearer token (safer than --token, which `ps` shows)
  OPENAI_API_KEY           the key for --model, when --api-key is not given

examples:
  troupe serve                                   the cat agent, offline
  troupe serve myapp:agent --port 0              your performer, on a free port
  troupe serve myapp:agent --store sqlite:///runs.db --retention 7d
  troupe serve myapp:agent --store postgresql://troupe@db/troupe --workers 4
  troupe serve --model llama3.2 --base-url http://localhost:11434/v1
  curl -N localhost:8000/runs/stream -H 'content-type: application/json' \\
       -d '{"input": "where is the cat hiding?"}'
"""

DEMO_EPILOG = """\
environment:
  OPENAI_API_KEY           the key for --model, when --api-key is not given
  OTEL_EXPORTER_OTLP_ENDPOINT   where --otel sends spans (else the console)

examples:
  troupe demo                                    the agent's events, offline
  troupe demo --view steps --nested              the steps loop, a model inside a tool
  troupe demo --web --port 0                     the run viewer in a browser
  troupe demo --model llama3.2 --base-url http://localhost:11434/v1
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="troupe", description="Troupe: trio-native LLM agents whose every step streams."
    )
    try:
        version = metadata.version("trio-troupe")
    except metadata.PackageNotFoundError:  # running from a source tree
        version = "unknown"
    parser.add_argument("--version", action="version", version=f"troupe {version}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run the cat agent offline on the scripted model",
        description="Run the cat agent: a model that calls two tools (where the cat hides, "
        "what is there) and answers, offline on the built-in scripted model, printing every "
        "step as the loop of your choice sees it.",
        epilog=DEMO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--view",
        choices=sorted(_VIEWS),
        default="events",
        help="events: the astream_events loop (default); steps: the astream steps loop; "
        "jsonl: every event as a JSON line; log: the astream_log patches; "
        "callbacks: every callback handler call",
    )
    demo.add_argument(
        "--nested",
        action="store_true",
        help="get_items asks a model of its own ('Get Items LLM', tag 'tool_llm')",
    )
    demo.add_argument("--question", default=DEFAULT_QUESTION, help="what to ask the agent")
    demo.add_argument(
        "--seed", type=int, default=None, help="seed of the hiding-place choice (random if unset)"
    )
    _add_model_flags(demo)
    demo.add_argument(
        "--otel",
        action="store_true",
        help="export the runs as OpenTelemetry spans: to the OTLP endpoint that the "
        "OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT variables name, else to the console (stderr); "
        "needs the 'otel' extra",
    )
    demo.add_argument(
        "--delay",
        type=_non_negative,
        default=None,
        metavar="SECONDS",
        help="pause between streamed tokens (default 0: instant; 0.05 with --web)",
    )
    web = demo.add_argument_group("the run viewer in a browser (needs the 'serve' extra)")
    web.add_argument(
        "--web",
        action="store_true",
        help="serve the run viewer and run the cat agent (plain and nested) every few "
        "seconds, on a paced model; prints the page's address",
    )
    web.add_argument(
        "--port", type=_port, default=8000, help="port for --web (default 8000; 0: a free one)"
    )
    serve = commands.add_parser(
        "serve",
        help="serve agents over HTTP with server-sent events (needs the 'serve' extra)",
        description="Serve a performer (or a dict of them) over HTTP: SSE in LangChain's "
        "event shape, AG-UI's, or the Vercel AI SDK's UI message stream. With no target, "
        "the cat agent on the scripted model, offline (or on a real model: --model).",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("target", nargs="?", help="MODULE:ATTR, a performer or a dict of them")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=_port, default=8000, help="port (default 8000; 0: a free one)"
    )
    guard = serve.add_argument_group(
        "who may use it",
        "By default only this machine may (the server binds 127.0.0.1 and answers only to "
        "loopback names and IP addresses). Give a token in TROUPE_TOKEN or a file rather "
        "than with --token: a command line is visible to every user in `ps`.",
    )
    guard.add_argument(
        "--token",
        help="require 'Authorization: Bearer TOKEN' (default: $TROUPE_TOKEN, else none)",
    )
    guard.add_argument(
        "--token-file", metavar="PATH", help="read the token from this file (its first line)"
    )
    guard.add_argument(
        "--auth",
        metavar="MODULE:ATTR",
        help="a function of the request to an actors.serve.Identity (or None to refuse it); "
        "each client then sees only its own runs",
    )
    guard.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="answer to this host name too (a DNS name the server is reached by; "
        "'*.example.com' for a domain; '*' for any)",
    )
    guard.add_argument(
        "--cors-origin", action="append", default=[], metavar="ORIGIN", help="allow this origin"
    )
    limits = serve.add_argument_group("limits")
    limits.add_argument(
        "--body-timeout",
        type=_positive,
        default=30.0,
        metavar="SECONDS",
        help="a request's whole body must arrive within this (default 30; 408 after)",
    )
    limits.add_argument(
        "--max-connections",
        type=_positive_int,
        metavar="N",
        help="connections open at once, streams included (default 4096, or fewer if the "
        "process may open fewer files); more wait to be accepted",
    )
    limits.add_argument(
        "--max-detached",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="detached runs (POST /runs) going at once (default 1000; 429 after)",
    )
    limits.add_argument(
        "--detached-max-age",
        type=_positive,
        default=3600.0,
        metavar="SECONDS",
        help="a detached run still going after this is cancelled (default 3600)",
    )
    kept = serve.add_argument_group(
        "a store", "keep runs and conversations (threads) in a store: they outlive the process"
    )
    kept.add_argument(
        "--store",
        metavar="URL",
        help="journal every run there: sqlite:///runs.db (relative), sqlite:////abs/runs.db, "
        "or postgresql://user@host/db; enables /threads, and joins, status and cancels "
        "of runs from before a restart or of other processes on the store",
    )
    kept.add_argument(
        "--retention",
        type=_age,
        metavar="AGE",
        help="with --store: delete runs that ended longer ago than this (7d, 12h, 30m, 45s), "
        "and threads idle as long",
    )
    kept.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="with --store: N server processes on one port, sharing the store (a run "
        "started through one is streamed, joined and cancelled through any); default 1",
    )
    serve.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)  # a worker's socket
    serve.add_argument(
        "--heartbeat",
        type=_positive,
        default=15.0,
        metavar="SECONDS",
        help="comment line after this much silence in a stream (default 15)",
    )
    serve.add_argument(
        "--history",
        type=_positive_int,
        default=200,
        metavar="RUNS",
        help="root runs the run viewer at / keeps after they end (default 200)",
    )
    serve.add_argument(
        "--delay", type=_non_negative, default=0.0, metavar="SECONDS", help=argparse.SUPPRESS
    )
    _add_model_flags(serve)
    cluster = serve.add_argument_group(
        "a Ray cluster", "run the agents on hosts in a Ray cluster (needs the 'ray' extra)"
    )
    cluster.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="the cluster's address (as ray.init takes it: 'auto', 'ray://host:10001', "
        "host:port); 'local' starts one on this machine. TARGET is then the registry "
        "the hosts import (default: the cat agent)",
    )
    cluster.add_argument(
        "--ray-hosts",
        type=_positive_int,
        default=1,
        metavar="N",
        help="host actors to start (default 1)",
    )

    # Commands whose every argument (--help too) goes to their own parser, in a module
    # imported only when the command runs.
    def fake_openai() -> Callable[[list[str]], int]:
        from ..testing import fake_openai_main

        return fake_openai_main

    def serve_mcp() -> Callable[[list[str]], int]:
        from ..mcp import main as mcp_main

        return mcp_main

    _passed_on(
        commands,
        "fake-openai",
        "a scripted OpenAI-compatible server on 127.0.0.1 for offline work and tests "
        "(troupe fake-openai --help)",
        fake_openai,
    )
    _passed_on(
        commands,
        "mcp",
        "serve performers as MCP tools over stdio or streamable HTTP (troupe mcp --help)",
        serve_mcp,
    )
    return parser


def _passed_on(
    commands: Any, name: str, help: str, load: Callable[[], Callable[[list[str]], int]]
) -> None:
    """``troupe NAME ...``: every argument goes to the ``main`` that ``load`` imports."""
    command = commands.add_parser(name, help=help, add_help=False, prefix_chars="+")
    command.add_argument("passed_args", nargs="*", help=argparse.SUPPRESS)

    def run(argv: list[str]) -> int:
        try:
            main = load()
        except ImportError as exc:
            print(f"troupe {name}: {exc}", file=sys.stderr)
            return 2
        return main(argv)

    command.set_defaults(passed_on=run)


WEB_DEMO_PAUSE = 3.0
"""Seconds between the runs ``troupe demo --web`` starts."""


def _web_demo(args: argparse.Namespace) -> int:
    """``troupe demo --web``: the viewer, watching the cat agent run every few seconds."""
    edge = _serve_extra("troupe demo --web")
    if edge is None:
        return 2
    serve = edge.serve
    delay = 0.05 if args.delay is None else args.delay
    rng = random.Random(args.seed)
    agents: dict[str, Runnable[Any]] = {
        "cat": make_cat_agent(rng, token_delay=delay),
        "nested": make_cat_agent(rng, nested=True, token_delay=delay),
    }

    async def run() -> None:
        async with open_runtime() as rt, trio.open_nursery() as nursery:

            async def serving(task_status: trio.TaskStatus[list[str]]) -> None:
                await serve(agents, port=args.port, runtime=rt, task_status=task_status)
                nursery.cancel_scope.cancel()  # signalled: the runs stop too

            urls = await nursery.start(serving)
            print(f"troupe: the run viewer is at {urls[0]}/ (Ctrl+C stops)", flush=True)
            while True:
                for name in ("cat", "nested"):
                    await rt.ainvoke(agents[name], {"input": args.question})
                    await trio.sleep(WEB_DEMO_PAUSE)

    return _run_server("troupe demo --web", run)


def _serve_extra(what: str) -> Any:
    """``actors.serve``, or ``None`` after saying which extra ``what`` needs."""
    try:
        from .. import serve
    except ImportError as exc:
        print(
            f"{what} needs the 'serve' extra: pip install 'trio-troupe[serve]' ({exc})",
            file=sys.stderr,
        )
        return None
    return serve


def _run_server(what: str, run: Callable[[], Awaitable[None]]) -> int:
    """``trio.run(run)`` for a command that serves until stopped; its exit status."""
    try:
        trio.run(run)
    except KeyboardInterrupt:
        return 130
    except BaseExceptionGroup as group:
        # an exit reaches us from inside the server's nurseries (a second Ctrl-C while
        # it drains; a run's SystemExit): it stays itself
        if group.split(KeyboardInterrupt)[1] is None:
            return 130
        exits, rest = group.split(SystemExit)
        if rest is None and exits is not None:
            raise exits.exceptions[0] from None
        failed, rest = group.split((OSError, TroupeError, StoreError))
        if rest is None and failed is not None:
            first = _first(failed)
            print(f"{what}: {_said(first)}", file=sys.stderr)
            return 2 if isinstance(first, StoreError) else 1
        raise
    except StoreError as exc:  # the store cannot be opened: as a bad option
        print(f"{what}: {exc}", file=sys.stderr)
        return 2
    except (OSError, TroupeError) as exc:  # the port is taken; a cluster's host died
        print(f"{what}: {_said(exc)}", file=sys.stderr)
        return 1
    return 0


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found


def _said(exc: BaseException) -> str:
    """One line for a server's start that failed."""
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"{exc.strerror or exc}: pick another with --port, or --port 0 for a free one"
    if isinstance(exc, OSError) and exc.errno == errno.EACCES:
        return f"{exc.strerror or exc}: ports below 1024 need privileges; try --port 8000"
    return str(exc)


def _serve(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    edge = _serve_extra("troupe serve")
    if edge is None:
        return 2
    if args.workers > 1:
        if args.ray is not None:
            parser.error("--workers does not work with --ray (a cluster's hosts run the runs)")
        if args.store is None or ":memory:" in args.store:
            parser.error(
                "--workers N needs --store URL (a file or a database): each worker keeps its "
                "runs in its own memory, so a run started through one would be invisible to "
                "the others"
            )
    if args.ray is not None:
        if args.store is not None:
            parser.error("--store does not work with --ray (a cluster's hosts run the runs)")
        return _serve_on_ray(args, parser, edge)
    if args.ray_hosts != 1:
        parser.error("--ray-hosts needs --ray ADDRESS")
    load_target, serve = edge.load_target, edge.serve
    model = _model_from(args, parser)
    if model is not None and args.target:
        parser.error(
            "the model flags put the built-in cat agent on a model; MODULE:ATTR "
            "builds its own performers"
        )
    try:
        target = (
            load_target(args.target)
            if args.target
            else make_cat_agent(token_delay=args.delay, model=model)
        )
    except ValueError as exc:
        parser.error(str(exc))
    _guard_options(args, parser)
    options: dict[str, Any] = {}
    if args.store is not None:
        try:
            open_store(args.store)  # a URL of no store Troupe knows: a bad option
        except StoreError as exc:
            parser.error(f"--store: {exc}")
        options = {"store": args.store, "retention": args.retention}
    elif args.retention is not None:
        parser.error("--retention needs --store URL")
    if args.workers > 1:
        return _serve_workers(args, argv)
    options["fd"] = args.listen_fd

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            if args.listen_fd is not None:
                nursery.start_soon(_lifeline)
            async with trio.open_nursery() as serving:
                await _announce(serving, serve, target, args, **options)
            nursery.cancel_scope.cancel()

    return _run_server("troupe serve", run)


def _serve_workers(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``troupe serve --workers N``: a supervisor of N workers (``_workers.py``)."""
    from ._workers import Supervisor, WorkerFailed, listening_socket

    try:
        sock = listening_socket(args.host, args.port)
    except OSError as exc:
        print(f"troupe serve: {_said(exc)}", file=sys.stderr)
        return 1
    # the same command line, one worker each (argparse keeps the last --workers given)
    command = [sys.executable, "-m", "actors", *argv, "--workers", "1"]
    try:
        trio.run(Supervisor(command, args.workers, sock).run)
    except WorkerFailed as exc:
        print(str(exc), file=sys.stderr)
        return exc.status
    finally:
        sock.close()
    return 0


async def _lifeline() -> None:
    """A worker's stdin is a pipe from its supervisor: when it ends (the supervisor
    died), the worker drains and stops as on SIGTERM."""
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stdin:
        while await stdin.receive_some(4096):
            pass
    os.kill(os.getpid(), signal.SIGTERM)


async def _announce(
    nursery: trio.Nursery, serve: Any, target: Any, args: argparse.Namespace, **options: Any
) -> None:
    urls = await nursery.start(
        functools.partial(
            serve,
            target,
            host=args.host,
            port=args.port,
            token=args.token,
            auth=args.auth,
            allow_hosts=args.allow_host,
            cors_origins=args.cors_origin or None,
            heartbeat=args.heartbeat,
            history=args.history,
            body_timeout=args.body_timeout,
            max_connections=args.max_connections,
            max_detached=args.max_detached,
            detached_max_age=args.detached_max_age,
            **options,
        )
    )
    print(f"troupe: serving on {', '.join(urls)}", flush=True)
    print(f"troupe: the run viewer is at {_viewer_url(urls[0], args.token)}", flush=True)


def _viewer_url(url: str, token: str | None) -> str:
    """The viewer's address to print. With a token, on a terminal, it carries the token
    in its fragment (never sent to the server; the page moves it out of the address);
    elsewhere (a process manager's log) the page asks for it."""
    if token is None:
        return f"{url}/"
    if sys.stdout.isatty():
        return f"{url}/#token={urllib.parse.quote(token, safe='')}"
    return f"{url}/ (it asks for the token)"


def _guard_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Settle ``args.token`` (from --token, --token-file or $TROUPE_TOKEN) and
    ``args.auth`` (the hook --auth names), or stop with one line saying what is wrong."""
    given = [name for name in ("token", "token_file") if getattr(args, name) is not None]
    if len(given) > 1:
        parser.error("give the token with --token or --token-file, not both")
    if args.token_file is not None:
        try:
            with open(args.token_file, encoding="utf-8") as file:
                args.token = file.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            parser.error(f"--token-file: cannot read {args.token_file!r}: {exc}")
        if not args.token:
            parser.error(f"--token-file: {args.token_file!r} holds no token on its first line")
    elif args.token is not None:
        print(
            "troupe serve: a token given with --token is visible to every user of this "
            "machine (in `ps`); prefer TROUPE_TOKEN or --token-file",
            file=sys.stderr,
        )
        if not args.token.strip():
            parser.error("--token is empty")
    else:
        args.token = os.environ.get("TROUPE_TOKEN")
        if args.token is not None and not args.token.strip():
            parser.error("TROUPE_TOKEN is set but empty: unset it, or give it a token")
    if args.auth is not None:
        try:
            hook = load_object(args.auth, "the auth hook")
        except ValueError as exc:
            parser.error(f"--auth: {exc}")
        if not callable(hook):
            parser.error(f"--auth: {args.auth} is a {type(hook).__name__}, not a function")
        args.auth = hook


def _serve_on_ray(args: argparse.Namespace, parser: argparse.ArgumentParser, edge: Any) -> int:
    try:
        from .. import ray as cluster
    except ImportError as exc:
        print(
            f"troupe serve --ray needs the 'ray' extra: pip install 'trio-troupe[ray]' ({exc})",
            file=sys.stderr,
        )
        return 2
    registry = args.target or cluster.DEMO_REGISTRY
    try:
        edge.load_target(registry)
    except ValueError as exc:
        parser.error(str(exc))
    _guard_options(args, parser)
    address = None if args.ray == "local" else args.ray

    async def run() -> None:
        async with cluster.open_ray_runtime(address, registry=registry, hosts=args.ray_hosts) as rt:
            print(
                f"troupe: {args.ray_hosts} host(s) on the Ray cluster run {', '.join(rt.names)}",
                flush=True,
            )
            async with trio.open_nursery() as nursery:
                served = {name: rt.performers[name] for name in rt.names}
                await _announce(nursery, edge.serve, served, args, runtime=rt)

    return _run_server("troupe serve", run)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command in ("fake-openai", "mcp"):
        return int(args.passed_on(args.passed_args))
    if args.command == "serve":
        return _serve(args, parser, sys.argv[1:] if argv is None else argv)
    if args.command != "demo":
        parser.print_usage(sys.stderr)
        print("troupe: error: name a command, e.g. `troupe demo`", file=sys.stderr)
        return 2
    if not args.question.strip():
        parser.error("--question must not be empty")
    if args.web:
        return _web_demo(args)
    if args.delay is None:
        args.delay = 0.0
    model = _model_from(args, parser)
    agent = make_cat_agent(
        random.Random(args.seed), nested=args.nested, token_delay=args.delay, model=model
    )
    view = _VIEWS[args.view]
    finish_otel = None
    if args.otel:
        try:
            view, finish_otel = _with_otel(view)
        except ImportError as exc:
            print(f"troupe: --otel needs the 'otel' extra ({exc})", file=sys.stderr)
            return 2
    try:
        trio.run(view, agent, args.question, sys.stdout)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`troupe demo | head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:
        print(f"troupe: the run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        if finish_otel is not None:
            finish_otel()
    return 0


def _with_otel(view: Any) -> tuple[Any, Any]:
    """``view`` run in a runtime that exports to OpenTelemetry, and what flushes it."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    from runtime import open_runtime

    from ..otel import OpenTelemetryExporter

    provider = TracerProvider(resource=Resource.create({"service.name": "troupe-demo"}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    exporter = OpenTelemetryExporter(provider)

    async def exported(agent: Any, question: str, out: Any) -> None:
        async with open_runtime(callbacks=[exporter]):
            await view(agent, question, out)

    return exported, provider.shutdown
