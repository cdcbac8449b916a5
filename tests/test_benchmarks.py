"""The benchmarks stay runnable: a tiny smoke of each. No timing is judged here."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks._run import OPTIONAL, TARGETS, _installed

ROOT = Path(__file__).resolve().parent.parent


def _benchmark(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m module args...`` from the repository's root, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )


def test_the_quick_benchmark_runs_and_reports_every_figure(tmp_path: Path) -> None:
    # Its PostgreSQL rows are smoked in the PostgreSQL step (the test below): here they
    # would start throwaway clusters on every run of the main suite.
    out = tmp_path / "bench.json"
    done = _benchmark("benchmarks", "--quick", "--no-postgres", "--json", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert set(report["tokens"]) == {"events", "steps", "invoke", "raw", "ratio_to_raw"}
    for mode in ("events", "steps", "invoke", "raw"):
        assert report["tokens"][mode]["us_per_token"] == report["tokens"][mode]["us_per_token"]
    events_per_run = report["tokens"]["events"]["items_per_run"]
    assert events_per_run[1] - events_per_run[0] == 180  # one stream event per token
    assert [row["runs"] for row in report["concurrency"]] == [1, 10]
    for row in report["concurrency"]:
        assert row["completed"] == row["runs"] and row["protocol_violations"] == 0
    assert report["cancellation"]["leaked_tasks"] == 0
    assert report["isolation"]["clean_runs_per_second"] > 0
    assert report["isolation"]["stalled_runs_per_second"] > 0
    for row in report["soak"]:
        assert row["curve"][-1]["actors"] <= 3  # a fresh Agent per run leaves none behind
        assert row["curve"][-1]["pending_subscriptions"] == 0
    # quick mode is a smoke: it judges no target (tiny sizes, one sample each)
    assert report["targets"] == {}
    assert "no target is judged" in done.stdout
    assert report["otel"]["ms_per_run_with"] > 0 and report["otel"]["ms_per_run_without"] > 0
    assert report["joins"] == {"skipped": "--no-postgres given"}
    assert "joins across processes: skipped, --no-postgres given" in done.stdout
    assert set(report["announce"]) == {"sqlite"}  # PostgreSQL's row: the test below
    row = report["announce"]["sqlite"]
    assert row["headers_durable_ms"] > 0 and row["headers_early_ms"] > 0 and row["n"] == 5
    http = report["http"]
    assert set(http["encode_us_per_token_event"]) == {
        "events",
        "ag-ui",
        "ui-message-stream",
        "compact",
    }
    assert [row["streams"] for row in http["streams"]] == [1, 10]
    for name in ("ag-ui", "ui-message-stream"):
        assert http["history"][name]["ms"] > 0 and http["history"][name]["over_json"] > 0
    assert "200-message conversation into the agent's request" in done.stdout
    assert http["paced"][0]["latency_ms_p99"] >= http["paced"][0]["latency_ms_p50"] > 0
    floor = http["paced_floor"][0]  # the bare hypercorn app, read by the same client
    assert floor["streams"] == http["paced"][0]["streams"]
    assert floor["latency_ms_p99"] >= floor["latency_ms_p50"] > 0
    # What the server spent, read from /proc in clock ticks (10 ms): the floor's few
    # streams may take less than one.
    assert http["paced"][0]["server_cpu_ms_per_stream"] > 0
    assert 0 < http["paced"][0]["server_cpu_share"] < 1.5 and 0 <= floor["server_cpu_share"] < 1.5
    assert "ms per stream, " in done.stdout and "of one core while the streams ran" in done.stdout
    assert "The bare hypercorn app writing the same bytes" in done.stdout
    assert http["paced"][0]["rounds"] == floor["rounds"] == 1
    assert "| full event stream consumed |" in done.stdout
    shapes = report["shapes"]
    assert set(shapes["tokens"]) == {
        "fast path",
        "chunk per token, reading",
        "chunk per token, yield per token, reading",
    }
    for row in shapes["tokens"].values():  # slopes of tiny runs: any sign on a busy machine
        assert math.isfinite(row["limit_us"]) and math.isfinite(row["troupe_us"])
        assert row["ratio"] == row["troupe_us"] / row["limit_us"]
    assert shapes["concurrent"][0]["troupe_runs_per_second"] > 0
    # the collector's share of the limit too: what trio's own pipelines pay
    assert 0 <= shapes["concurrent"][0]["limit_gc_share"] < 1
    assert "of the limit's)" in done.stdout
    assert "| chunk per token, yield per token, reading |" in done.stdout
    # the journal's stores: SQLite always; PostgreSQL where its extra and server are
    stores = report["stores"]
    measured = [name for name, row in stores.items() if "skipped" not in row]
    assert "sqlite" in measured
    for name in measured:
        assert stores[name]["read"]["records"] == 10_000
        assert stores[name]["read"]["records_per_second"] > 0
        assert stores[name]["write"]["records_per_second"] > 0
        assert stores[name]["small_writes"]["writes_per_second"] > 0
        assert f"| {name} (" in done.stdout
    assert stores["postgres"] == {"skipped": "--no-postgres given"}
    assert "postgres store: skipped, --no-postgres given" in done.stdout
    # the journal's cost against no store, SQLite always, PostgreSQL where it can run
    journal = report["journal"]
    assert journal["ratio_at_100"]["ratio"] > 0 and journal["ratio_at_1000"]["ratio"] > 0
    assert journal["ratio_at_100_postgres"] == {"skipped": "--no-postgres given"}
    assert "on PostgreSQL: skipped" in done.stdout
    ecosystem = report["asyncio"]  # slopes of tiny runs: any sign on a busy machine
    assert set(ecosystem["us_per_token"]) == {"trio", "thread", "guest"}
    assert all(math.isfinite(ecosystem[k]) for k in ("ratio_thread", "ratio_guest"))
    assert "Read from asyncio (actors.aio)" in done.stdout
    if _installed("mcp"):
        assert report["mcp"]["us_per_call_alone"] > 0 and report["mcp"]["ratio"] > 0
        assert "A tool call through an MCP server over stdio" in done.stdout
    compose = report["compose"]
    assert set(compose["us_per_token"]) == {
        "top-level agent",
        "agent as a tool",
        "passing input guardrail",
        "scheduler pass per token",
    }
    assert len(compose["us_per_token_each"]["agent as a tool"]) == compose["rounds"] == 1
    assert "Agent as a tool ÷ top-level agent, per token" in done.stdout


def _quick(module: str) -> dict[str, Any]:
    done = _benchmark(f"benchmarks.{module}", "--quick")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.mark.postgres
def test_the_benchmarks_postgresql_rows_run(postgres_cluster: object) -> None:
    # postgres_cluster: PostgreSQL can run here (or the test skips, or fails where it is
    # required); each benchmark starts a throwaway cluster of its own, fsync on.
    stores = _quick("_stores")["postgres"]
    assert stores["read"]["records"] == 10_000 and stores["read"]["records_per_second"] > 0
    assert stores["write"]["records_per_second"] > 0
    assert stores["small_writes"]["writes_per_second"] > 0
    joins = _quick("_joins")
    for row in ("join_notify", "join_poll", "cancel_notify", "cancel_poll", "commit"):
        assert joins[row]["p99_ms"] >= joins[row]["p50_ms"] > 0
    lone = joins["lone_write"]
    assert lone["notify_p50_ms"] > 0 and lone["quiet_p50_ms"] > 0 and lone["pairs"] == 10
    rows = _quick("_journal")
    journal = rows["ratio_at_100_postgres"]
    assert journal["ratio"] > 0 and journal["store"] == "postgresql"
    assert journal["end_wait_ms"] > 0 and journal["gc_ms"] >= 0
    unsynced = rows["ratio_at_100_postgres_no_sync"]  # the floor of any syncing
    assert unsynced["ratio"] > 0 and unsynced["sync"] == "PostgreSQL, no commit synced"
    announce = _quick("_announce")["postgres"]
    assert announce["headers_durable_ms"] > 0 and announce["headers_early_ms"] > 0


def test_the_replay_rows_callgrind_sections_run_outside_callgrind() -> None:
    # (outside callgrind the marks, os.getppid and os.getpgrp, are harmless calls)
    done = _benchmark("benchmarks._journal", "--replay-sections", "3", "1", "2")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {}


def test_the_ratio_rows_callgrind_sections_run_outside_callgrind() -> None:
    done = _benchmark("benchmarks._journal", "--ratio-sections", "3", "1", "2")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {}


def test_the_dict_face_sections_run_outside_callgrind_and_read_in_order() -> None:
    from benchmarks._dict_face import EVENT_SECTIONS, RUN_SECTIONS, read_counts

    done = _benchmark("benchmarks._dict_face", "--sections", "1", "100")
    assert done.returncode == 0, done.stderr
    # a round: the event loops (empty first), then the run sections in their order
    events = [1000, 3000, 9000, 5000, 7000]
    runs = [5000, 1000, 2400, 400, 5600, 200]
    assert len(events) == len(EVENT_SECTIONS) and len(runs) == len(RUN_SECTIONS)
    counts = read_counts([*events, *runs], 1, 1000)
    assert counts["per_event"] == [
        {"made": 2.0, "seed_loop": 8.0, "typed": 4.0, "plain_dicts": 6.0}
    ]
    assert counts["per_run"] == [{"K200": 20.0, "K1": 10.0, "per_token": 1.0}]


def test_the_per_token_sections_run_outside_callgrind_and_read_in_order() -> None:
    from benchmarks._per_token import HIGH, LOW, RUNS, read_counts

    done = _benchmark("benchmarks._per_token", "--sections", "1", "100")
    assert done.returncode == 0, done.stderr
    # a round: each shape at K=HIGH, then at K=LOW (Troupe, the limit, the limit
    # with a cancel point per read, that one moving Troupe's objects)
    tokens = RUNS * (HIGH - LOW)
    counted = [7, 1, 3, 2, 4, 2, 7, 1]
    counts = read_counts([n * tokens for n in counted], 1)
    assert counts == [
        {
            "troupe": 6.0,
            "limit": 1.0,
            "limit_cancel_points": 2.0,
            "limit_events": 6.0,
            "over_limit_cancel_points": 3.0,
            "over_limit": 6.0,
            "over_limit_events": 1.0,
        }
    ]
    assert read_counts([3 * tokens, tokens], 1, ["troupe"]) == [{"troupe": 2.0}]


def test_the_per_token_opcodes_are_counted_by_function() -> None:
    from benchmarks._per_token import opcodes

    by_function = opcodes("limit", scale=10)
    # the raw limit's own producer and consumer run per token
    assert any(name.endswith(" _produce") for name in by_function), by_function
    assert any(name.endswith(" _consume") for name in by_function), by_function


def test_callgrind_sections_are_read_in_order_and_only_the_closed_ones(tmp_path: Path) -> None:
    from benchmarks._timing import callgrind_sections

    prefix = str(tmp_path / "cg")
    dumps = {
        1: ("Client Request: getppid", 5),  # (a dump at a zeroing: not a section)
        2: ("Dump Before getpgrp", 300),
        10: ("Dump Before getpgrp", 200),
        3: ("Dump Before getpgrp", 100),
        4: ("Program termination", 7),
    }
    for number, (trigger, total) in dumps.items():
        Path(f"{prefix}.{number}").write_text(f"desc: Trigger: {trigger}\nsummary: {total}\n")
    Path(f"{prefix}.plan.json").write_text("{}")
    assert callgrind_sections(prefix) == [300, 100, 200]


def test_bad_benchmark_flags_fail_clearly() -> None:
    done = _benchmark("benchmarks", "--repeat", "0")
    assert done.returncode == 2 and "--repeat must be at least 1" in done.stderr


def test_soak_growth_compares_the_halves_medians_after_the_warm_up() -> None:
    from benchmarks._soak import growth

    # Before any run, the warm-up, then a plateau whose samples wobble: no growth.
    assert growth([40, 220, 240, 255, 245, 250, 250, 240, 255, 245]) == (0.0, 0.0)
    # A leak: every sample higher than the one before.
    kib, pct = growth([40, 220, 230, 240, 250, 260, 270, 280])
    assert kib == 30 and pct == 100.0 * 30 / 240
    with pytest.raises(ValueError, match="at least 4 samples"):
        growth([40, 220, 230])


def test_a_median_interval_is_the_kth_lowest_and_highest_of_the_rounds() -> None:
    from benchmarks._timing import median_interval

    # 9 rounds: the 2nd lowest and 2nd highest cover the median 1 - 2 * 10 / 512.
    nine = median_interval([1.5, 1.2, 1.9, 1.3, 1.4, 1.1, 1.6, 1.7, 1.45])
    assert nine == {"low": 1.2, "high": 1.7, "coverage": 1 - 20 / 512}
    # 5 rounds: no k above 1 covers 95 %, so the extremes, and how little they cover.
    assert median_interval([3.0, 1.0, 2.0, 5.0, 4.0]) == {
        "low": 1.0,
        "high": 5.0,
        "coverage": 1 - 2 / 32,
    }
    # A lower confidence narrows it; the interval always holds the median.
    assert median_interval(list(range(9)), confidence=0.8) == {
        "low": 2,
        "high": 6,
        "coverage": 1 - 2 * 46 / 512,
    }
    with pytest.raises(ValueError, match="at least one value"):
        median_interval([])


def test_every_target_is_judged_in_a_full_run() -> None:
    assert set(TARGETS) == {
        "us_per_token",
        "ratio_to_raw",
        "runs_per_second_at_1000",
        "rss_per_run_kib_at_10000",
        "cancel_p99_ms",
        "isolation_ratio",
        "soak_sequential_growth_pct",
        "soak_concurrent_growth_pct",
        "http_encode_us_per_token",
        "http_p99_ms_at_10_tokens_per_s",
        "http_rss_per_stream_kib",
        "http_server_cpu_over_floor",
        "history_200_messages_ms",
        "chunk_per_token_us",
        "yield_per_token_over_limit",
        "user_shaped_runs_per_second_at_1000",
        "otel_ratio",
        "as_tool_over_top_level",
        "guardrail_passes_per_token",
        "ray_events_per_second_one_run",
        "ray_events_per_second_100_runs",
        "ray_p99_ms_at_100_tokens_per_s",
        "ray_cancel_ms",
        "sqlite_read_records_per_second",
        "postgres_read_records_per_second",
        "journal_sqlite_ratio_at_100",
        "journal_sqlite_ratio_at_1000",
        "journal_postgres_ratio_at_100",
        "asyncio_over_trio_per_token",
        "mcp_call_over_client_alone",
    }


def test_a_benchmark_whose_extra_is_missing_is_skipped() -> None:
    assert not _installed("no_such_module_for_troupe")
    assert not _installed("no_such_package_for_troupe.sub")
    assert _installed("trio")
    assert set(OPTIONAL) == {"http", "otel", "mcp"}


def _serve_soak_is_sane(report: dict[str, Any], store: str) -> None:
    """What a quick soak of ``troupe serve`` on ``store`` measured is what it says."""
    from benchmarks._serve_soak import GROWN, Users

    assert report["store"] == store and report["retention"] == 2
    assert report["unexpected"] == 0, report["surprises"]
    assert report["server_log"] == []  # the server logged no warning, no traceback
    for action, _ in Users.ACTIONS:  # each user does every action once, first
        assert report["actions"][action] >= report["users"], action
    answers = report["answers"]
    for refused in ("bad 404 run 404", "bad 422 thread id 422", "bad 409 thread taken 409"):
        assert answers[refused] == report["actions"]["bad_requests"]
    curve = report["curve"]
    assert len(curve) >= 4 and curve[0]["seconds"] == 0
    for sample in curve:
        assert sample["rss_kib"] > 10_000 and 3 <= sample["fds"] < 200
        assert 1 <= sample["threads"] < 50 and 1 <= sample["tasks"] < 1_000
        assert sample["objects"] > 0 and sample["actors"] >= 1 and sample["open_runs"] >= 1
        assert sample["troupe_owners"] == 1  # the one server process
        assert sample["python_blocks"] > 0 and sample["heap_in_use_kib"] > 0
        # the server's own tables, found from its tasks (the ones the app keeps, the
        # runtime's, its journal's)
        assert sample["table Server.performers"] == 4  # cat, slow, payer, probe
        assert sample["table LiveRuns._live"] >= 1  # the probe's own run, at least
        assert "table Journal._trees" in sample and "table Tracer._runs" in sample
    assert max(sample["troupe_runs"] for sample in curve) > curve[0]["troupe_runs"]
    # Once a retention (2 s) has gone by after the users stopped, the store holds only
    # the runs of the samples since (each sample is a run of the probe): every other
    # run, thread and message is deleted (paused runs nobody resumed too).
    after = report["after_retention"]
    assert after["troupe_runs"] <= 2 and after["troupe_threads"] == 0
    assert after["troupe_message_segments"] == 0 and after["troupe_cancels"] == 0
    assert after["troupe_segments"] <= 2 * after["troupe_runs"]
    growth = report["growth"]
    assert {k for k in growth if not k.startswith("table ")} - {"types_grown"} <= set(GROWN)
    for key in ("rss_kib", "fds", "threads", "tasks", "objects", "troupe_runs"):
        assert growth[key]["last"] == curve[-1][key]
    assert curve[-1]["types"] and growth["types_grown"]


def test_the_serve_soak_runs_a_server_with_a_store_and_samples_it() -> None:
    done = _benchmark("benchmarks._serve_soak", "--quick", "--store", "sqlite")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == {"sqlite"}
    _serve_soak_is_sane(report["sqlite"], "sqlite")
    for sample in report["sqlite"]["curve"]:
        assert sample["db-file_kib"] >= 0 and sample["db-wal_kib"] >= 0


@pytest.mark.postgres
def test_the_serve_soak_runs_on_postgresql(postgres_cluster: object) -> None:
    # (postgres_cluster: PostgreSQL can run here; the soak starts a cluster of its own)
    done = _benchmark("benchmarks._serve_soak", "--quick", "--store", "postgres")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)["postgres"]
    _serve_soak_is_sane(report, "postgresql")
    for sample in report["curve"]:
        assert sample["troupe_runs_kib"] > 0 and 1 <= sample["connections"] < 50


def test_the_floor_sections_run_outside_callgrind_and_read_in_order() -> None:
    from benchmarks._floor import read_counts

    done = _benchmark("benchmarks._floor", "--sections", "1", "50")  # every row
    assert done.returncode == 0, done.stderr
    # a round: each row (raw, floor, Troupe), its sections 300 and 100 runs at K=200,
    # then at K=1
    rows = ("raw", "floor", "troupe")
    counts = read_counts([500, 100, 220, 20, 900, 100, 420, 20, 1900, 100, 820, 20], 1, rows)
    assert counts["per_run"] == {
        "raw": {"K200": 2.0, "K1": 1.0},
        "floor": {"K200": 4.0, "K1": 2.0},
        "troupe": {"K200": 9.0, "K1": 4.0},
    }
    assert counts["floor_over_raw"] == 0.5 and counts["troupe_over_floor"] == pytest.approx(4 / 9)
