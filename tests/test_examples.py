"""The ports of the seed's loops under examples/ run and print what the seed's print."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from actors.testing import FakeOpenAI, FakeReply, FakeToolCall

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
# The examples import this checkout's packages (not those an editable install of
# another checkout would find first).
ENV = {**os.environ, "CAT_SEED": "1", "PYTHONPATH": str(ROOT)}


def run_example(name: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=EXAMPLES,
        env=ENV,
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


def test_triage_hands_off_to_either_specialist() -> None:
    assert run_example("triage_handoff.py").splitlines() == [
        "[Triage hands the conversation to Billing]",
        "  (invoice_status -> invoice A-17: paid on 2 December)",
        "Billing: Invoice A-17 was paid on 2 December; no refund is due.",
        "Answer: Invoice A-17 was paid on 2 December; no refund is due.",
    ]
    assert run_example("triage_handoff.py", "my router is down").splitlines() == [
        "[Triage hands the conversation to Tech]",
        "Tech: Turn the router off and on again, then wait a minute.",
        "Answer: Turn the router off and on again, then wait a minute.",
    ]


def test_researcher_as_a_tool_streams_inside_the_writers_tree() -> None:
    lines = run_example("researcher_tool.py").splitlines()
    assert "    Researcher [chain] starts (tags ['demo'])" in lines  # under the tool run
    assert "      search_notes [tool] starts (tags ['demo'])" in lines
    assert lines[-1] == "Answer: Cats are champion sleepers: up to 16 hours a day."


def test_structured_answer_comes_back_typed() -> None:
    assert run_example("structured_answer.py").splitlines() == [
        "pancakes: 20 minutes, with flour, milk, eggs",
        "(2 model turns)",
    ]


def _by_role(messages: list[dict[str, Any]]) -> Any:
    """A fake server's script for the three examples, a function of the request."""
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    tools_done = [m for m in messages if m["role"] == "tool"]
    if system.startswith("Hand every question"):
        return FakeReply(tool_calls=[FakeToolCall("transfer_to_billing", {})])
    if system.startswith("You answer questions about invoices"):
        if not tools_done:
            return FakeReply(tool_calls=[FakeToolCall("invoice_status", {"number": "B-2"})])
        return FakeReply("B-2 is paid.")
    if system.startswith("You suggest one recipe"):
        return FakeReply('{"dish": "toast", "minutes": 3, "ingredients": ["bread"]}')
    if system.startswith("Answer from the research notes"):
        if not tools_done:
            return FakeReply(tool_calls=[FakeToolCall("search_notes", {"topic": "naps"})])
        return FakeReply("Naps are good.")
    if not tools_done:
        return FakeReply(tool_calls=[FakeToolCall("researcher", {"input": "naps?"})])
    return FakeReply("Cats nap.")


async def test_the_examples_run_on_an_openai_compatible_server() -> None:
    async with FakeOpenAI(_by_role) as server:
        outputs = {}
        server_args = ["--model", "fake-model", "--base-url", server.base_url, "--api-key", "x"]
        for name in ("triage_handoff.py", "structured_answer.py", "researcher_tool.py"):
            done = await trio.run_process(
                [sys.executable, str(EXAMPLES / name), *server_args],
                capture_stdout=True,
                capture_stderr=True,
                cwd=EXAMPLES,
                env=ENV,
                check=False,
            )
            assert done.returncode == 0, done.stderr.decode()
            outputs[name] = done.stdout.decode().splitlines()
    assert outputs["triage_handoff.py"][-1] == "Answer: B-2 is paid."
    assert outputs["structured_answer.py"][0] == "toast: 3 minutes, with bread"
    assert outputs["researcher_tool.py"][-1] == "Answer: Cats nap."
    chef = next(r for r in server.requests if "recipe" in str(r.messages[0]))
    shape = chef.body["response_format"]  # asked natively, not by prompt
    assert shape["type"] == "json_schema" and shape["json_schema"]["name"] == "Recipe"
    assert "JSON schema" not in chef.messages[0]["content"]
