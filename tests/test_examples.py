"""The ports of the seed's loops under examples/ run and print what the seed's print."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=EXAMPLES,
        env={**os.environ, "CAT_SEED": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def test_steps_loop() -> None:
    assert run_example("steps_loop.py").split("---\n") == [
        "Calling Tool: `where_cat_is_hiding` with input `{}`\n",
        "Tool Result: `on the shelf`\n",
        "Calling Tool: `get_items` with input `{'place': 'shelf'}`\n",
        "Tool Result: `books, penciles and pictures`\n",
        "Final Output: The cat is currently hiding on the shelf. In that location, you can "
        "find books, penciles and pictures.\n",
        "",
    ]


def test_events_loop() -> None:
    lines = run_example("events_loop.py").splitlines()
    assert lines[0].startswith("Starting agent: Agent with input: {'input': 'where is the cat")
    assert lines[2:5] == [
        "Starting tool: where_cat_is_hiding with inputs: {}",
        "Done tool: where_cat_is_hiding",
        "Tool output was: on the shelf",
    ]
    assert lines[7] == "Starting tool: get_items with inputs: {'place': 'shelf'}"
    assert lines[11].startswith("The| cat| is| currently| hiding| on| the| shelf|.|")
    assert lines[-1].startswith("Done agent: Agent with output: The cat is currently hiding")


def test_run_log_loop_accumulates_each_path() -> None:
    blocks = run_example("run_log_loop.py").split("----\n")
    assert blocks[-1] == ""
    chunk_paths = [b for b in blocks if b.startswith("/logs/ScriptedChatModel:3/streamed_output/-")]
    # the chunks of the answer add up, token by token, to the whole answer
    growing = [b.splitlines()[1] for b in chunk_paths]
    assert growing[0].startswith("AssistantMessageChunk(content='The'")
    assert growing[-1].startswith(
        "AssistantMessageChunk(content='The cat is currently hiding on the shelf. In that location"
    )
    assert any(b.startswith("/final_output") for b in blocks)


def test_token_by_token_handler() -> None:
    out = run_example("token_by_token.py")
    assert out.startswith(
        "on chain start: \n{'input': 'where is the cat hiding and what items can be found there?'}"
    )
    assert (
        "Tool start\n{'name': 'where_cat_is_hiding', 'kind': 'tool'}\nTool end\non the shelf" in out
    )
    assert "tool_llm: books| (|to| read|)|,|" in out
    assert "agent_llm: The| cat| is| currently| hiding| on| the| shelf|.|" in out
    assert "On chain end\nAgentOutput(" in out
