"""Every public argument is checked up front, with an error that names it."""

# This file passes arguments of the wrong type on purpose.
# mypy: disable-error-code="arg-type,dict-item,call-overload,typeddict-item,call-arg"

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio

from actors import Agent, ScriptedChatModel, ScriptedTurn, ToolDefinitionError, tool
from runtime import dispatch_custom_event, open_runtime

MODEL = ScriptedChatModel([ScriptedTurn("hi")])


async def plain(x: int) -> int:
    """Doubles."""
    return 2 * x


async def agen() -> AsyncIterator[int]:
    """Yields."""
    yield 1


BAD_CONSTRUCTIONS: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    ("agent name None", lambda: Agent(MODEL, name=None), TypeError, "name"),
    ("agent name empty", lambda: Agent(MODEL, name=""), TypeError, "name"),
    ("agent name int", lambda: Agent(MODEL, name=123), TypeError, "name"),
    ("agent metadata str", lambda: Agent(MODEL, metadata="x"), TypeError, "metadata"),
    ("agent metadata keys", lambda: Agent(MODEL, metadata={1: 2}), TypeError, "metadata"),
    ("agent system_prompt", lambda: Agent(MODEL, system_prompt=5), TypeError, "system_prompt"),
    ("agent max_iterations", lambda: Agent(MODEL, max_iterations=True), ValueError, "max_iter"),
    ("agent tools str", lambda: Agent(MODEL, tools="abc"), TypeError, "tools"),
    ("tool description", lambda: tool(description=123)(plain), ToolDefinitionError, "descr"),
    ("tool tags str", lambda: tool(tags="abc")(plain), TypeError, "tags"),
    ("tool timeout nan", lambda: tool(timeout=math.nan)(plain), ValueError, "timeout"),
    ("tool timeout True", lambda: tool(timeout=True)(plain), TypeError, "timeout"),
    ("tool max_output", lambda: tool(max_output_chars=True)(plain), ValueError, "max_output"),
    ("tool name int", lambda: tool(name=123)(plain), ToolDefinitionError, "name"),
    ("tool async gen", lambda: tool(agen), ToolDefinitionError, "generator"),
    ("tool metadata", lambda: tool(metadata={1: 2})(plain), TypeError, "metadata"),
    ("model delay nan", lambda: ScriptedChatModel([], token_delay=math.nan), ValueError, "delay"),
    ("model name", lambda: ScriptedChatModel([], name=""), TypeError, "name"),
    (
        "events timeout nan",
        lambda: Agent(MODEL).astream_events("q", timeout=math.nan),
        ValueError,
        "timeout",
    ),
    (
        "events capacity bool",
        lambda: Agent(MODEL).astream_events("q", capacity=True),
        ValueError,
        "capacity",
    ),
    ("log diff str", lambda: Agent(MODEL).astream_log("q", diff="yes"), TypeError, "diff"),
    ("stream capacity 0", lambda: Agent(MODEL).astream("q", capacity=0), ValueError, "capacity"),
    (
        "runtime capacity bool",
        lambda: open_runtime(tracer_capacity=True),
        ValueError,
        "tracer_capacity",
    ),
    ("runtime grace nan", lambda: open_runtime(close_grace=math.nan), ValueError, "close_grace"),
    # settings in seconds: one check (runtime.seconds) wherever they are taken
    ("openai timeout 0", lambda: _openai(timeout=0), ValueError, "timeout"),
    ("openai idle_timeout str", lambda: _openai(idle_timeout="5"), TypeError, "idle_timeout"),
    ("serve heartbeat bool", lambda: _serve(heartbeat=True), TypeError, "heartbeat"),
    ("serve body_timeout inf", lambda: _serve(body_timeout=math.inf), ValueError, "body_timeout"),
    ("serve retention -1", lambda: _serve(retention=-1), ValueError, "retention"),
    ("serve detached age str", lambda: _serve(detached_max_age="1"), TypeError, "detached_max"),
]


def _openai(**settings: Any) -> Any:
    from actors import OpenAIChatModel

    return OpenAIChatModel("m", base_url="http://127.0.0.1:9/v1", api_key="k", **settings)


def _serve(**settings: Any) -> Any:
    from actors.serve import asgi_app

    return asgi_app(Agent(MODEL), **settings)


