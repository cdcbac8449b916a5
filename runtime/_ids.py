"""Run ids that sort by start time (UUIDv7 layout: 48-bit milliseconds first)."""

from __future__ import annotations

import os
import time

_last_ms = 0
_counter = 0


def new_run_id() -> str:
    """A new UUIDv7-style id, as a string.

    Ids made in one process sort (as strings) in the order they were made: within one
    millisecond a 12-bit counter orders them; on counter overflow the timestamp is
    advanced by one millisecond rather than repeated.
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
    rand = int.from_bytes(os.urandom(8), "big") & 0x3FFF_FFFF_FFFF_FFFF
    value = (_last_ms << 80) | (0x7 << 76) | (_counter << 64) | (0b10 << 62) | rand
    digits = f"{value:032x}"  # str(uuid.UUID(int=value)), without building the UUID
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
