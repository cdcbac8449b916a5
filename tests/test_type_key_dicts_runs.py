"""Runs whose tools return plain dicts with a ``"$type"`` key (one that fits the class
its tag names, one that does not, odd ones nested) and put one in the shared state:
their journals read back as what the live run saw, on both stores: joined, resumed
after a pause (a replay that answers the tools from the journal), recovered after the
process was killed (tests/type_key_worker.py), and over the HTTP edge."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from protocol import CompactDecoder, StreamEvent, converter
from runtime import RunPaused, SharedState, open_runtime

from .sse_client import read_sse, serving
from .test_recovery import journal, killed_when, recovered
from .test_store_contract import KINDS, _url
from .type_key_worker import FITS, FITS_NOT

ODD = {"$type": 5, "inner": [FITS_NOT, {"$type": "NoSuchClass"}]}


@pytest.fixture(params=KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty store's URL, of each kind."""
    return _url(request.param, request, tmp_path)


def _agent(*, approval: bool = False) -> tuple[Agent, list[Any]]:
    """The lead's repro (tools that return such dicts), then a payment (that needs
    approval, if ``approval``); the state each payment read is appended to the list."""
    seen: list[Any] = []

    @tool
    async def fetch() -> dict[str, Any]:
        """Fetch."""
        return dict(FITS)

    @tool
    async def broken() -> dict[str, Any]:
        """Fetch one that does not fit."""
        return dict(FITS_NOT)

    @tool
    async def odd(state: SharedState) -> Any:
        """Fetch odd ones, nested; put one in the state."""
        await state.update({"seen": dict(FITS)})
        return json.loads(json.dumps(ODD))

    @tool(needs_approval=approval)
    async def pay(amount: int, state: SharedState) -> str:
        """Pay."""
        seen.append(state.value)
        return f"paid {amount}"

    model = ScriptedChatModel(
        [
            ScriptedTurn(
                tool_calls=[
                    ScriptedCall("fetch", {}, id="f1"),
                    ScriptedCall("broken", {}, id="b1"),
                    ScriptedCall("odd", {}, id="o1"),
                ]
            ),
            ScriptedTurn(tool_calls=[ScriptedCall("pay", {"amount": 5}, id="p1")]),
            ScriptedTurn("all paid"),
        ]
    )
    return Agent(model=model, tools=[fetch, broken, odd, pay], name="payer"), seen


def _sorted(values: list[Any]) -> list[str]:
    return sorted(json.dumps(v) for v in values)


def _outputs(events: Sequence[StreamEvent]) -> dict[str, Any]:
    return {e.name: e.data.output for e in events if e.event == "on_tool_end"}


def _check_outputs(outputs: dict[str, Any]) -> None:
    assert outputs["fetch"] == FITS and type(outputs["fetch"]) is dict
    assert outputs["broken"] == FITS_NOT and type(outputs["broken"]) is dict
    assert outputs["odd"] == ODD


async def test_a_run_whose_tools_return_such_dicts_is_joined_as_it_ran(url: str) -> None:
    agent, seen = _agent()
    async with open_runtime(store=url) as rt:
        async with rt.astream_events(agent, "go", run_id="r1", state={}) as stream:
            live = [e async for e in stream]
        async with rt.join("r1") as events:
            joined = [e async for e in events]
    _check_outputs(_outputs(live))
    _check_outputs(_outputs(joined))
    assert [converter.unstructure(e, StreamEvent) for e in joined] == [
        converter.unstructure(e, StreamEvent) for e in live
    ]
    assert seen == [{"seen": FITS}]
    # another process's way (the store alone, the decoder) reads the same
    _check_outputs(_outputs(journal(url)))


