"""Gradient clipping, read from a run's gradient-norm history.

Trainer clips the global gradient norm to ``max_grad_norm`` before every optimizer step
(``torch.nn.utils.clip_grad_norm_``: when the norm ``g`` exceeds ``c``, every gradient is scaled
by ``c / g``, so the step keeps its direction and loses length). It logs the norm measured
*before* clipping as ``grad_norm`` (also with ``max_grad_norm=0``, where nothing is clipped),
and ftlab's Recorder files it in ``Run.history`` at every step. So one run's history tells

* how often its own threshold acted: :func:`clipped_fraction` at ``run.config.max_grad_norm``;
* how often another threshold would have acted *on this trajectory*: the same function at
  0.3, say. Only the first clipped step is exact: after it the run would have gone elsewhere.
  The fraction says how much of training a threshold touches, not what it would have done;
* where the spikes are: :func:`spikes`, steps whose norm jumps above the recent typical one.

Under Adam, clipping is not a smaller learning rate: Adam divides the gradient's running mean
by the root of its running second moment, so a factor shared by every step cancels out. A
threshold acts through the steps it scales *more than their neighbours*: a spike shrunk to
the threshold moves the weights and the moment estimates less. A threshold below the typical
norm clips every step and equalises their norms, a mild re-weighting; under plain SGD the
same threshold would shrink every step.
"""
from __future__ import annotations

import statistics
from typing import Any, Sequence

from ftlab.config.run_config import is_finite_number
from ftlab.runs.record import Run

__all__ = ["grad_norms", "clipped_fraction", "spikes", "clipping_summary"]


def grad_norms(run: Run) -> tuple[list[int], list[float]]:
    """(steps, pre-clipping gradient norms) of a run; ValueError when it logged none."""
    steps, norms = run.series("grad_norm")
    if not norms:
        raise ValueError(f"{run.name} has no grad_norm in its history (a run of 0 steps, or one "
                         f"recorded before ftlab logged the norm): train it again to read its clipping")
    return steps, norms


def clipped_fraction(norms: Run | Sequence[float], max_grad_norm: float) -> float:
    """The fraction of steps whose gradient norm exceeded ``max_grad_norm``: the steps that
    clipping at that value scales down (``clip_grad_norm_`` leaves a norm at or below it as it is).
    ``norms``: a Run (its history) or the norms themselves. ``max_grad_norm=0`` means no clipping: 0."""
    if not is_finite_number(max_grad_norm) or max_grad_norm < 0:
        raise ValueError(f"max_grad_norm must be a number >= 0 (0 = no clipping), got {max_grad_norm!r}")
    values = grad_norms(norms)[1] if isinstance(norms, Run) else [float(n) for n in norms]
    if not values:
        raise ValueError("no gradient norms given")
    if max_grad_norm == 0:
        return 0.0
    return sum(1 for n in values if n > max_grad_norm) / len(values)


def spikes(norms: Sequence[float], factor: float = 2.0, window: int = 10) -> list[int]:
    """Indices of the steps whose norm is above ``factor`` x the median of the ``window``
    steps before it (the first step has no past, so it is never a spike)."""
    if not is_finite_number(factor) or factor <= 1:
        raise ValueError(f"factor must be a number > 1, got {factor!r}")
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an int >= 1, got {window!r}")
    return [i for i in range(1, len(norms)) if norms[i] > factor * statistics.median(norms[max(0, i - window):i])]


def clipping_summary(run: Run, thresholds: Sequence[float] = (1.0, 0.3)) -> dict[str, Any]:
    """What a chapter prints for one run: its steps, the median and largest norm, the number of
    spikes, and the fraction of steps each threshold clips (``{"clipped": {1.0: 0.12, 0.3: 0.9}}``)."""
    _, values = grad_norms(run)
    return {"run": run.name, "steps": len(values), "median_norm": statistics.median(values),
            "max_norm": max(values), "spikes": len(spikes(values)),
            "clipped": {float(t): clipped_fraction(values, t) for t in thresholds}}
