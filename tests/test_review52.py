"""A hostile review of stop 47's changes (SQLite claims in shared transactions, the
HTTP edge writing what orjson refuses, the journal feed's token path, ...): stop 48."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from http import HTTPStatus
from typing import Any, Final

import pytest

from runtime import Run

from .sse_client import read_sse, serving
from .test_review_journal4 import _Taking

# -- the HTTP edge: an int subclass beside what orjson refuses ---------------------------

STATUS_OUTPUT: Final = {"status": HTTPStatus.OK, "price": Decimal("1.5"), "n": 2**70}
"""A tool's answer: an IntEnum (an HTTP status) beside values orjson refuses."""
WRITTEN: Final = {"status": 200, "price": "Decimal('1.5')", "n": 2**70}


def _written_in_child(value: str) -> Any:
    """``wire_json`` of the value the Python expression ``value`` makes (this module's
    names in reach), made in a child process given 60 s: a walk in C that holds the
    GIL, no watchdog in this process could end."""
    code = (
        "import sys\n"
        "from actors.serve._wire import wire_json\n"
        "from tests.test_review52 import STATUS_OUTPUT, Decimal, _Big\n"
        f"sys.stdout.write(wire_json({value}).decode())\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"wire_json({value}) did not return within 60 s")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class _Big(int):
    """An int subclass whose repr raises: written as its digits."""

    def __repr__(self) -> str:
        raise ValueError("no repr")


def test_an_int_subclass_beside_what_orjson_refuses_is_written_at_once() -> None:
    # wire_json walks a value orjson refused; stop 47 tested an int's range with
    # ``value not in range(-2**63, 2**64)``, which for an int subclass (an IntEnum
    # member: HTTPStatus.OK) is no arithmetic test but a walk of the range from -2**63:
    # the serving process's trio thread spun for ever (every stream and request of the
    # server stopped) on a tool's answer {"status": HTTPStatus.OK, "price": Decimal(..)}.
    assert _written_in_child("STATUS_OUTPUT") == WRITTEN
    assert _written_in_child("[_Big(2**70), _Big(-3), _Big(-(2**64)), Decimal(2)]") == [
        2**70,
        -3,
        -(2**64),
        "Decimal('2')",
    ]


class Status(_Taking[Any]):
    """Streams and answers an HTTP status beside a Decimal (orjson refuses it)."""

    name = "status"

    async def perform(self, message: Any, run: Run) -> Any:
        await run.emit(STATUS_OUTPUT)
        return STATUS_OUTPUT


@pytest.mark.parametrize("protocol", ["events", "compact", "ag-ui", "ui-message-stream"])
async def test_every_edge_answers_a_tool_s_http_status(
    protocol: str, troupe_watchdog: None
) -> None:
    async with serving({"status": Status()}) as served:
        body = {"performer": "status", "input": "x", "protocol": protocol}
        waited = await served.client.post("/runs/wait", json=body)
        async with served.client.stream("POST", "/runs/stream", json=body) as response:
            frames = [e.data for e in await read_sse(response)]
        root = waited.json()["run_id"]
        tree = await served.client.get(f"/viewer/runs/{root}/tree")
        record = await served.client.get(f"/viewer/runs/{root}/record")
    assert waited.status_code == 200 and waited.json()["output"] == WRITTEN
    assert tree.status_code == 200 and record.status_code == 200
    read = [json.loads(f) for f in frames if f != "[DONE]"]
    if protocol == "events":
        assert read[-1]["event"] == "on_chain_end" and read[-1]["data"]["output"] == WRITTEN
    if protocol == "ag-ui":
        assert read[-1]["type"] == "RUN_FINISHED" and read[-1]["result"] == WRITTEN