async def test_a_run_paused_after_such_dicts_resumes_from_its_journal(url: str) -> None:
    agent, seen = _agent(approval=True)
    async with open_runtime(store=url) as rt:
        with pytest.raises(RunPaused):
            await rt.ainvoke(agent, "go", run_id="first", state={})
        # the replay answers fetch, broken and odd from the journal (a UserMessage read
        # back for fetch's dict made the model's next request differ: a divergence)
        output = await rt.resume(agent, "first", {"p1": True}, run_id="second")
        assert output.output == "all paid"
        assert seen == [{"seen": FITS}]  # the state rebuilt from the journal's patch
        assert type(seen[0]["seen"]) is dict
        for run_id in ("first", "second"):
            async with rt.join(run_id) as events:
                ended = [e async for e in events]
            assert ended[-1].status in ("paused", "ok")
        _check_outputs(_outputs(journal(url, "first")))


def test_a_killed_run_with_such_dicts_is_recovered(url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    killed_when(
        ["tests.type_key_worker", url, str(ledger), "start"],
        "paying",
        lambda: any(e.name == "pay" for e in journal(url)),
    )
    recovered("tests.type_key_worker", url, ledger)
    states = [json.loads(line)["state"] for line in ledger.read_text().splitlines()]
    # pay ran twice (in flight when killed, then again): the state the replay rebuilt
    # is the one the live run had
    assert states == [{"seen": FITS, "odd": [FITS_NOT]}] * 2
    events = journal(url)
    outputs = _outputs(events)
    assert outputs["fetch"] == FITS and type(outputs["fetch"]) is dict
    assert outputs["odd"] == {"$type": 5, "inner": [FITS_NOT, {"$type": "NoSuchClass"}]}
    assert events[-1].status == "ok"


async def test_the_compact_wire_carries_the_escape_and_the_others_the_dict() -> None:
    agent, _ = _agent()
    async with serving({"payer": agent}) as served:
        frames: dict[str, list[Any]] = {}
        for protocol in ("compact", "events", "ag-ui", "ui-message-stream"):
            async with served.client.stream(
                "POST",
                "/runs/stream",
                json={"performer": "payer", "input": "go", "protocol": protocol},
            ) as response:
                assert response.status_code == 200
                frames[protocol] = await read_sse(response)
    # Troupe's own records: the escape, read back by its decoder as the dicts
    decoder = CompactDecoder()
    events = [
        e for f in frames["compact"] for r in f.json() if (e := decoder.decode(r)) is not None
    ]
    _check_outputs(_outputs(events))
    assert '"$type":"$dict"' in "".join(f.data for f in frames["compact"])
    # LangChain's events and the frontends' protocols: the dict as the tool returned it
    v2 = [f.json() for f in frames["events"] if f.event == "on_tool_end"]
    assert {e["name"]: e["data"]["output"] for e in v2} == {
        "fetch": FITS,
        "broken": FITS_NOT,
        "odd": ODD,
        "pay": "paid 5",
    }
    results = [
        json.loads(f.json()["content"])
        for f in frames["ag-ui"]
        if f.json().get("type") == "TOOL_CALL_RESULT" and f.json()["content"].startswith("{")
    ]
    assert _sorted(results) == _sorted([FITS, FITS_NOT, ODD])  # (the tools ran at once)
    outputs = [
        f.json()["output"]
        for f in frames["ui-message-stream"]
        if f.data != "[DONE]" and f.json().get("type") == "tool-output-available"
    ]
    assert _sorted(outputs) == _sorted([FITS, FITS_NOT, ODD, "paid 5"])
    # (the frontends' protocols: nothing escaped anywhere, their state deltas included;
    # LangChain's events write protocol objects as the converter does, a state delta's
    # dict value escaped in it, as in Troupe's JSON)
    assert "$dict" not in "".join(f.data for p in ("ag-ui", "ui-message-stream") for f in frames[p])
    deltas = [f.json()["delta"] for f in frames["ag-ui"] if f.json().get("type") == "STATE_DELTA"]
    assert deltas == [[{"op": "add", "path": "/seen", "value": FITS}]]
