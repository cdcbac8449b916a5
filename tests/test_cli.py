"""The ``troupe`` command explains itself (issue 34): one-line errors for a busy port, a
missing module and a bad ``MODULE:ATTR``; ``--port 0``; ``troupe serve`` on a real model
with the flags ``troupe demo`` has; ``--help`` pages that list endpoints, protocols and
environment variables."""

from __future__ import annotations

import socket
import subprocess
from typing import Any

import httpx
import pytest
import trio

from .openai_server import fake_openai, text_answer
from .sse_client import first_line
from .test_demo import TROUPE, troupe


@pytest.fixture
def busy_port() -> Any:
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    yield held.getsockname()[1]
    held.close()


@pytest.mark.parametrize("command", [["serve"], ["demo", "--web"]])
def test_a_busy_port_is_one_line(command: list[str], busy_port: int) -> None:
    done = troupe(*command, "--port", str(busy_port))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "in use" in done.stderr and "--port 0" in done.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["serve", "no_such_module_here:agent"], "cannot import 'no_such_module_here'"),
        (["serve", "json"], "MODULE:ATTR"),
        (["serve", "json:nothing_here"], "has no 'nothing_here'"),
        (["serve", "json:dumps"], "json:dumps() failed"),
        (["serve", "--port", "70000"], "a port is 0 to 65535"),
        (["serve", "--heartbeat", "0"], "must be a finite number of seconds > 0, got 0.0"),
        (["serve", "--body-timeout", "nan"], "must be a finite number of seconds > 0"),
        (["serve", "--base-url", "http://localhost:1/v1"], "need --model NAME"),
        (["serve", "json:dumps", "--model", "m"], "builds its own performers"),
    ],
)
def test_bad_targets_and_flags_are_one_line(args: list[str], said: str) -> None:
    done = troupe(*args)
    assert done.returncode == 2
    assert said in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_the_help_pages_say_what_is_served() -> None:
    serve = troupe("serve", "--help").stdout
    for needed in (
        "POST /runs/stream",
        "GET  /runs/ID/stream",
        "ag-ui",
        "ui-message-stream",
        "TROUPE_TOKEN",
        "OPENAI_API_KEY",
        "--model",
        "?performer=",
        "curl",
    ):
        assert needed in serve, needed
    demo = troupe("demo", "--help").stdout
    assert "seed's" not in demo and "OPENAI_API_KEY" in demo and "--web --port 0" in demo


async def test_serve_puts_the_cat_agent_on_a_real_model_on_a_free_port() -> None:
    async with fake_openai(text_answer(["The ", "cat ", "is ", "out."])) as model:
        process = await trio.lowlevel.open_process(
            [
                *TROUPE,
                "serve",
                "--port",
                "0",
                "--model",
                "test-model",
                "--base-url",
                model.base_url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = (await first_line(process)).split("serving on ")[1].strip()
            assert not url.endswith(":0")
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                done = await client.post("/runs/wait", json={"input": "where is the cat?"})
        finally:
            process.kill()
            await process.wait()
            assert process.stdout is not None
            await process.stdout.aclose()
    assert done.json()["status"] == "ok", done.text
    assert done.json()["output"]["output"] == "The cat is out."
