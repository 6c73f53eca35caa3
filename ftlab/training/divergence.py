"""Diagnosing a run whose loss blew up: a pure function of a :class:`~ftlab.runs.record.Run`,
applied by ``train`` to every run it returns (cached runs too), and advice on what to change."""
from __future__ import annotations

import math
import warnings

from ftlab.runs.record import TRAIN_LOSS_WINDOW, Run

__all__ = ["RUNAWAY_EVAL_FACTOR", "RUNAWAY_TRAIN_FACTOR", "flag_divergence", "warn_if_diverged"]


RUNAWAY_EVAL_FACTOR = 1.5
"""A run whose final eval loss ends above this multiple of its step-0 eval loss, while its
train loss did not fall either, ran away."""
RUNAWAY_TRAIN_FACTOR = 2.0
"""A run whose train loss at the end averages above this multiple of its first steps' ran away."""


def flag_divergence(run: Run) -> None:
    """Set ``metrics["diverged"]`` ("non-finite" or "runaway") and ``metrics["divergence_advice"]``
    when the loss blew up; remove both otherwise (absent means it did not).

    * non-finite: a train or eval loss became NaN or infinite;
    * runaway: the train loss at the end averages more than 2x its first steps, or the final
      eval loss is more than 1.5x the step-0 one while the train loss did not fall either
      (full fine-tuning at learning rate 0.9: eval loss 5.6 -> 28.5). A train loss that
      falls while the eval loss rises is overfitting, not divergence, and is not flagged.

    The head and tail of the train loss are means over the same window as ``train_loss``
    (1 to 5 steps), so one noisy step does not decide.
    """
    m = run.metrics
    m.pop("diverged", None)
    m.pop("divergence_advice", None)
    losses = [float(r["loss"]) for r in run.history if r.get("loss") is not None]
    evals = [float(e["eval_loss"]) for e in run.evals if e.get("eval_loss") is not None]
    k = max(1, min(TRAIN_LOSS_WINDOW, len(losses) // 5))
    head = sum(losses[:k]) / k if losses else math.nan
    tail = sum(losses[-k:]) / k if losses else math.nan
    if any(not math.isfinite(x) for x in losses + evals):
        kind, what = "non-finite", "the loss became NaN or infinite"
    elif len(losses) >= 2 and tail > RUNAWAY_TRAIN_FACTOR * head:
        kind, what = "runaway", f"the train loss rose from {head:.3g} to {tail:.3g}"
    elif len(evals) >= 2 and evals[-1] > RUNAWAY_EVAL_FACTOR * evals[0] and not (tail < head):
        kind, what = "runaway", f"the eval loss rose from {evals[0]:.3g} at step 0 to {evals[-1]:.3g}"
    else:
        return
    cfg = run.config
    fixes = [f"lower the learning rate (this run: {cfg.learning_rate:g}; try 3-10x lower)"]
    if not cfg.warmup_steps:
        fixes.append("add warmup (warmup_steps=0.1)")
    if not cfg.max_grad_norm or cfg.max_grad_norm > 1:
        fixes.append("clip gradients (max_grad_norm=1.0)")
    m["diverged"] = kind
    m["divergence_advice"] = f"{what}: {', '.join(fixes[:-1]) + ' or ' + fixes[-1] if len(fixes) > 1 else fixes[0]}"


def warn_if_diverged(run: Run) -> None:
    """A UserWarning with the advice when ``run`` is flagged as diverged (from the cache too)."""
    if run.metrics.get("diverged"):
        warnings.warn(f"{run.name} diverged ({run.metrics['diverged']}): {run.metrics['divergence_advice']}",
                      UserWarning, stacklevel=3)
