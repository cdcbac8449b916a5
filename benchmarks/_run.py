"""Run every benchmark, print a table, write JSON.

``python -m benchmarks`` (full: a few minutes) or ``python -m benchmarks --quick`` (the
CI smoke: seconds, small sizes, no timing judged).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import trio

from ._cancel import cancellation_latency
from ._isolation import isolation
from ._peers import langchain_available, langchain_per_token
from ._stores import NO_POSTGRES
from ._timing import QUICK_SAMPLING, SAMPLING
from ._tokens import per_token

DEFAULT_JSON = Path(__file__).parent / "latest.json"
TARGETS = {
    "us_per_token": 3.0,
    "ratio_to_raw": 2.0,
    "runs_per_second_at_1000": 900.0,
    "rss_per_run_kib_at_10000": 20.0,
    "cancel_p99_ms": 10.0,
    "isolation_ratio": 0.9,
    "soak_sequential_growth_pct": 5.0,
    "soak_concurrent_growth_pct": 5.0,
    "http_encode_us_per_token": 5.0,
    "http_p99_ms_at_10_tokens_per_s": 20.0,
    "http_rss_per_stream_kib": 64.0,
    # troupe serve's CPU per token event of a paced stream over the bare hypercorn app
    # writing the same bytes, in the same run (issue 29)
    "http_server_cpu_over_floor": 1.3,
    # a frontend's 200-message conversation into the agent's request (issue 32)
    "history_200_messages_ms": 2.0,
    "otel_ratio": 1.10,
    # speed as users get it (issue 15): a new chunk per token, the seed's loop reading
    "chunk_per_token_us": 1.5,
    "yield_per_token_over_limit": 1.5,
    "user_shaped_runs_per_second_at_1000": 1500.0,
    # agents that compose (issue 35): ratios against a floor in the same process
    "as_tool_over_top_level": 1.2,
    "guardrail_passes_per_token": 1.0,
    # across a Ray cluster's edge (issue 18; measured only where Ray is installed)
    "ray_events_per_second_one_run": 20_000.0,
    "ray_events_per_second_100_runs": 30_000.0,
    "ray_p99_ms_at_100_tokens_per_s": 10.0,
    "ray_cancel_ms": 50.0,
    # the journal's stores alone (issue 30): a finished run of 10,000 events read back
    "sqlite_read_records_per_second": 100_000.0,
    "postgres_read_records_per_second": 100_000.0,
    # the journal's cost (issue 30): cat agent runs journaled, against no store
    "journal_sqlite_ratio_at_100": 1.15,
    "journal_sqlite_ratio_at_1000": 1.3,
    "journal_postgres_ratio_at_100": 1.5,
    # the ecosystem (issue 33): asyncio programs and MCP servers, each against its floor
    "asyncio_over_trio_per_token": 1.5,
    "mcp_call_over_client_alone": 1.5,
}
HIGHER_IS_BETTER = (
    "runs_per_second_at_1000",
    "isolation_ratio",
    "user_shaped_runs_per_second_at_1000",
    "ray_events_per_second_one_run",
    "ray_events_per_second_100_runs",
    "sqlite_read_records_per_second",
    "postgres_read_records_per_second",
)


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the CI smoke")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write JSON")
    parser.add_argument("--no-peers", action="store_true", help="skip LangChain even if installed")
    parser.add_argument(
        NO_POSTGRES,
        action="store_true",
        help="skip the PostgreSQL rows even if PostgreSQL is installed",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def _median_of(results: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(float(r[key]) for r in results))


def token_benchmarks(
    low: int, high: int, repeat: int, sampling: tuple[int, int] = SAMPLING
) -> dict[str, Any]:
    """Per-token cost of each way to consume a run, and of the raw pipeline."""
    out: dict[str, Any] = {}
    for mode in ("events", "steps", "invoke", "raw"):
        runs = [trio.run(per_token, mode, low, high, *sampling) for _ in range(repeat)]
        out[mode] = {
            **runs[0],
            "us_per_token": _median_of(runs, "us_per_token"),
            "items_per_second": _median_of(runs, "items_per_second"),
            "repeats": [r["us_per_token"] for r in runs],
        }
    out["ratio_to_raw"] = out["events"]["us_per_token"] / out["raw"]["us_per_token"]
    return out


_STARTED: dict[tuple[str, ...], subprocess.Popen[str]] = {}


def _start(module: str, *args: object) -> subprocess.Popen[str]:
    """``python -m benchmarks.<module> args...``, started (its output piped)."""
    return subprocess.Popen(
        [sys.executable, "-m", f"benchmarks.{module}", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )


def _start_early(*modules: tuple[str, ...]) -> None:
    """Start these ``(module, *args)`` processes now, for :func:`_in_fresh_process` to
    read later: quick mode's smoke runs them side by side, since it judges no figure."""
    for module, *args in modules:
        _STARTED[(module, *args)] = _start(module, *args)


