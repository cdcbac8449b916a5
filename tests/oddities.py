"""Odd things for performers to raise: what a hostile tester reaches for."""

from __future__ import annotations

from typing import NoReturn

import trio


class BadStr(Exception):
    """An exception whose ``__str__`` itself fails."""

    def __str__(self) -> str:
        raise RuntimeError("no string for you")


async def raise_a_caught_cancelled() -> NoReturn:
    """Raise a real ``trio.Cancelled``, caught in a scope that is over, where nothing
    is cancelled any more (as code that stashes an exception might)."""
    with trio.CancelScope() as scope:
        scope.cancel()
        try:
            await trio.sleep(1)
        except trio.Cancelled as exc:
            caught = exc
    raise caught
