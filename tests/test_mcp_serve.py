"""``troupe mcp``: Troupe's performers served as MCP tools, driven by the ``mcp``
package's own client over stdio (the command as a subprocess) and over streamable HTTP
(the command serving on 127.0.0.1). Marked ``mcp``, as ``tests/test_mcp.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from .extras import needs_extra
from .ports import free_port, serving, wait_for_file

pytestmark = pytest.mark.mcp

with needs_extra("mcp", "TROUPE_MCP_REQUIRED"):
    import mcp

ROOT = Path(__file__).resolve().parent.parent
TARGET = "tests.mcp_servers.performers:performers"


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "actors.cli", "mcp", *args]


def stdio(marker: Path | None = None, *args: str) -> mcp.StdioServerParameters:
    env = {**os.environ, "SLOW_MARKER": str(marker or "/dev/null")}
    return mcp.StdioServerParameters(
        command=sys.executable, args=command(*args)[1:], cwd=str(ROOT), env=env
    )


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    marker = tmp_path / "cancelled"
    port = free_port()
    env = {**os.environ, "SLOW_MARKER": str(marker)}
    with serving(command(TARGET, "--http", "--port", str(port)), port, env) as up:
        yield f"http://127.0.0.1:{port}/mcp", marker
    assert up.process.returncode == 0, up.stderr.decode()  # SIGTERM: a clean shutdown
    assert b"Traceback" not in up.stderr, up.stderr.decode()


async def check_the_tools(client: mcp.Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {"cat", "shout", "fail", "slow"}
    assert tools["shout"].description == "Say it louder."
    assert tools["shout"].input_schema["properties"]["text"]["type"] == "string"
    assert tools["cat"].input_schema["required"] == ["input"]  # an agent takes its input


async def check_a_call_with_progress(client: mcp.Client) -> None:
    notes: list[tuple[float, str | None]] = []

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        notes.append((progress, message))

    result = await client.call_tool("cat", {"input": "what did the cat say?"}, None, progress)
    assert not result.is_error
    assert result.content[0].text == "The cat said MEOW."  # type: ignore[union-attr]  # text
    messages = [m for _, m in notes]
    assert "[tool shout started]" in messages and "[tool shout: MEOW]" in messages
    tokens = [m for m in messages if m and not m.startswith("[")]
    assert "".join(tokens) == "The cat said MEOW."  # every token, in order
    assert [p for p, _ in notes] == list(range(1, len(notes) + 1))
    again = await client.call_tool("cat", {"input": "and again?"})
    assert again.content[0].text == "The cat said MEOW."  # type: ignore[union-attr]  # text
    assert (await client.call_tool("shout", {"text": "hi"})).content[0].text == "HI"  # type: ignore[union-attr]  # text


async def check_errors(client: mcp.Client) -> None:
    failed = await client.call_tool("fail", {"text": "fly"})
    assert failed.is_error and "ValueError: cannot fly" in failed.content[0].text  # type: ignore[union-attr]  # text
    unknown = await client.call_tool("nope", {})
    assert unknown.is_error


async def check_cancellation(client: mcp.Client, marker: Path) -> None:
    with trio.move_on_after(0.5):
        await client.call_tool("slow", {"input": "go on for ever"})
    await wait_for_file(marker)  # notifications/cancelled reached the run
    assert (await client.call_tool("shout", {"text": "still here"})).content[0].text == (  # type: ignore[union-attr]  # text
        "STILL HERE"
    )


async def test_troupe_mcp_over_stdio(tmp_path: Path) -> None:
    marker = tmp_path / "cancelled"
    async with mcp.Client(stdio(marker, TARGET)) as client:
        await check_the_tools(client)
        await check_a_call_with_progress(client)
        await check_errors(client)
        await check_cancellation(client, marker)


async def test_troupe_mcp_over_streamable_http(http_server: tuple[str, Path]) -> None:
    url, marker = http_server
    async with mcp.Client(url) as client:
        await check_the_tools(client)
        await check_a_call_with_progress(client)
        await check_errors(client)
        await check_cancellation(client, marker)


async def test_the_default_serves_the_cat_agent() -> None:
    async with mcp.Client(stdio()) as client:
        (tool,) = (await client.list_tools()).tools
        result: Any = await client.call_tool(tool.name, {"input": "where is the cat?"})
    assert tool.name == "Agent" and "The cat is" in result.content[0].text


def test_a_target_that_is_not_there_is_a_usage_error() -> None:
    done = subprocess.run(
        command("tests.nothing_here:performers"), cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 2 and "cannot import" in done.stderr
