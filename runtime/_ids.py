"""Run ids that sort by start time (UUIDv7 layout: 48-bit milliseconds first)."""

from __future__ import annotations

import os
import struct
import time
from typing import Final

_last_ms = 0
_counter = 0

_POOL_SIZE: Final = 256
"""Random 62-bit parts drawn from the OS at once (one ``os.urandom`` call per this
many ids, where each id made one: a system call per run, six per cat agent run)."""
_pool: list[int] = []  # 64 random bits each


_UNPACK: Final = struct.Struct(f"<{_POOL_SIZE}Q").unpack


def _refill() -> None:
    _pool.extend(_UNPACK(os.urandom(8 * _POOL_SIZE)))


def _forget_pool() -> None:
    # A forked child must not make the ids its parent makes from the same draws.
    _pool.clear()


if hasattr(os, "register_at_fork"):  # (POSIX)
    os.register_at_fork(after_in_child=_forget_pool)


def new_run_id() -> str:
    """A new UUIDv7-style id, as a string.

    Ids made in one process sort (as strings) in the order they were made: within one
    millisecond a 12-bit counter orders them; on counter overflow the timestamp is
    advanced by one millisecond rather than repeated. The 62 random bits come from
    ``os.urandom`` (drawn for many ids at once, and drawn afresh in a forked child).
    """
    global _last_ms, _counter
    now = time.time_ns() // 1_000_000
    if now > _last_ms:
        _last_ms = now
        _counter = 0
    else:
        _counter += 1
        if _counter > 0xFFF:
            _last_ms += 1
            _counter = 0
    while True:  # (a loop: another thread may take the last draws in between)
        try:
            rand = _pool.pop() >> 2
            break
        except IndexError:
            _refill()
    ms = _last_ms
    # str(uuid.UUID(int=value)), without building the UUID: version 7, variant 0b10
    return (
        f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-{0x7000 | _counter:04x}-"
        f"{0x8000 | rand >> 48:04x}-{rand & 0xFFFF_FFFF_FFFF:012x}"
    )