@pytest.mark.parametrize(
    ("make", "error", "names"),
    [case[1:] for case in BAD_CONSTRUCTIONS],
    ids=[case[0] for case in BAD_CONSTRUCTIONS],
)
async def test_bad_arguments_are_refused_at_the_call(
    make: Callable[[], Any], error: type[Exception], names: str
) -> None:
    with pytest.raises(error, match=names):
        made = make()
        if hasattr(made, "__aenter__"):  # open_runtime checks when entered
            async with made:
                pass


async def test_bad_watch_and_subscribe_arguments() -> None:
    async with open_runtime() as rt:
        with pytest.raises(TypeError, match="drop_oldest"):
            rt.watch(drop_oldest="no")
        with pytest.raises(TypeError, match="drop_oldest"):
            await rt.subscribe(drop_oldest="no")
        with pytest.raises(ValueError, match="capacity"):
            await rt.subscribe(capacity=True)


async def test_deeply_nested_custom_event_data_is_a_type_error() -> None:
    @tool
    async def deep() -> str:
        """Dispatches deep data."""
        data: list[Any] = []
        for _ in range(5000):
            data = [data]
        await dispatch_custom_event("deep", data)
        return "done"

    with pytest.raises(TypeError, match="nested too deeply"):
        await deep.ainvoke({}, {"tags": ["x"]})
    with trio.fail_after(5):
        assert await tool(plain).ainvoke({"x": 2}) == 4  # nothing else broke


async def test_langchain_versions_are_accepted_and_others_named() -> None:
    agent = Agent(MODEL)
    for version in ("v1", "v2"):
        async with agent.astream_events("q", version=version) as events:
            assert [e.event async for e in events][-1] == "on_chain_end"
    with pytest.raises(ValueError, match=r"astream_events\(\): version must be one of 'v1', 'v2'"):
        agent.astream_events("q", version="v3")


def test_an_unknown_keyword_names_the_method_called() -> None:
    agent = Agent(MODEL)
    with pytest.raises(
        TypeError, match=r"^astream_events\(\) got an unexpected keyword argument 'verison'"
    ):
        agent.astream_events("q", verison="v2")
    with pytest.raises(TypeError, match=r"^astream\(\) got an unexpected keyword"):
        agent.astream("q", include_names=["x"])
    with pytest.raises(TypeError, match=r"^astream_log\(\) got an unexpected keyword"):
        agent.astream_log("q", nope=1)


async def test_max_iterations_none_means_no_limit() -> None:
    from actors import ScriptedCall

    @tool
    async def again() -> str:
        """Says to go on."""
        return "go on"

    turns = [ScriptedTurn(tool_calls=[ScriptedCall("again")]) for _ in range(20)]
    agent = Agent(ScriptedChatModel([*turns, ScriptedTurn("done")]), [again], max_iterations=None)
    output = await agent.ainvoke("q")
    assert output.finish_reason == "stop" and output["output"] == "done"
    with pytest.raises(ValueError, match="max_iterations must be a positive integer or None"):
        Agent(MODEL, max_iterations=0)


def test_every_positive_integer_setting_is_checked_by_one_function() -> None:
    """``runtime.positive_int`` is the one check: an int >= 1, never a bool; with
    ``optional``, also None. Each setting's error names it."""
    import argparse

    from actors import OpenAIChatModel
    from actors.cli._command import _positive_int
    from actors.serve import asgi_app
    from runtime import positive_int

    assert positive_int(3, "n") == 3
    assert positive_int(None, "n", optional=True) is None
    for bad in (0, -1, 1.0, True, "2"):
        with pytest.raises(ValueError, match=rf"^n must be a positive integer, got {bad!r}$"):
            positive_int(bad, "n")
        with pytest.raises(ValueError, match=r"^n must be a positive integer or None, got "):
            positive_int(bad, "n", optional=True)
    with pytest.raises(ValueError, match="n must be a positive integer, got None"):
        positive_int(None, "n")
    # A bool was taken as 1 here before.
    with pytest.raises(ValueError, match="max_concurrency must be a positive integer or None"):
        OpenAIChatModel("m", api_key="x", max_concurrency=True)
    with pytest.raises(ValueError, match="'plain': max_output_chars must be a positive integer"):
        tool(max_output_chars=2.5)(plain)
    with pytest.raises(ValueError, match="max_iterations must be a positive integer or None"):
        Agent(MODEL, max_iterations=False)
    with pytest.raises(ValueError, match="replay must be a positive integer, got 0"):
        asgi_app(Agent(MODEL), replay=0)
    assert _positive_int("7") == 7
    for text in ("0", "x", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="a whole number >= 1"):
            _positive_int(text)