def _in_fresh_process(module: str, *args: object) -> dict[str, Any]:
    """Run ``python -m benchmarks.<module> args...`` (or finish the process
    :func:`_start_early` started) and read the JSON it prints."""
    process = _STARTED.pop((module, *map(str, args)), None) or _start(module, *args)
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, process.args, stdout, stderr)
    result: dict[str, Any] = json.loads(stdout)
    return result


def _one_process(n: int, k: int) -> dict[str, Any]:
    return _in_fresh_process("_concurrency", n, k)


def concurrency_benchmarks(sizes: Sequence[int], k: int, repeat: int) -> list[dict[str, Any]]:
    """N concurrent runs, each in a fresh process so peak memory belongs to that N."""
    rows = []
    for n in sizes:
        runs = [_one_process(n, k) for _ in range(repeat)]
        rows.append(
            {
                **runs[0],
                "runs_per_second": _median_of(runs, "runs_per_second"),
                "events_per_second": _median_of(runs, "events_per_second"),
                "peak_rss_kib": _median_of(runs, "peak_rss_kib"),
                "rss_per_run_kib": _median_of(runs, "rss_per_run_kib"),
                "repeats": len(runs),
                "runs_per_second_each": [r["runs_per_second"] for r in runs],
                "rss_per_run_kib_each": [r["rss_per_run_kib"] for r in runs],
            }
        )
    return rows


SOAK_ROUNDS: Final = 9
"""Rounds of 10,000 runs at once in the memory soak: after the warm-up round, four
samples for each half (see ``_soak.growth``)."""


def soak(*args: int) -> dict[str, Any]:
    """The memory soak in a fresh process (see ``_soak.py``)."""
    return _in_fresh_process("_soak", "sequential" if len(args) == 1 else "concurrent", *args)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "trio": metadata.version("trio"),
        "troupe": _version("trio-troupe"),
        "date": time.strftime("%Y-%m-%d"),
    }


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "source tree"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks; returns the exit status."""
    args = _arguments(argv)
    quick = args.quick
    low, high = (20, 200) if quick else (200, 2000)
    repeat = 1 if quick else args.repeat
    report: dict[str, Any] = {"machine": machine(), "quick": quick}
    flags = [*(["--quick"] if quick else []), *([NO_POSTGRES] if args.no_postgres else [])]
    if quick:
        _start_early(
            *((f"_{name}", "--quick") for name in OPTIONAL if _extra_missing(name) == []),
            *((name, *flags) for name in ("_stores", "_joins", "_journal")),
            *([("_announce", *flags)] if not _extra_missing("http") else []),
            *((name, "--quick") for name in ("_shapes", "_asyncio", "_compose")),
        )
    report["tokens"] = token_benchmarks(low, high, repeat, QUICK_SAMPLING if quick else SAMPLING)
    sizes = (1, 10) if quick else (1, 10, 100, 1_000, 10_000)
    report["concurrency"] = concurrency_benchmarks(sizes, 20 if quick else 200, repeat)
    report["cancellation"] = trio.run(cancellation_latency, 10 if quick else 1_000)
    report["isolation"] = trio.run(isolation, *((10, 20, 1) if quick else (100, 200, repeat)))
    report["soak"] = (
        [soak(500), soak(200, 4)] if quick else [soak(100_000), soak(10_000, SOAK_ROUNDS)]
    )
    skipped: list[str] = []
    for name, (extra, _) in OPTIONAL.items():
        missing = _extra_missing(name)
        if missing:
            skipped.append(
                f"{name}: skipped, {', '.join(missing)} not installed "
                f"(pip install 'trio-troupe[{extra}]')"
            )
            continue
        report[name] = _in_fresh_process(f"_{name}", *(["--quick"] if quick else []))
    report["stores"] = _in_fresh_process("_stores", *flags)
    skipped += [
        f"{name} store: skipped, {figures['skipped']}"
        for name, figures in report["stores"].items()
        if "skipped" in figures
    ]
    report["joins"] = _in_fresh_process("_joins", *flags)
    if "skipped" in report["joins"]:
        skipped.append(f"joins across processes: skipped, {report['joins']['skipped']}")
    if not _extra_missing("http"):  # a served run's headers: the serve extra
        report["announce"] = _in_fresh_process("_announce", *flags)
    report["skipped"] = skipped
    report["shapes"] = _in_fresh_process("_shapes", *(["--quick"] if quick else []))
    report["journal"] = _in_fresh_process("_journal", *flags)
    report["asyncio"] = _in_fresh_process("_asyncio", *(["--quick"] if quick else []))
    report["compose"] = _in_fresh_process("_compose", *(["--quick"] if quick else []))
    if ray_available() and not quick:
        report["ray"] = _in_fresh_process("_ray")
    if langchain_available() and not args.no_peers and not quick:
        peer = langchain_per_token(low, high, 5)
        peer["troupe_over_peer"] = report["tokens"]["events"]["us_per_token"] / peer["us_per_token"]
        report["peers"] = [peer]
    else:
        report["peers"] = []
    # Quick mode is a smoke test: tiny sizes, one sample each, so no target is judged.
    report["targets"] = {} if quick else judge(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(render(report))
    print(f"\nJSON: {args.json}")
    return 0


def _extra_missing(name: str) -> list[str]:
    """The modules of :data:`OPTIONAL`'s ``name`` that are not installed."""
    return [module for module in OPTIONAL[name][1] if not _installed(module)]


