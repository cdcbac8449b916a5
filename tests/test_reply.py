"""The reply slot between a requester and the task serving its request."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from runtime import RunCancelledError
from runtime._reply import Reply


async def test_every_waiter_wakes_once_the_reply_settles() -> None:
    reply = Reply()
    woken: list[int] = []

    async def wait(number: int) -> None:
        await reply.wait_settled()
        woken.append(number)

    async with trio.open_nursery() as nursery:
        for number in range(3):  # the first waits in the slot, the others in the list
            nursery.start_soon(wait, number)
        await trio.testing.wait_all_tasks_blocked()
        assert woken == []
        reply.resolve("done")
    assert sorted(woken) == [0, 1, 2]
    assert reply.settled and reply.value == "done" and reply.error is None
    await reply.wait_settled()  # settled already: returns at once


@pytest.mark.parametrize("leaving", [0, 1])
async def test_a_waiter_that_is_cancelled_is_forgotten(leaving: int) -> None:
    reply = Reply()
    woken: list[int] = []
    scopes = [trio.CancelScope(), trio.CancelScope()]

    async def wait(number: int) -> None:
        with scopes[number]:
            await reply.wait_settled()
            woken.append(number)

    async with trio.open_nursery() as nursery:
        for number in range(2):
            nursery.start_soon(wait, number)
            await trio.testing.wait_all_tasks_blocked()
        scopes[leaving].cancel()
        await trio.testing.wait_all_tasks_blocked()
        reply.reject(ValueError("no"))
    assert woken == [1 - leaving]


async def test_result_raises_what_the_request_settled_with() -> None:
    reply = Reply()
    reply.reject(ValueError("bad input"))
    reply.resolve("ignored: a reply settles once")
    with pytest.raises(ValueError, match="bad input"):
        await reply.result()


async def test_a_requester_that_leaves_cancels_the_serving_task_and_waits_for_it() -> None:
    reply = Reply()
    served: list[str] = []

    async def serve() -> None:
        try:
            with trio.CancelScope() as scope:
                assert reply.attach(scope)
                await trio.sleep_forever()
            served.append("cancelled")
        finally:
            reply.settle_cancelled()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as requester:
            requester.cancel()
            await reply.result()
    assert served == ["cancelled"]  # result() returned only after the server was done
    assert isinstance(reply.error, RunCancelledError)
    late = Reply()
    late.abandon()
    assert not late.attach(trio.CancelScope())  # nobody is waiting: don't serve it
