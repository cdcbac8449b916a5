"""The cat agent as SSE from FastAPI: `uvicorn fastapi_sse:app`, in examples/."""

import json

from cat import agent
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from actors.aio import lifespan

app = FastAPI(lifespan=lifespan)  # a runtime, with trio in a thread beside uvicorn's loop


@app.get("/stream")
async def stream(q: str, request: Request) -> StreamingResponse:
    async def tokens():  # a client that disconnects cancels the run
        async with request.state.troupe.astream_events(agent, q) as events:
            async for event in events:
                if event["event"] == "on_chat_model_stream":
                    yield f"data: {json.dumps(event['data']['chunk'].content)}\n\n"

    return StreamingResponse(tokens(), media_type="text/event-stream")
