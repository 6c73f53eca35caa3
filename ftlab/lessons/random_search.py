"""Random search, by hand: what Optuna's ``RandomSampler`` draws, in a few lines.

Random search spends a budget of n trials on n independent draws from the space. Each knob
then gets n distinct values, where a grid of the same size gives it only n^(1/k) for k
knobs: when one knob matters and the others do not, random search tries that knob at many
more values (Bergstra and Bengio, 2012). A rate or a decay spans decades, so it is drawn
uniformly in its logarithm. Chapter 08 checks this function against the trials of its own
random searches, value for value.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np


def random_points(space: Mapping[str, tuple[float, float]], n: int, seed: int) -> list[dict[str, float]]:
    """``n`` points of a space of log-uniform knobs ``{name: (low, high)}``, drawn as Optuna's
    ``RandomSampler(seed=seed)`` draws them when a trial asks for the knobs in this order:
    one NumPy ``RandomState`` stream, one uniform draw in log space per knob and trial."""
    rng = np.random.RandomState(seed)
    points = []
    for _ in range(n):
        point = {}
        for name, (low, high) in space.items():
            drawn = math.exp(rng.uniform(math.log(low), math.log(high)))
            point[name] = min(max(drawn, low), high)  # exp(log(x)) can land a rounding outside the range
        points.append(point)
    return points