OPTIONAL: Final = {
    "http": ("serve", ("starlette", "hypercorn", "h11")),
    "otel": ("otel", ("opentelemetry.sdk",)),
    "mcp": ("mcp", ("mcp",)),
}
"""The benchmarks that need an extra: its name and the modules they import."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def ray_available() -> bool:
    """Whether the ray extra is installed (the cluster's figures need it)."""
    try:
        metadata.version("ray")
    except metadata.PackageNotFoundError:
        return False
    return True


def judge(report: dict[str, Any]) -> dict[str, Any]:
    """Each target with the measured figure and whether it is met (full runs only)."""
    by_n = {row["runs"]: row for row in report["concurrency"]}
    measured = {
        "us_per_token": report["tokens"]["events"]["us_per_token"],
        "ratio_to_raw": report["tokens"]["ratio_to_raw"],
        "runs_per_second_at_1000": by_n.get(1_000, {}).get("runs_per_second"),
        "rss_per_run_kib_at_10000": by_n.get(10_000, {}).get("rss_per_run_kib"),
        "cancel_p99_ms": report["cancellation"]["p99_ms"],
        "isolation_ratio": report["isolation"]["ratio"],
        "soak_sequential_growth_pct": report["soak"][0]["rss_growth_second_half_pct"],
        "soak_concurrent_growth_pct": report["soak"][1]["rss_growth_second_half_pct"],
        **_http_figures(report.get("http")),
        "otel_ratio": report["otel"]["ratio"] if "otel" in report else None,
        "chunk_per_token_us": report["shapes"]["tokens"]["chunk per token, reading"]["troupe_us"],
        "yield_per_token_over_limit": report["shapes"]["tokens"][
            "chunk per token, yield per token, reading"
        ]["ratio"],
        "user_shaped_runs_per_second_at_1000": (
            report["shapes"]["concurrent"][0]["troupe_runs_per_second"]
            if report["shapes"]["concurrent"][0]["runs"] == 1_000
            else None
        ),
        "as_tool_over_top_level": report["compose"]["as_tool_over_top_level"],
        "guardrail_passes_per_token": report["compose"]["guardrail_passes_per_token"],
        **_ray_figures(report.get("ray")),
        **{
            f"{name}_read_records_per_second": report.get("stores", {})
            .get(name, {})
            .get("read", {})
            .get("records_per_second")
            for name in ("sqlite", "postgres")
        },
        **_journal_figures(report.get("journal")),
        "asyncio_over_trio_per_token": report["asyncio"]["ratio_thread"],
        "mcp_call_over_client_alone": report["mcp"]["ratio"] if "mcp" in report else None,
    }
    judged = {}
    for name, target in TARGETS.items():
        value = measured[name]
        higher_is_better = name in HIGHER_IS_BETTER
        met = None if value is None else (value >= target if higher_is_better else value <= target)
        judged[name] = {"target": target, "measured": value, "met": met}
    return judged


def _journal_figures(journal: dict[str, Any] | None) -> dict[str, float | None]:
    rows = {
        "journal_sqlite_ratio_at_100": "ratio_at_100",
        "journal_sqlite_ratio_at_1000": "ratio_at_1000",
        "journal_postgres_ratio_at_100": "ratio_at_100_postgres",
    }
    journal = journal or {}
    return {name: journal.get(key, {}).get("ratio") for name, key in rows.items()}


def _http_figures(http: dict[str, Any] | None) -> dict[str, float | None]:
    if http is None:
        return dict.fromkeys(
            (
                "http_encode_us_per_token",
                "http_p99_ms_at_10_tokens_per_s",
                "http_rss_per_stream_kib",
                "http_server_cpu_over_floor",
                "history_200_messages_ms",
            )
        )
    return {
        "http_encode_us_per_token": max(http["encode_us_per_token_event"].values()),
        "http_p99_ms_at_10_tokens_per_s": http["paced"][-1].get("latency_ms_p99"),
        "http_rss_per_stream_kib": http["paced"][-1]["server_rss_per_stream_kib"],
        "http_server_cpu_over_floor": http["paced"][-1].get("server_cpu_over_floor"),
        "history_200_messages_ms": max(
            http["history"][name]["ms"] for name in ("ag-ui", "ui-message-stream")
        ),
    }


def _ray_figures(ray: dict[str, Any] | None) -> dict[str, float | None]:
    if ray is None:
        return dict.fromkeys(
            (
                "ray_events_per_second_one_run",
                "ray_events_per_second_100_runs",
                "ray_p99_ms_at_100_tokens_per_s",
                "ray_cancel_ms",
            )
        )
    return {
        "ray_events_per_second_one_run": ray["events_per_second_one_run"],
        "ray_events_per_second_100_runs": (
            ray["events_per_second_concurrent"] if ray["concurrent_runs"] == 100 else None
        ),
        "ray_p99_ms_at_100_tokens_per_s": ray["paced"][-1]["latency_ms_p99"],
        "ray_cancel_ms": ray["cancel_ms_max"],
    }


def _spread(values: Sequence[float] | None, form: str) -> str:
    """`` (lowest to highest)`` of each process's figure, when there were several."""
    if not values or len(values) < 2:
        return ""
    return f" ({form.format(min(values))} to {form.format(max(values))})"


def render(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    tokens = report["tokens"]
    m = report["machine"]
    lines = [
        f"Machine: {m['cpus']} CPUs, {m['processor']}, {m['implementation']} {m['python']}, "
        f"trio {m['trio']}, {m['platform']} ({m['date']})",
        "",
        f"| per-token overhead (K={tokens['events']['tokens'][0]} vs "
        f"{tokens['events']['tokens'][1]}) | µs per token | items/s |",
        "|---|---:|---:|",
    ]
    labels = {
        "events": "full event stream consumed",
        "steps": "steps stream only",
        "invoke": "plain call (`ainvoke`)",
        "raw": "raw trio pipeline, 2 hops (the limit)",
    }
    for mode, label in labels.items():
        row = tokens[mode]
        lines.append(f"| {label} | {row['us_per_token']:.2f} | {row['items_per_second']:,.0f} |")
    lines.append(f"| **Troupe ÷ limit** | **{tokens['ratio_to_raw']:.2f}x** | |")
    for peer in report["peers"]:
        lines.append(
            f"| {peer['peer']} | {peer['us_per_token']:.2f} | {peer['items_per_second']:,.0f} |"
        )
        lines.append(f"| **Troupe ÷ peer** | **{peer['troupe_over_peer']:.3f}x** | |")
    lines += [
        "",
        "| concurrent runs | runs/s (range) | events/s | peak RSS (MiB) "
        "| RSS per run, KiB (range) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in report["concurrency"]:
        lines.append(
            f"| {row['runs']:,} | {row['runs_per_second']:,.0f}"
            f"{_spread(row.get('runs_per_second_each'), '{:,.0f}')} | "
            f"{row['events_per_second']:,.0f} | {row['peak_rss_kib'] / 1024:.1f} | "
            f"{row['rss_per_run_kib']:.1f}{_spread(row.get('rss_per_run_kib_each'), '{:.1f}')} |"
        )
    cancel = report["cancellation"]
    lines += [
        "",
        f"Cancellation, {cancel['runs']:,} runs: median {cancel['median_ms']:.3f} ms, "
        f"p99 {cancel['p99_ms']:.3f} ms, max {cancel['max_ms']:.3f} ms, "
        f"tasks left behind {cancel['leaked_tasks']}.",
        "",
        _render_isolation(report["isolation"]),
        "",
        *_render_soak(report["soak"]),
        "",
        *(_render_http(report["http"]) if "http" in report else []),
        "",
        *([_render_otel(report["otel"]), ""] if "otel" in report else []),
        *([*_render_journal(report["journal"]), ""] if "journal" in report else []),
        *(_render_stores(report["stores"]) if "stores" in report else []),
        *(_render_joins(report["joins"]) if "joins" in report else []),
        *(_render_announce(report["announce"]) if "announce" in report else []),
        _render_asyncio(report["asyncio"]),
        "",
        *([_render_mcp(report["mcp"]), ""] if "mcp" in report else []),
        *(f"{line}." for line in report.get("skipped", [])),
        "",
        *_render_shapes(report["shapes"]),
        "",
        *_render_compose(report["compose"]),
        "",
        *(_render_ray(report["ray"]) if "ray" in report else []),
    ]
    if report.get("quick"):
        lines.append("Quick mode (tiny sizes, one sample each): no target is judged.")
        return "\n".join(lines)
    lines += ["| target | goal | measured | met |", "|---|---:|---:|:---:|"]
    for name, row in report["targets"].items():
        value = "n/a" if row["measured"] is None else f"{row['measured']:.2f}"
        met = "n/a" if row["met"] is None else ("yes" if row["met"] else "**no**")
        lines.append(f"| {name} | {row['target']} | {value} | {met} |")
    return "\n".join(lines)


def _render_shapes(shapes: dict[str, Any]) -> list[str]:
    low, high = shapes.get("token_range", (200, 2000))
    lines = [
        f"| speed as users get it (K={low} vs {high}) | Troupe µs/token | limit µs/token "
        "| Troupe ÷ limit | limit, each read a cancel point | Troupe ÷ that |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in shapes["tokens"].items():
        spread = _spread(row.get("troupe_us_each"), "{:.2f}")
        checked = row.get("limit_cancel_points_us")
        lines.append(
            f"| {name} | {row['troupe_us']:.2f}{spread} | {row['limit_us']:.2f} "
            f"| {row['ratio']:.2f}x "
            + (
                f"| {checked:.2f} | {row['ratio_to_limit_cancel_points']:.2f}x |"
                if checked is not None
                else "| | |"
            )
        )
    for row in shapes["concurrent"]:
        lines += [
            "",
            f"{row['runs']:,} concurrent runs (K={row['tokens']}, a chunk per token, a "
            f"scheduler pass every {row['yield_every']} tokens, consumers reading): "
            f"{row['troupe_runs_per_second']:,.0f} runs/s; the limit (as many raw "
            f"pipelines) {row['limit_runs_per_second']:,.0f} runs/s; the garbage "
            f"collector took {row['gc_share']:.0%} of the wall time"
            + (f" ({row['limit_gc_share']:.0%} of the limit's)" if "limit_gc_share" in row else "")
            + f"; {row['rss_per_run_kib']:.1f} KiB per run."
            + (
                f" The design's floor (raw trio with a cat agent run's tasks and hops, each "
                f"read a cancel point): {row['design_floor_runs_per_second']:,.0f} runs/s, "
                f"Troupe {row['ratio_to_design_floor']:.2f}x of it, collector "
                f"{row['design_floor_gc_share']:.0%}."
                if "design_floor_runs_per_second" in row
                else ""
            )
            + (
                f" The run's floor (raw trio doing what the promises and issue 29 require "
                f"of the run, events and a cancel scope per request included; "
                f"benchmarks/_floor.py): {row['run_floor_runs_per_second']:,.0f} runs/s, "
                f"{row['run_floor_over_limit']:.2f}x the limit's; Troupe "
                f"{row['troupe_over_run_floor']:.2f}x the floor's."
                if "run_floor_runs_per_second" in row
                else ""
            ),
        ]
    return lines


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _render_compose(compose: dict[str, Any]) -> list[str]:
    low, high = compose["token_range"]
    lines = [
        f"| agents that compose (K={low} vs {high}, reading) | µs per token |",
        "|---|---:|",
    ]
    for name, value in compose["us_per_token"].items():
        lines.append(f"| {name} | {value:.2f} |")
    passes = compose["guardrail_passes_per_token"]
    lines += [
        "",
        "Agent as a tool ÷ top-level agent, per token: "
        + _figure(compose["as_tool_over_top_level"])
        + " "
        f"(median of {compose['rounds']} rounds' ratios); a passing guardrail costs "
        f"{compose['guardrail_extra_us']:+.2f} µs per token, "
        + _figure(passes)
        + f" scheduler passes (one is {compose['scheduler_pass_us']:.2f} µs here).",
    ]
    return lines


def _render_isolation(row: dict[str, Any]) -> str:
    return (
        f"Isolation, {row['runs']:,} concurrent runs (K={row['tokens']}, a chunk per token, "
        f"consumers reading): {row['clean_runs_per_second']:,.0f} runs/s, "
        f"{row['stalled_runs_per_second']:,.0f} runs/s beside one stalled consumer: "
        f"ratio {row['ratio']:.2f}{_spread(row['ratios'], '{:.2f}')}."
    )


def _render_soak(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| memory soak (one runtime, a fresh Agent per run) | RSS (MiB) along the way "
        "| RSS growth over the second half | tracked objects along the way | their growth |",
        "|---|---|---:|---|---:|",
    ]
    for row in rows:
        what = (
            f"{row['total']:,} runs one after another"
            if row["mode"] == "sequential"
            else f"{row['rounds']} rounds of {row['runs_at_once']:,} at once"
        )
        curve = ", ".join(f"{c['rss_kib'] / 1024:.1f}" for c in row["curve"])
        objects = ", ".join(f"{c['objects'] / 1000:.0f}k" for c in row["curve"])
        lines.append(
            f"| {what} | {curve} | {row['rss_growth_second_half_pct']:+.2f} % "
            f"| {objects} | {row['objects_growth_second_half']:+,.0f} |"
        )
    return lines


def _render_http(http: dict[str, Any]) -> list[str]:
    encode = http["encode_us_per_token_event"]
    history = http["history"]
    lines = [
        "HTTP edge, encoding one token event: "
        + ", ".join(f"{name} {us:.2f} µs" for name, us in encode.items())
        + ".",
        "",
        f"A {history['messages']}-message conversation into the agent's request: "
        + ", ".join(
            f"{name} {history[name]['ms']:.2f} ms ({history[name]['over_json']:.1f}x "
            f"json.loads of its body, {history[name]['json_ms']:.2f} ms)"
            for name in ("ag-ui", "ui-message-stream")
        )
        + f"; medians of {history['rounds']} alternating rounds.",
        "",
        "| SSE streams at once (cat agent; client in another process) | runs/s "
        "| token events/s on the wire | server RSS per open stream (KiB) |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {row['streams']:,} | {row['runs_per_second']:,.0f} | "
        f"{row['events_per_second']:,.0f} | {row['server_rss_per_stream_kib']:.1f} |"
        for row in http["streams"]
    ]
    floors = {row["streams"]: row for row in http.get("paced_floor", [])}
    for row in http["paced"]:
        floor = floors.get(row["streams"])
        lines += [
            "",
            f"{row['streams']:,} streams of a model making 10 tokens/s each: token latency "
            f"p50 {row['latency_ms_p50']:.2f} ms, p99 {row['latency_ms_p99']:.2f} ms "
            f"(production to arrival at the client); server RSS per open stream "
            f"{row['server_rss_per_stream_kib']:.1f} KiB{_cpu(row)}."
            + (
                f" The bare hypercorn app writing the same bytes, in the same run: "
                f"p50 {floor['latency_ms_p50']:.2f} ms, p99 {floor['latency_ms_p99']:.2f} ms"
                f"{_cpu(floor)}."
                if floor
                else ""
            )
            + (
                f" Medians of {row['rounds']} rounds, each row beside its floor's."
                if row.get("rounds", 1) > 1
                else ""
            ),
        ]
    return lines


def _cpu(row: dict[str, Any]) -> str:
    """A paced row's server CPU, where the row has it (runs before it was measured don't)."""
    if "server_cpu_share" not in row:
        return ""
    over = row.get("server_cpu_over_floor")
    per_token = (
        f" ({row['server_cpu_us_per_token_event']:.0f} µs per token event less its start "
        "and end" + (f": {over:.2f}x the floor's" if over is not None else "") + ")"
        if "server_cpu_us_per_token_event" in row
        else ""
    )
    return (
        f"; server CPU {row['server_cpu_ms_per_stream']:.2f} ms per stream{per_token}, "
        f"{row['server_cpu_share']:.0%} of one core while the streams ran"
    )


def _render_ray(ray: dict[str, Any]) -> list[str]:
    lines = [
        "| across a Ray cluster's edge (local cluster, host and driver on this machine) "
        "| events/s | in process |",
        "|---|---:|---:|",
        f"| one run, a new chunk per token, read | {ray['events_per_second_one_run']:,.0f} "
        f"| {ray['local_events_per_second_one_run']:,.0f} |",
        f"| {ray['concurrent_runs']} runs at once | {ray['events_per_second_concurrent']:,.0f} "
        f"| {ray['local_events_per_second_concurrent']:,.0f} |",
        "",
    ]
    lines += [
        f"{row['streams']} stream(s) at {row['tokens_per_second']:.0f} tokens/s: latency "
        f"p50 {row['latency_ms_p50']:.2f} ms, p99 {row['latency_ms_p99']:.2f} ms "
        "(production on the host to arrival in the driver's loop)."
        for row in ray["paced"]
    ]
    lines += [
        f"A driver's cancel comes back as the run's cancelled end in "
        f"{ray['cancel_ms_p50']:.1f} ms (median), {ray['cancel_ms_max']:.1f} ms at most; "
        f"host actor RSS {ray['host_rss_kib_idle'] / 1024:.0f} MiB idle, "
        f"{ray['host_rss_kib_after'] / 1024:.0f} MiB after the 100 runs.",
        "",
    ]
    return lines


def _journal_cpu(row: dict[str, Any]) -> str:
    """A journal row's CPU ratios (of the process, of trio's thread) and its runs' wait
    at their end, where it has them."""
    if "cpu_ratio" not in row:
        return ""
    waits = f"; a run's end waits {row['end_wait_ms']:.1f} ms" if "end_wait_ms" in row else ""
    return f" (CPU {row['cpu_ratio']:.2f}x, trio's thread {row['trio_cpu_ratio']:.2f}x{waits})"


def _render_journal(journal: dict[str, Any]) -> list[str]:
    lines = ["Run journal, the cat agent (a network-shaped model, events read):"]
    for key in (
        "ratio_at_100",
        "ratio_at_100_full_sync",
        "ratio_at_100_normal_sync",
        "ratio_at_1000",
        "ratio_at_1000_full_sync",
        "ratio_at_100_postgres",
        "ratio_at_100_postgres_full_sync",
        "ratio_at_100_postgres_no_sync",
    ):
        row = journal.get(key)
        if row is None:
            continue
        if "skipped" in row:
            if key == "ratio_at_100_postgres":
                lines.append(f"  on PostgreSQL: skipped ({row['skipped']})")
            continue
        where = "PostgreSQL" if row.get("store") == "postgresql" else f"SQLite, {row['sqlite']}"
        lines.append(
            f"  {row['runs']} runs at once (K={row['tokens']}, {row.get('sync', where)}): "
            f"{row['ratio']:.2f}x the runtime without a store"
            f"{_spread(row['ratios'], '{:.2f}')}{_journal_cpu(row)}; "
            "floors: a lossless watcher alone "
            f"{row['watcher_ratio']:.2f}x, the store writing the same batches alone "
            f"{row['store_alone_ratio']:.2f}x"
        )
    alone = journal["store_alone_at_100"]
    lines.append(
        f"  the store's writes alone: {alone['us_per_token']:.2f} us per token; a thread of "
        f"{journal['thread_load']['messages']} messages loads in "
        f"{journal['thread_load']['median_ms']:.2f} ms before each run "
        f"({journal['thread_load']['cold_ms']:.2f} ms the first time)"
        + (
            f", made by {journal['thread_load_turns']['messages'] // 2} turns "
            f"{journal['thread_load_turns']['median_ms']:.2f} ms "
            f"({journal['thread_load_turns']['cold_ms']:.2f} ms the first time)"
            if "thread_load_turns" in journal
            else ""
        )
        + "; a finished run "
        f"reads back at {journal['read_back']['events_per_second']:,.0f} events/s"
        f"{_postgres_read_back(journal)}"
    )
    replay, many = journal["replay"], journal["resume_many"]
    lines.append(
        f"  replaying a run paused after {replay['steps']} steps to its pause point: "
        f"{replay['replay_to_pause_ratio']:.2f}x running them live"
        f"{_spread(replay['replay_to_pause_ratios'], '{:.2f}')} by CPU time (the whole "
        f"resume, the approved call and the next turn in: {replay['resume_ratio']:.2f}x; "
        f"reading its journal back alone: {replay['read_back_ratio']:.2f}x); "
        f"{many['runs']} paused runs resumed at once: {many['runs_per_second']:,.0f} runs/s"
    )
    return lines


def _postgres_read_back(journal: dict[str, Any]) -> str:
    row = journal.get("read_back_postgres", {})
    if "events_per_second" not in row:
        return ""
    return f" ({row['events_per_second']:,.0f} on PostgreSQL)"


def _render_stores(stores: dict[str, Any]) -> list[str]:
    measured = {name: row for name, row in stores.items() if "skipped" not in row}
    if not measured:
        return []
    segment = next(iter(measured.values()))["write"]["segment"]
    lines = [
        f"| journal store alone | write: records/s (segments of {segment}, a write per "
        "round of every tree's segment) | ms per write | small writes/s (10 records) "
        "| read back 10,000 records: records/s |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {name} ({row['write']['runs']} trees at once) "
        f"| {row['write']['records_per_second']:,.0f} | {row['write']['write_ms_median']:.2f} "
        f"| {row['small_writes']['writes_per_second']:,.0f} "
        f"| {row['read']['records_per_second']:,.0f} |"
        for name, row in measured.items()
    ]
    return [*lines, ""]


def _render_joins(joins: dict[str, Any]) -> list[str]:
    if "skipped" in joins:
        return []

    def ms(name: str) -> str:
        return f"{joins[name]['p50_ms']:.2f} / {joins[name]['p99_ms']:.1f} ms"

    return [
        "Across processes on PostgreSQL (p50 / p99 from a commit): a join sees a write in "
        f"{ms('join_notify')} with LISTEN/NOTIFY, {ms('join_poll')} looking every 0.1 s; "
        f"a cancel ends its run in {ms('cancel_notify')} heard, {ms('cancel_poll')} looked "
        f"for every 0.25 s (the write's own commit: {ms('commit')}). A lone process's "
        f"write with NOTIFY against without (as it now writes): "
        f"{joins['lone_write']['notify_p50_ms']:.3f} / {joins['lone_write']['quiet_p50_ms']:.3f}"
        f" ms, ratio {joins['lone_write']['ratio_p50']:.2f}.",
        "",
    ]


def _render_announce(announce: dict[str, Any]) -> list[str]:
    said = [
        f"{name} {row['headers_durable_ms']:.1f} ms against {row['headers_early_ms']:.1f} "
        f"(+{row['added_ms']:.1f})"
        for name, row in announce.items()
    ]
    return [
        "A streamed run's headers, sent once its record is journaled, against before: "
        + "; ".join(said)
        + ".",
        "",
    ]


def _render_asyncio(row: dict[str, Any]) -> str:
    us = row["us_per_token"]
    low, high = row["tokens"]
    return (
        f"Read from asyncio (actors.aio), the cat agent on a network-shaped model, events "
        f"read (K={low} vs {high}): {us['trio']:.2f} µs per token inside trio, "
        f"{us['thread']:.2f} with trio in a thread (ratio {row['ratio_thread']:.2f}"
        f"{_spread(row.get('ratios_thread'), '{:.2f}')}), {us['guest']:.2f} as a guest on "
        f"the loop (ratio {row['ratio_guest']:.2f}{_spread(row.get('ratios_guest'), '{:.2f}')})."
    )


def _render_mcp(row: dict[str, Any]) -> str:
    return (
        f"A tool call through an MCP server over stdio ({row['calls']} calls): "
        f"{row['us_per_call_troupe']:.0f} µs as a Troupe tool run, "
        f"{row['us_per_call_alone']:.0f} µs by the mcp client alone: {_ratio(row)}."
    )


def _ratio(row: dict[str, Any]) -> str:
    """A row's median ratio, and its rounds' spread."""
    return f"ratio {row['ratio']:.2f}{_spread(row['ratios'], '{:.2f}')}"


def _render_otel(row: dict[str, Any]) -> str:
    return (
        f"OpenTelemetry export, the cat agent (K={row['tokens']}, a network-shaped model, "
        f"events read), {row['runs']} runs: {row['ms_per_run_without']:.2f} ms per run "
        f"without the exporter, {row['ms_per_run_with']:.2f} ms with it (batch span "
        f"processor): {_ratio(row)}."
    )
