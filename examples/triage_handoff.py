"""A triage agent hands the conversation to one of two specialists; the events say who
speaks. Offline on scripted models, or ``--model NAME --base-url URL`` on a server."""

import trio
from models import model, question

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from protocol import ToolMessage, UserMessage


def asked(messages) -> str:
    return next(m.content for m in reversed(messages) if isinstance(m, UserMessage))


def triage_script(messages):
    """Hand billing questions to Billing, everything else to Tech."""
    if "invoice" in asked(messages) or "refund" in asked(messages):
        return ScriptedTurn(tool_calls=[ScriptedCall("transfer_to_billing")])
    return ScriptedTurn(tool_calls=[ScriptedCall("transfer_to_tech")])


def billing_script(messages):
    if not any(isinstance(m, ToolMessage) for m in messages):
        return ScriptedTurn(tool_calls=[ScriptedCall("invoice_status", {"number": "A-17"})])
    return ScriptedTurn("Invoice A-17 was paid on 2 December; no refund is due.")


def tech_script(messages):
    return ScriptedTurn("Turn the router off and on again, then wait a minute.")


@tool
async def invoice_status(number: str) -> str:
    """The payment status of an invoice."""
    return f"invoice {number}: paid on 2 December"


billing = Agent(
    model(ScriptedChatModel(billing_script, name="billing_llm")),
    [invoice_status],
    name="Billing",
    system_prompt="You answer questions about invoices and refunds. Look invoices up.",
)
tech = Agent(
    model(ScriptedChatModel(tech_script, name="tech_llm")),
    name="Tech",
    system_prompt="You fix technical problems in one or two short sentences.",
)
triage = Agent(
    model(ScriptedChatModel(triage_script, name="triage_llm"), tool_choice="required"),
    name="Triage",
    system_prompt="Hand every question to the specialist for it. Do not answer yourself.",
    handoffs=[billing, tech],
)


async def main() -> None:
    agents = {}  # agent run id -> the agent's name
    speaking = set()  # model runs that have said something
    ask = question("Was my invoice A-17 paid, or is a refund due?")
    async with triage.astream_events(ask) as events:
        async for event in events:
            if event.event == "on_chain_start":
                agents[event.run_id] = event.name
                handed = event.metadata.get("handoff_from")
                if handed:
                    print(f"[{handed} hands the conversation to {event.name}]")
            elif event.event == "on_chat_model_stream" and event.data.chunk.content:
                if event.run_id not in speaking:  # the agent whose model this is speaks
                    speaking.add(event.run_id)
                    print(f"{agents[event.parent_ids[-1]]}: ", end="")
                print(event.data.chunk.content, end="", flush=True)
            elif event.event == "on_chat_model_end" and event.run_id in speaking:
                print()
            elif event.event == "on_tool_end":
                print(f"  ({event.name} -> {event.data.output})")
    print("Answer:", events.output.output)


trio.run(main)
