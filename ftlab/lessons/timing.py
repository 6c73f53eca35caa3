"""Timing two ways of doing the same work so that a difference is a finding, not the load.

One timing of A against one of B says little on a shared machine: whatever else runs
slows whichever pass it happens to overlap, and the ratio can flip between two executions
of the same notebook (chapter 05 once printed checkpointing's cost as +28% and, re-run,
-66%). :func:`interleaved` times the arms in alternating rounds (A, B, then B, A, ...),
so that load that comes and goes hits both arms alike, and keeps every round: the spread
of the per-round ratios says whether the difference is larger than what the load does.
A ratio is called a finding only when every round agrees on its side of 1
(:meth:`Timings.finding`); otherwise the chapter prints "can't tell", not a number.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from ftlab.errors import ArgumentError

__all__ = ["Timings", "interleaved"]


@dataclass(frozen=True)
class Timings:
    """Seconds per round of each arm, in the order the rounds ran."""

    seconds: dict[str, tuple[float, ...]]

    def median(self, arm: str) -> float:
        return statistics.median(self.seconds[arm])

    def ratios(self, arm: str, baseline: str) -> tuple[float, ...]:
        """``arm / baseline`` round by round (the two passes of one round ran back to back)."""
        return tuple(a / b for a, b in zip(self.seconds[arm], self.seconds[baseline]))

    def finding(self, arm: str, baseline: str) -> bool:
        """Whether every round puts ``arm`` on the same side of ``baseline``."""
        r = self.ratios(arm, baseline)
        return len(r) >= 3 and (all(x > 1 for x in r) or all(x < 1 for x in r))

    def describe(self, arm: str, baseline: str) -> str:
        r = sorted(self.ratios(arm, baseline))
        text = (f"{arm} / {baseline}: {statistics.median(r):.2f}x (median of {len(r)} interleaved rounds, "
                f"range {r[0]:.2f}x to {r[-1]:.2f}x)")
        if self.finding(arm, baseline):
            return text + f": {'slower' if r[0] > 1 else 'faster'} in every round"
        return text + ": the rounds disagree, can't tell at this load"


def interleaved(arms: Mapping[str, Callable[[], object]], rounds: int = 5, warmup: int = 1) -> Timings:
    """Time each callable of ``arms`` once per round, ``rounds`` rounds, the order reversed
    every other round (A, B, B, A, A, B, ...), after ``warmup`` untimed calls of each.

    Each callable does the whole unit of work (e.g. one forward and backward pass) and
    finishes it before returning (on a GPU, synchronize inside it)."""
    if rounds < 1 or warmup < 0:
        raise ArgumentError("interleaved", "rounds" if rounds < 1 else "warmup", rounds if rounds < 1 else warmup,
                            "rounds >= 1 and warmup >= 0")
    if len(arms) < 1:
        raise ArgumentError("interleaved", "arms", dict(arms), "at least one named callable")
    names = list(arms)
    for name in names:
        for _ in range(warmup):
            arms[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        for name in (names if round_ % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            arms[name]()
            seconds[name].append(time.perf_counter() - start)
    return Timings({name: tuple(s) for name, s in seconds.items()})
