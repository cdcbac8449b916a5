"""The seed's ``astream_log`` loop: accumulate each path's values as they stream."""

import trio
from cat import QUESTION, agent


async def main() -> None:
    path_status = {}
    async with agent.astream_log(QUESTION, include_names=["ScriptedChatModel"]) as log:
        async for chunk in log:
            for op in chunk.ops:
                if op["op"] == "add":
                    if op["path"] not in path_status:
                        path_status[op["path"]] = op["value"]
                    else:
                        path_status[op["path"]] += op["value"]
            print(op["path"])
            print(path_status.get(op["path"]))
            print("----")


trio.run(main)
