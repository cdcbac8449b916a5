"""`troupe demo`, run as a user runs it: a subprocess, its output and exit status."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from actors.testing import check_events
from protocol import StreamEvent, converter

# The installed console script when there is one, else the same entry point via -m.
TROUPE = [
    shutil.which("troupe") or sys.executable,
    *([] if shutil.which("troupe") else ["-m", "actors"]),
]


def troupe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TROUPE, *args], capture_output=True, text=True, timeout=60, check=False)


def test_events_view_prints_the_seed_loop() -> None:
    done = troupe("demo", "--seed", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    question = "where is the cat hiding? what items are in that location?"
    assert lines[0] == f"Starting agent: Agent with input: {{'input': '{question}'}}"
    place = lines[4].removeprefix("Tool output was: ")
    assert place in ("under the bed", "on the shelf")
    spot = place.rsplit(" ", 1)[-1]
    items = "socks, shoes and dust bunnies" if spot == "bed" else "books, penciles and pictures"
    answer = f"The cat is currently hiding {place}. In that location, you can find {items}."
    assert lines[1:] == [
        "--",
        "Starting tool: where_cat_is_hiding with inputs: {}",
        "Done tool: where_cat_is_hiding",
        f"Tool output was: {place}",
        "--",
        "--",
        f"Starting tool: get_items with inputs: {{'place': '{spot}'}}",
        "Done tool: get_items",
        f"Tool output was: {items}",
        "--",
        "|".join(_tokens(answer)) + "|",
        "--",
        f"Done agent: Agent with output: {answer}",
    ]


def _tokens(text: str) -> list[str]:
    from actors import tokenize

    return tokenize(text)


def test_the_seed_picks_the_hiding_place() -> None:
    assert troupe("demo", "--seed", "7").stdout == troupe("demo", "--seed", "7").stdout
    places = {troupe("demo", "--seed", str(s)).stdout.splitlines()[4] for s in range(8)}
    assert len(places) == 2


def test_steps_view() -> None:
    done = troupe("demo", "--view", "steps", "--seed", "1", "--question", "where's my cat?")
    assert done.returncode == 0, done.stderr
    blocks = done.stdout.split("---\n")
    assert blocks[0] == "Calling Tool: `where_cat_is_hiding` with input `{}`\n"
    assert blocks[1].startswith("Tool Result: `")
    assert blocks[2].startswith("Calling Tool: `get_items` with input `{'place': '")
    assert blocks[3].startswith("Tool Result: `")
    assert blocks[4].startswith("Final Output: The cat is currently hiding ")
    assert blocks[5:] == [""]


def test_jsonl_view_is_the_event_stream_as_json() -> None:
    done = troupe("demo", "--view", "jsonl", "--nested", "--seed", "2")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert {"event", "name", "run_id", "parent_ids", "tags", "metadata", "data"} <= set(records[0])
    events = [converter.structure(r, StreamEvent) for r in records]
    runs = check_events(events)
    nested = [t for t in runs.values() if t.start.name == "Get Items LLM"]
    assert len(nested) == 1 and nested[0].start.tags == ("tool_llm",)
    tool_run = runs[nested[0].start.parent_ids[-1]]
    assert tool_run.start.name == "get_items"
    assert records[-1]["event"] == "on_chain_end"
    assert records[-1]["data"]["output"]["output"].startswith("The cat is currently hiding")


def test_nested_tokens_stream_inside_the_tool_run() -> None:
    done = troupe("demo", "--nested", "--seed", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    start = lines.index("Starting tool: get_items with inputs: {'place': 'bed'}")
    assert lines[start + 1].startswith("socks| (|soft|")
    assert lines[start + 2] == "Done tool: get_items"


def test_log_view_prints_the_patches() -> None:
    done = troupe("demo", "--view", "log", "--seed", "1")
    assert done.returncode == 0, done.stderr
    blocks = done.stdout.split("----\n")
    assert blocks[0] == ""
    assert blocks[1].startswith("RunLogPatch({'op': 'replace',\n  'path': '',")
    assert any("'path': '/logs/get_items'" in b for b in blocks)
    assert "'path': '/final_output'" in blocks[-1]


def test_callbacks_view_prints_every_call_with_its_run() -> None:
    done = troupe("demo", "--view", "callbacks", "--nested", "--seed", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("on_chain_start: Agent run=")
    assert lines[-1].startswith("on_chain_end: Agent run=")
    nested = [line for line in lines if line.startswith("on_llm_new_token: Get Items LLM")]
    assert nested and all("tags=['tool_llm']" in line for line in nested)
    assert all(" parent=" in line and " metadata=" in line for line in lines)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--view", "pretty"], "invalid choice: 'pretty'"),
        (["demo", "--seed", "x"], "invalid int value: 'x'"),
        (["demo", "--delay", "-1"], "must be a finite number of seconds >= 0"),
        (["demo", "--delay", "inf"], "must be a finite number of seconds >= 0, got inf"),
        (["demo", "--delay", "soon"], "expected a number of seconds, got 'soon'"),
        (["demo", "--question", "  "], "--question must not be empty"),
        (["demo", "--bogus"], "unrecognized arguments: --bogus"),
        (["demo", "--base-url", "http://localhost:1/v1"], "need --model NAME"),
        (["dance"], "invalid choice: 'dance'"),
        ([], "name a command"),
    ],
)
def test_bad_flags_fail_clearly(args: list[str], message: str) -> None:
    done = troupe(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""
