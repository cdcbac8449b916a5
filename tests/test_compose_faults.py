"""Cancellation at random points inside nested agents, handoffs and guardrails (issue
35), generated, under the hang watchdog: every run ends exactly once, nothing leaks,
and a tripped guardrail or a run that ends badly ends with an error event."""

from __future__ import annotations

from typing import Any

import trio
from attrs import frozen
from hypothesis import given
from hypothesis import strategies as st

from actors import (
    Agent,
    GuardrailTrippedError,
    ScriptedChatModel,
    handoff,
    input_guardrail,
    output_guardrail,
    tool,
    tool_guardrail,
)
from actors.testing import (
    GuardrailOutcome,
    check_events,
    guardrail_outcomes,
    run_watched,
    team_scripts,
)
from protocol import StreamEvent
from runtime import open_runtime

from .tasks import serving_tasks


@tool
async def note(text: str) -> str:
    """Write a note down."""
    await trio.sleep(0.0003)
    return text


TEAM = {"Triage": [note], "Billing": [note], "Tech": [], "Researcher": [note]}
LINKS = {
    "Triage": ["transfer_to_billing", "transfer_to_tech"],
    "Billing": ["transfer_to_triage"],
}


@frozen
class Case:
    scripts: dict[str, Any]
    guards: tuple[GuardrailOutcome, GuardrailOutcome, GuardrailOutcome]
    cancel_at: int | None
    cancel_after: float | None
    token_delay: float


@st.composite
def cases(draw: st.DrawFn) -> Case:
    scripts = draw(
        team_scripts(
            TEAM,
            LINKS,
            max_turns=2,
            max_parallel=2,
            max_tokens=12,
            invalid_arguments=False,
            malformed_arguments=False,
        )
    )
    outcomes = guardrail_outcomes(hangs=True)
    return Case(
        scripts,
        (draw(outcomes), draw(outcomes), draw(outcomes)),
        draw(st.one_of(st.none(), st.integers(1, 60))),
        draw(st.one_of(st.none(), st.sampled_from([0.0, 0.001, 0.004, 0.01]))),
        draw(st.sampled_from([0.0, 0.0, 0.0003])),
    )


def build(case: Case) -> Agent:
    def model(name: str) -> ScriptedChatModel:
        return ScriptedChatModel(
            case.scripts[name], name=f"{name}_llm", token_delay=case.token_delay
        )

    researcher = Agent(model("Researcher"), [note], name="Researcher", max_iterations=4)
    tech = Agent(model("Tech"), name="Tech")
    billing = Agent(
        model("Billing"),
        [note],
        name="Billing",
        handoffs=[handoff(lambda: triage, tool_name="transfer_to_triage")],
        guardrails=[output_guardrail(case.guards[2].check, name="billing_output")],
        max_handoffs=3,
    )
    triage: Agent = Agent(
        model("Triage"),
        [note, researcher.as_tool("research")],
        name="Triage",
        handoffs=[billing, tech],
        guardrails=[
            input_guardrail(case.guards[0].check, name="triage_input"),
            tool_guardrail(case.guards[1].check, name="triage_tools"),
        ],
        max_handoffs=3,
    )
    return triage


async def _until_ended(watched: Any, rt: Any, root: str | None) -> list[StreamEvent]:
    """What the runtime-wide watcher saw of the tree, up to the root's terminal event;
    nothing if the run never started (cancelled while it was being delivered)."""
    seen: list[StreamEvent] = []
    with trio.fail_after(10):
        while True:
            idle = rt.open_runs == 0
            with trio.move_on_after(0.05):
                async for event in watched:
                    seen.append(event)
                    if event.run_id == root and event.is_terminal:
                        return seen
            if idle and not any(e.run_id == root for e in seen):
                return seen  # every run is over and the root never started


@given(cases())
def test_cancellation_inside_nested_agents_handoffs_and_guardrails(case: Case) -> None:
    found: dict[str, Any] = {}

    async def main() -> None:
        agent = build(case)
        got: list[StreamEvent] = []
        raised: BaseException | None = None
        async with open_runtime() as rt, rt.watch() as watched:
            root: str | None = None
            with trio.move_on_after(case.cancel_after if case.cancel_after is not None else 5):
                try:
                    async with agent.astream_events("q", config={"timeout": 0.5}) as events:
                        root = events.run_id
                        async for event in events:
                            got.append(event)
                            if case.cancel_at is not None and len(got) >= case.cancel_at:
                                break
                except Exception as exc:
                    raised = exc
            seen = await _until_ended(watched, rt, root)
            found.update(got=got, seen=seen, raised=raised, leaked=serving_tasks())
            found["violations"] = rt.protocol_violations

    run_watched(main, seconds=60, label="generated composition case")
    seen = found["seen"]
    if not seen:  # cancelled before the run started: nothing may have run
        assert found["got"] == [] and found["leaked"] == 0
        return
    check_events(seen)  # promises 1-4: each run ends exactly once, children inside parents
    assert found["leaked"] == 0, "a task outlived its run"
    assert found["violations"] == 0
    assert found["got"] == seen[: len(found["got"])]
    terminal = seen[-1]
    if isinstance(found["raised"], GuardrailTrippedError):
        assert terminal.status == "error" and "guardrail" in str(terminal.data.error)
