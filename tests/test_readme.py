"""The README's five-minute path runs as written, step by step, and the pages it links
to exist; the streams page's examples run on from the README's agent."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PYTEST = (sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider")


def _blocks(path: Path, kind: str = "python") -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


def test_the_readme_leads_in_under_300_lines() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 300
    steps = re.findall(r"^### (\d)\. ", text, re.M)
    assert steps == ["1", "2", "3", "4", "5", "6"]


def test_step_six_is_the_examples_a_user_runs() -> None:
    blocks = _blocks(README, "py")
    for name in ("test_cat_fixtures.py", "test_cat_cassette.py"):
        assert (ROOT / "examples" / name).read_text(encoding="utf-8") in blocks, name
    # tests/test_testing_examples.py runs both files as a user would


def test_every_page_the_readme_and_the_docs_link_to_exists() -> None:
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.name} links to {target}"


def test_step_one_runs_as_written() -> None:
    done = _python("\n".join(_blocks(README)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Starting agent: Agent with input: {'input': 'where is the cat")
    assert "Done agent: Agent with output: The cat is " in done.stdout


def test_the_readme_python_runs() -> None:
    blocks = _blocks(README) + _blocks(DOCS / "streams.md")
    assert len(blocks) >= 4
    done = subprocess.run(
        [sys.executable, "-c", "\n".join(blocks)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=README.parent,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("Starting agent: Agent with input: {'input': 'where is the cat hiding?")
    assert "Starting tool: get_items with inputs: {'place': '" in out
    assert "Calling Tool: `where_cat_is_hiding` with input `{}`" in out
    assert "Final Output: The cat is " in out
    assert "Agent: ok (seq " in out
    assert "agent_llm" not in out and "[ScriptedChatModel " in out and "finished: stop]" in out
    assert "add /logs/get_items" in out
    assert out.rstrip().endswith("replace /final_output")


def test_the_two_setup_commands_lead_the_readme() -> None:
    first_screen = README.read_text(encoding="utf-8").split("---")[0]
    commands = re.findall(r"^python3 -m venv .*$", first_screen, re.M)
    test_command = (
        'python3 -m venv .venv && .venv/bin/python -m pip install ".[test]" '
        "&& .venv/bin/python -m pytest -n auto"
    )
    assert commands == [
        "python3 -m venv .venv && .venv/bin/python -m pip install . && .venv/bin/troupe demo",
        test_command,
    ]
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command + "\n" in ci or test_command + " ||" in ci


def test_the_testing_example_is_the_file_under_examples_and_passes() -> None:
    text = (DOCS / "testing.md").read_text(encoding="utf-8")
    section = text[text.index("# Testing your agents") :]
    example = re.findall(r"```py\n(.*?)```", section, re.S)[0]
    path = README.parent / "examples" / "test_cat_properties.py"
    assert example == path.read_text(encoding="utf-8")
    assert len(example.splitlines()) < 30
    done = subprocess.run(
        [*PYTEST, path.name, "--hypothesis-profile=troupe-ci"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=path.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_step_two_runs_the_agent_on_a_model_server() -> None:
    from .openai_server import fake_openai, text_answer

    line = next(
        cmd
        for block in _blocks(README, "bash")
        for cmd in block.splitlines()
        if "troupe demo --model llama" in cmd
    )
    args = line.split("troupe ", 1)[1].split()
    args[args.index("--base-url") + 1] = "{base_url}"

    async def main() -> subprocess.CompletedProcess[bytes]:
        async with fake_openai(text_answer(["The ", "cat ", "is ", "out."])) as server:
            filled = [a.format(base_url=server.base_url) for a in args]
            return await trio.run_process(
                [sys.executable, "-m", "actors", *filled], capture_stdout=True, check=False
            )

    done = trio.run(main)
    assert done.returncode == 0
    assert b"Done agent: Agent with output: The cat is out." in done.stdout


def test_step_three_serves_and_every_curl_line_gets_its_protocol() -> None:
    block = next(b for b in _blocks(README, "bash") if "curl" in b)
    lines = [c for c in block.splitlines() if c.startswith("curl")]
    assert len(lines) == 4
    server = subprocess.Popen(
        [sys.executable, "-m", "actors", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split("serving on ")[1].strip()
        port = url.rsplit(":", 1)[1]
        outputs = [
            subprocess.run(
                shlex.split(line.replace("localhost:8000", f"localhost:{port}")),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            ).stdout
            for line in lines
        ]
    finally:
        server.terminate()
        server.wait(30)
        if server.stdout is not None:
            server.stdout.close()
    assert "event: on_chain_start" in outputs[0] and "event: on_chain_end" in outputs[0]
    assert '"type":"RUN_STARTED"' in outputs[1] and '"type":"RUN_FINISHED"' in outputs[1]
    assert '"type":"start"' in outputs[2] and "data: [DONE]" in outputs[2]
    assert '"status":"ok"' in outputs[3]
