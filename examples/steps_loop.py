"""The seed's ``astream`` loop: Calling Tool / Tool Result / Final Output."""

import trio
from cat import QUESTION, agent


async def main() -> None:
    async with agent.astream(QUESTION) as chunks:
        async for chunk in chunks:
            # Agent Action
            if "actions" in chunk:
                for action in chunk["actions"]:
                    print(f"Calling Tool: `{action.tool}` with input `{action.tool_input}`")
            # Observation
            elif "steps" in chunk:
                for step in chunk["steps"]:
                    print(f"Tool Result: `{step.observation}`")
            # Final result
            elif "output" in chunk:
                print(f"Final Output: {chunk['output']}")
            else:
                raise ValueError()
            print("---")


trio.run(main)
