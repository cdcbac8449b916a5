"""Troupe in a notebook on asyncio: a Jupyter kernel (ipykernel, whose cells run on an
asyncio loop) runs cells that open a runtime with ``actors.aio.open_asyncio_runtime`` and
read an agent's run, as a user would, with no ``%autoawait trio``."""

from __future__ import annotations

from pathlib import Path

import pytest

from .extras import needs_extra

with needs_extra("notebook", "TROUPE_NOTEBOOK_REQUIRED"):
    import nbformat
    from nbclient import NotebookClient

pytestmark = pytest.mark.notebook

ROOT = Path(__file__).resolve().parent.parent

CELLS = [
    f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
    "from actors.aio import open_asyncio_runtime\n"
    "from actors._demo import make_cat_agent\n"
    "agent = make_cat_agent()",
    "async with open_asyncio_runtime() as rt:\n"
    "    answer = await rt.ainvoke(agent, 'where is the cat?')\n"
    "    kinds = []\n"
    "    async with rt.astream_events(agent, 'where is the cat?') as events:\n"
    "        async for event in events:\n"
    "            kinds.append(event['event'])\n"
    "print(answer['output'].startswith('The cat'), kinds[0], kinds[-1], len(kinds))",
    "import runtime\ntry:\n    await runtime.invoke(agent, 'x')\nexcept Exception as exc:\n"
    "    print(type(exc).__name__, 'open_asyncio_runtime' in str(exc))",
]


def test_a_notebook_on_asyncio_runs_troupe_in_a_cell() -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(code) for code in CELLS]
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    said = "".join(out.get("text", "") for out in notebook.cells[1].outputs)
    assert said.split() == ["True", "on_chain_start", "on_chain_end", said.split()[-1]]
    assert int(said.split()[-1]) > 10
    refused = "".join(out.get("text", "") for out in notebook.cells[2].outputs)
    assert refused.split() == ["WrongEventLoopError", "True"]
