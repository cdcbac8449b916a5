"""The seed's ``astream_events`` loop: agent start, tools, tokens with ``|``, done."""

import trio
from cat import QUESTION, agent


async def main() -> None:
    async with agent.astream_events(QUESTION) as events:
        async for event in events:
            kind = event["event"]
            if kind == "on_chain_start":
                if event["name"] == "Agent":  # the agent's run name
                    print(
                        f"Starting agent: {event['name']} with input: {event['data'].get('input')}"
                    )
            elif kind == "on_chain_end":
                if event["name"] == "Agent":
                    print()
                    print("--")
                    print(
                        f"Done agent: {event['name']} with output: "
                        f"{event['data'].get('output')['output']}"
                    )
            if kind == "on_chat_model_stream":
                content = event["data"]["chunk"].content
                if content:
                    # Empty content means the model is asking for a tool to be invoked.
                    # So we only print non-empty content
                    print(content, end="|")
            elif kind == "on_tool_start":
                print("--")
                print(f"Starting tool: {event['name']} with inputs: {event['data'].get('input')}")
            elif kind == "on_tool_end":
                print(f"Done tool: {event['name']}")
                print(f"Tool output was: {event['data'].get('output')}")
                print("--")


trio.run(main)
