"""The performers the Ray tests' hosts run (hosts import this by name, as a registry)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from attrs import field, frozen

from actors import ScriptedChatModel, ScriptedTurn
from actors._demo import make_cat_agent
from protocol import ChatMessage
from runtime import Performer, Run, SharedState

from .performers import Step


class FirstPlace(random.Random):
    """Always the first hiding place: runs here and in the driver tell the same story."""

    def choice(self, seq: Any) -> Any:
        return seq[0]


@frozen(eq=False)
class Chatty(Performer[int, int]):
    """Streams its input's number of small chunks as fast as it can."""

    name: str = "chatty"
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(factory=dict)

    def coerce_input(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise TypeError(f"chatty takes a count >= 0, got {value!r}")
        return value

    async def perform(self, message: int, run: Run) -> int:
        for i in range(message):
            await run.emit(i)
        return message


class OddError(Exception):
    """An exception whose ``__str__`` fails."""

    def __str__(self) -> str:
        raise RuntimeError("no str for you")


@frozen(eq=False)
class Raises(Performer[str, str]):
    """Raises what its input names: ``odd`` (a failing ``__str__``), ``host-only`` (a
    type the driver never imported), ``exit`` (SystemExit), anything else a KeyError."""

    name: str = "raises"
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(factory=dict)

    def coerce_input(self, value: Any) -> str:
        return str(value)

    async def perform(self, message: str, run: Run) -> str:
        await run.emit("about to fail")
        if message == "odd":
            raise OddError
        if message == "exit":
            raise SystemExit(3)
        if message == "host-only":
            from .ray_host_only import HostOnlyError

            raise HostOnlyError("only the host knows me")
        raise KeyError(message)


def _paced(messages: Sequence[ChatMessage]) -> ScriptedTurn:
    return ScriptedTurn("tick " * 200, token_delay=0.01)


def performers() -> dict[str, Any]:
    """The tests' registry."""
    return {
        "cat": make_cat_agent(FirstPlace(), nested=True),
        "step": Step(),
        "forever": Step(name="forever", block=True),
        # One run at a time: a second request waits in the actor's mailbox, not started,
        # for as long as the first run goes on (how a test holds a run before its start).
        "one-at-a-time": Step(name="one-at-a-time", block=True, max_concurrency=1),
        "fails": Step(name="fails", fail="boom"),
        "chatty": Chatty(),
        "raises": Raises(),
        "paced": ScriptedChatModel(_paced, name="Paced"),
        "shop": _shopping_agent(),
    }


def fails_on_hosts() -> dict[str, Any]:
    """A registry that this process can load and a host cannot (as when a host lacks a
    package the driver has)."""
    import ray

    if ray.get_runtime_context().get_actor_id() is not None:
        raise RuntimeError("this host has no performers for you")
    return performers()


def _shopping_agent() -> Any:
    """An agent whose tool changes the run's shared state."""
    from actors import Agent, ScriptedCall, tool

    @tool
    async def add_item(item: str, state: SharedState) -> str:
        """Put an item in the basket."""
        await state.patch([{"op": "add", "path": "/items/-", "value": item}])
        return f"{len(state.get('items'))} items"

    model = ScriptedChatModel(
        [
            ScriptedTurn(tool_calls=[ScriptedCall("add_item", {"item": "milk"}, id="a1")]),
            ScriptedTurn("added"),
        ]
    )
    return Agent(model=model, tools=[add_item], name="shop")


def _paying_agent() -> Any:
    from actors import Agent, ScriptedCall, tool

    @tool(needs_approval=True)
    async def pay(amount: int) -> str:
        """Pay."""
        return f"paid {amount}"

    model = ScriptedChatModel(
        [
            ScriptedTurn(tool_calls=[ScriptedCall("pay", {"amount": 5}, id="p1")]),
            ScriptedTurn("paid"),
        ]
    )
    return Agent(model=model, tools=[pay], name="payer")


def journaled_performers() -> dict[str, Any]:
    """The performers of the hosts that share a store."""
    return {"payer": _paying_agent()}
