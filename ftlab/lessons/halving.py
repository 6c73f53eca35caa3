"""Successive halving, by hand: the rule Optuna's ``SuccessiveHalvingPruner`` applies.

Most bad configurations look bad early. Successive halving gives every trial a small budget
(``min_resource`` steps), lets only the best 1/η of them go on to η times that budget, and
so on up the rungs. Optuna runs it asynchronously (ASHA): a trial reaching a rung is
compared with every trial that reached that rung before it, and it goes on if it is within
their best 1/η (the very first ones go on if they are the best so far). Chapter 08 replays
its unpruned search's evaluations through this function and through Optuna's pruner, and
checks that both stop the same trials at the same steps.
"""
from __future__ import annotations

from typing import Sequence


def asha_stops(curves: Sequence[Sequence[tuple[int, float]]], min_resource: int, eta: int = 3) -> list[int | None]:
    """For trials arriving in this order, each reporting (step, loss) evaluations: the step at
    which successive halving stops each one, None where it runs to its end."""
    reached: dict[int, list[float]] = {}  # rung -> the losses of every trial that reached it
    stops: list[int | None] = []
    for curve in curves:
        rung, stop = 0, None
        for step, loss in curve:
            while stop is None and step >= min_resource * eta ** rung:
                seen = reached.setdefault(rung, [])
                seen.append(loss)
                cutoff = sorted(seen)[max(len(seen) // eta - 1, 0)]  # the worst loss still in the best 1/eta
                if loss > cutoff:
                    stop = step
                rung += 1
            if stop is not None:
                break
        stops.append(stop)
    return stops
