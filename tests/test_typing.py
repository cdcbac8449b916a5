"""A user's program is checked by ``mypy --strict``: typed events, generic streams and
tools (issue 13). The program is written to a file and checked as a user's would be."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy comes with the test extras")

GOOD = '''
from __future__ import annotations

import trio

from actors import Agent, ScriptedChatModel, ScriptedTurn, tool
from protocol import AssistantMessageChunk, StepChunk, TypedEvent
from runtime import ChunkStream, EventStream


@tool
async def where_cat_is_hiding() -> str:
    """Where is the cat hiding right now?"""
    return "under the bed"


@tool
def count_items(place: str) -> int:
    """How many items are there?"""
    return len(place)


model = ScriptedChatModel([ScriptedTurn("hi")])
agent = Agent(model, [where_cat_is_hiding, count_items])


async def main() -> None:
    place: str = await where_cat_is_hiding.ainvoke({})
    count: int = await count_items.ainvoke({"place": place})
    events: EventStream = agent.astream_events("where is the cat?")
    async with events:
        async for event in events:
            if event.event == "on_chat_model_stream":
                text: str = event.data.chunk.content
                print(text, count)
            elif event.event == "on_chat_model_end":
                print(event.data.output.usage_metadata)
            elif event.event == "on_chain_error":
                message: str = event.data.error
                print(message)
            any_event: TypedEvent = event
            print(any_event.name, event["name"])
    tokens: ChunkStream[AssistantMessageChunk] = model.astream("hi")
    async with tokens:
        async for chunk in tokens:
            print(chunk.content)
    steps: ChunkStream[StepChunk] = agent.astream("q")
    async with steps:
        async for step in steps:
            print(dict(step))


trio.run(main)
'''

BAD = '''
from __future__ import annotations

from actors import Agent, ScriptedChatModel, ScriptedTurn, tool


@tool
async def where_cat_is_hiding() -> str:
    """Where is the cat hiding right now?"""
    return "under the bed"


agent = Agent(ScriptedChatModel([ScriptedTurn("hi")]), [where_cat_is_hiding])


async def main() -> None:
    wrong: int = await where_cat_is_hiding.ainvoke({})
    async with agent.astream_events("q") as events:
        async for event in events:
            if event.event == "on_chat_model_strem":
                print(event)
            if event.event == "on_chat_model_stream":
                print(event.data.chunk.contnet, wrong)
    async with agent.astream("q") as steps:
        async for step in steps:
            print(step.outptu)
'''


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache for both checks: Troupe's packages are read once."""
    return tmp_path_factory.mktemp("mypy_cache")


def _mypy(tmp_path: Path, cache: Path, source: str) -> tuple[str, int]:
    program = tmp_path / "user_program.py"
    program.write_text(source)
    # In a process of its own: mypy raises the interpreter's recursion limit.
    options = ["--strict", "--no-error-summary", "--cache-dir", str(cache)]
    done = subprocess.run(
        [sys.executable, "-m", "mypy", *options, str(program)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,  # where Troupe's packages are
    )
    return done.stdout + done.stderr, done.returncode


def test_a_correct_program_type_checks(tmp_path: Path, cache: Path) -> None:
    report, status = _mypy(tmp_path, cache, GOOD)
    assert status == 0, report


def test_misspellings_and_wrong_types_are_reported(tmp_path: Path, cache: Path) -> None:
    report, status = _mypy(tmp_path, cache, BAD)
    assert status == 1
    errors = [line for line in report.splitlines() if ": error:" in line]

    def reported(*parts: str) -> bool:
        return any(all(part in line for part in parts) for line in errors)

    assert reported("Non-overlapping equality check", "on_chat_model_strem"), errors
    assert reported('"AssistantMessageChunk" has no attribute "contnet"'), errors
    assert reported('expression has type "str", variable has type "int"'), errors
    assert reported('has no attribute "outptu"'), errors
    lines = {line.split(":")[1] for line in errors}
    # those lines (21: the misspelt branch can never run), nothing else
    assert lines == {"17", "20", "21", "23", "26"}, errors
