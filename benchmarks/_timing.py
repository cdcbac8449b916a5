"""Timing helpers: medians of repeated samples, in one trio run."""

from __future__ import annotations

import glob
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final


async def median_seconds(
    call: Callable[[], Awaitable[object]], *, samples: int, batch: int
) -> float:
    """The median over ``samples`` of the mean time of ``batch`` calls (after one warm-up)."""
    await call()
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(batch):
            await call()
        times.append((time.perf_counter() - start) / batch)
    return statistics.median(times)


SAMPLING: Final = (5, 4000)
"""How the slopes are timed: ``(samples, tokens per sample)``, a sample's batch being
as many runs as make that many tokens (:func:`batch_of`)."""
QUICK_SAMPLING: Final = (1, 1)
"""Quick mode's (the CI smoke, which judges no figure): one sample of one run at each
size, which runs every row's code as the full plan does, at a hundredth of its CPU."""


def batch_of(tokens: int, k: int) -> int:
    """Runs of ``k`` tokens in a batch of about ``tokens`` tokens (one at least)."""
    return max(1, tokens // k)


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def ratio_of(measured: list[float], floor: list[float]) -> dict[str, Any]:
    """Rounds of a figure against its floor's, round by round: the median ratio and each
    round's."""
    ratios = [m / f for m, f in zip(measured, floor, strict=True)]
    return {"ratio": statistics.median(ratios), "ratios": ratios}


def median_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Where the median of the rounds' population lies, from ``values`` alone (no
    assumption about their distribution): the ``k``-th lowest and ``k``-th highest of
    them, ``k`` the largest whose binomial coverage is at least ``confidence`` (or 1,
    the lowest and the highest, when no ``k`` reaches it: then ``coverage`` says how
    much they cover). Of 9 rounds, the 2nd lowest and 2nd highest cover 96 %; of 5,
    the lowest and highest 94 %."""
    n = len(values)
    if n == 0:
        raise ValueError("median_interval needs at least one value")
    ordered = sorted(values)

    def coverage(k: int) -> float:
        # P(k-th lowest <= median <= k-th highest) = 1 - 2 P(Binomial(n, 1/2) < k)
        return 1.0 - 2.0 * sum(math.comb(n, i) for i in range(k)) / 2.0**n

    k = 1
    while k < (n + 1) // 2 and coverage(k + 1) >= confidence:
        k += 1
    return {"low": ordered[k - 1], "high": ordered[n - k], "coverage": coverage(k)}


class GCTime:
    """The wall time the cyclic garbage collector takes, through ``gc.callbacks``."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


def callgrind_sections(prefix: str) -> list[int]:
    """The instructions of each section, in order, from callgrind's dumps ``prefix.N``
    of a process run by :func:`under_callgrind` (a section opens with ``os.getppid()``
    and closes with ``os.getpgrp()``: the two libc calls are the marks, as nothing else
    in the process makes them)."""
    counted = []
    for path in glob.glob(prefix + ".*"):
        match = re.fullmatch(re.escape(prefix) + r"\.(\d+)", path)
        if match is None:
            continue
        with open(path) as file:
            text = file.read()
        totals = re.search(r"^(?:totals|summary): (\d+)", text, re.M)
        trigger = re.search(r"^desc: Trigger: (.*)$", text, re.M)
        if totals and trigger and "getpgrp" in trigger.group(1):
            counted.append((int(match.group(1)), int(totals.group(1))))
    return [instructions for _, instructions in sorted(counted)]


def under_callgrind(prefix: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
    """Run ``python argv`` under ``valgrind --tool=callgrind`` (``PYTHONHASHSEED=0``),
    its dumps ``prefix.N`` (see :func:`callgrind_sections`)."""
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={prefix}",
            "--zero-before=getppid",
            "--dump-before=getpgrp",
            sys.executable,
            *argv,
        ],
        check=True,
        env={**os.environ, **(env or {}), "PYTHONHASHSEED": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
