"""The public surface: explicit re-exports, and the one-way package arrows."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

import actors
import actors.testing
import protocol
import runtime


@pytest.mark.parametrize(
    "package", [protocol, runtime, actors, actors.testing], ids=lambda p: p.__name__
)
def test_all_names_exist_and_are_public(package: types.ModuleType) -> None:
    assert len(set(package.__all__)) == len(package.__all__), "duplicates in __all__"
    for name in package.__all__:
        assert not name.startswith("_")
        assert hasattr(package, name), f"{package.__name__}.{name} is in __all__ but missing"
    public = {n for n in vars(package) if not n.startswith("_")}
    modules = {n for n, v in vars(package).items() if isinstance(v, types.ModuleType)}
    assert public - modules <= set(package.__all__), "public names missing from __all__"


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("protocol", ["trio", "runtime", "actors", "openai"]),
        ("runtime", ["actors", "openai", "jsonschema"]),
        # the SDK loads only when an OpenAI model's actor starts: scripted runs skip it
        ("actors", ["openai", "pydantic"]),
    ],
)
def test_imports_point_one_way(package: str, forbidden: list[str]) -> None:
    code = f"import sys, {package}; print(','.join(m for m in {forbidden!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"importing {package} imported {done.stdout.strip()}"
