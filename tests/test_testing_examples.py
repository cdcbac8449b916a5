"""The testing examples under examples/ pass on their first run as a user runs them: a
fresh directory (no Hypothesis cache), no ini options (no ``trio_mode``), no flags, and for
the property test the other core kept busy."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@contextmanager
def a_busy_core() -> Iterator[None]:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        busy.kill()
        busy.wait()


def run_example(pytester: pytest.Pytester, name: str) -> pytest.RunResult:
    for file in ("cat.py", name):
        (pytester.path / file).write_text((EXAMPLES / file).read_text(encoding="utf-8"))
    pytester.makeini("[pytest]\n")
    assert not (pytester.path / ".hypothesis").exists()
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", name, timeout=300)


def test_the_property_example_passes_first_time_on_a_busy_machine(
    pytester: pytest.Pytester,
) -> None:
    with a_busy_core():
        result = run_example(pytester, "test_cat_properties.py")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("name", ["test_cat_fixtures.py", "test_cat_cassette.py"])
def test_the_fixture_and_cassette_examples_pass(pytester: pytest.Pytester, name: str) -> None:
    result = run_example(pytester, name)
    result.assert_outcomes(passed=1)
