"""Time to first token when a server drops kept-alive connections (issue 12).

llama.cpp's server closes some reused connections without answering (2 to 7 of 30
back-to-back requests). The SDK retries such a request after a back-off of about half a
second, seen as spikes in time to first token; Troupe sends it again at once. This
runs 30 back-to-back streamed requests against the project's scripted server on
127.0.0.1, which drops 5 of the requests that arrive on a reused connection, through
the raw SDK and through ``OpenAIChatModel``, and prints both distributions as JSON.

``python -m benchmarks._stale_connections`` (needs the test extras: the scripted server
is ``tests/openai_server.py``).
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import trio

from actors import OpenAIChatModel
from runtime import open_runtime
from tests.openai_server import fake_openai, text_answer

REQUESTS = 30
DROPPED = 5


def _summary(name: str, ttft: list[float], dropped: int) -> dict[str, Any]:
    ms = sorted(t * 1000 for t in ttft)
    return {
        "client": name,
        "requests": len(ms),
        "dropped_by_server": dropped,
        "ttft_ms_p50": statistics.median(ms),
        "ttft_ms_max": ms[-1],
        "over_100_ms": sum(t > 100 for t in ms),
    }


async def raw_sdk() -> dict[str, Any]:
    import openai

    answers = [text_answer(["a", "b"]) for _ in range(REQUESTS)]
    async with fake_openai(*answers, drop_reused=DROPPED) as server:
        client = openai.AsyncOpenAI(api_key="k", base_url=server.base_url)
        ttft = []
        for _ in range(REQUESTS):
            start = time.perf_counter()
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "?"}], stream=True
            )
            async for _ in stream:
                ttft.append(time.perf_counter() - start)
                break
            async for _ in stream:
                pass
        await client.close()
        return _summary("openai SDK (default retries)", ttft, len(server.dropped))


async def troupe() -> dict[str, Any]:
    answers = [text_answer(["a", "b"]) for _ in range(REQUESTS)]
    async with fake_openai(*answers, drop_reused=DROPPED) as server, open_runtime():
        model = OpenAIChatModel("m", base_url=server.base_url, api_key="k")
        ttft = []
        for _ in range(REQUESTS):
            start = time.perf_counter()
            async with model.astream("?") as chunks:
                first = True
                async for _ in chunks:
                    if first:
                        ttft.append(time.perf_counter() - start)
                        first = False
        return _summary("Troupe OpenAIChatModel", ttft, len(server.dropped))


async def main() -> list[dict[str, Any]]:
    return [await raw_sdk(), await troupe()]


if __name__ == "__main__":
    print(json.dumps(trio.run(main), indent=2))
