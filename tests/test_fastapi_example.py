"""examples/fastapi_sse.py for real: uvicorn serves it in a subprocess, an HTTP client
reads its SSE stream, and a client that disconnects cancels the run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from .ports import free_port, serving

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DOC = ROOT / "docs" / "asyncio.md"

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@contextmanager
def uvicorn(app: str, **env: str) -> Iterator[str]:
    """``uvicorn app`` on a free port of 127.0.0.1; its base URL."""
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    path = f"{EXAMPLES}{os.pathsep}{ROOT}"
    with serving(args, port, {**os.environ, "PYTHONPATH": path, "CAT_SEED": "1", **env}) as up:
        yield f"http://127.0.0.1:{port}"
    # Shut down cleanly, runtime and all (uvicorn raises SIGTERM again once it has).
    assert b"Application shutdown complete." in up.stderr, up.stderr.decode()
    assert b"Traceback" not in up.stderr, up.stderr.decode()


def test_the_example_is_under_25_lines_and_the_docs_show_it_verbatim() -> None:
    example = (EXAMPLES / "fastapi_sse.py").read_text(encoding="utf-8")
    assert len(example.splitlines()) < 25
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert example in blocks


def test_the_docs_first_program_runs_under_asyncio_run() -> None:
    program = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)[0]
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=EXAMPLES,
        env={**os.environ, "PYTHONPATH": str(ROOT), "CAT_SEED": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("The cat is currently hiding")
    assert "FinishChunk" in done.stdout and "AgentOutput(" in done.stdout


def test_the_example_streams_the_cat_agents_tokens_as_sse() -> None:
    with (
        uvicorn("fastapi_sse:app") as url,
        httpx.Client() as client,
        client.stream("GET", f"{url}/stream", params={"q": "where is the cat?"}) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        data = [
            json.loads(line.removeprefix("data: "))
            for line in response.iter_lines()
            if line.startswith("data: ")
        ]
    assert "".join(data).startswith("The cat is currently hiding")
    assert len(data) > 5  # token by token


def test_a_client_that_disconnects_cancels_the_run(tmp_path: Path) -> None:
    marker = tmp_path / "cancelled"
    with uvicorn("tests.fastapi_slow:app", SLOW_MARKER=str(marker)) as url:
        with (
            httpx.Client() as client,
            client.stream("GET", f"{url}/stream", params={"q": "go"}) as response,
        ):
            lines = response.iter_lines()
            got = [next(lines) for _ in range(6)]  # a few tokens, then hang up
        assert any(line.startswith("data: ") for line in got)
        deadline = time.monotonic() + 60
        while not marker.exists():  # the model's run was cancelled in the server
            assert time.monotonic() < deadline, "the run went on after the client left"
            time.sleep(0.02)
    assert marker.read_text(encoding="utf-8") == "cancelled"
