"""The README's example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
PYTEST = (sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider")


def test_the_readme_python_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
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
        "&& .venv/bin/python -m pytest"
    )
    assert commands == [
        "python3 -m venv .venv && .venv/bin/python -m pip install . && .venv/bin/troupe demo",
        test_command,
    ]
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command + "\n" in ci or test_command + " ||" in ci


def test_the_testing_example_is_the_file_under_examples_and_passes() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Testing your agents") :]
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
