"""Batch size as a knob: which batch to pick, and what the learning rate should do when it changes.

Two questions a learner asks when changing ``per_device_train_batch_size`` (or
``gradient_accumulation_steps``; what matters is the **effective** batch, the sequences per
optimizer step, ``per_device_train_batch_size * gradient_accumulation_steps``):

1. **Which batch?** :func:`batch_size_for` is Power Lines' fit of the best batch as a function
   of the training tokens alone (Bergsma et al. 2025). It lives in :mod:`ftlab.lessons.weight_decay`
   beside the weight-decay time scale because the two laws come from the same paper and meet
   in one formula (``tau = B / (eta * lambda * D)``); it is re-exported here.
2. **Which learning rate at the new batch?** A larger batch averages more examples, so its
   gradient is less noisy and the optimizer can take bigger steps, and it takes fewer of them
   for the same data. :func:`scaled_learning_rate` applies the two textbook rules:

   * ``"linear"`` (Goyal et al. 2017, arXiv:1706.02677): ``lr * to / from``. With SGD, k
     small steps of size ``lr`` on k batches move the weights about as far as one step of
     ``k * lr`` on their union, as long as the gradient barely changes over those k steps.
   * ``"sqrt"`` (Krizhevsky 2014; Malladi et al. 2022, arXiv:2205.10287 for Adam):
     ``lr * sqrt(to / from)``. The gradient noise's standard deviation shrinks like
     ``1 / sqrt(batch)``; Adam already divides by the gradient's size, so keeping the noise of
     each step constant calls for the square root.

   Both hold only up to a "critical" batch, beyond which a bigger batch stops buying fewer
   steps; near it no rule replaces a short learning-rate sweep.
"""
from __future__ import annotations

import math

from ftlab.config.run_config import RunConfig, is_finite_number
from ftlab.errors import ArgumentError
from ftlab.lessons.weight_decay import batch_size_for, batch_tokens_for

__all__ = ["scaled_learning_rate", "SCALING_RULES", "batch_size_for", "batch_tokens_for", "at_equal_data"]

SCALING_RULES = ("linear", "sqrt")
"""The rules :func:`scaled_learning_rate` knows: the learning rate grows as the batch ratio, or
as its square root."""


def scaled_learning_rate(lr: float, from_batch: float, to_batch: float, rule: str = "linear") -> float:
    """The learning rate for ``to_batch`` sequences per step, given that ``lr`` worked at
    ``from_batch``: ``lr * (to_batch / from_batch)`` (``rule="linear"``, the rule for SGD) or
    ``lr * sqrt(to_batch / from_batch)`` (``rule="sqrt"``, the rule for Adam-type optimizers).

    Batches are effective batches (sequences per optimizer step, accumulation included); any
    unit works as long as both are in it, since only their ratio matters. Going down in batch
    scales the learning rate down by the same rule. An ArgumentError names the argument that is
    not a positive number, or the unknown rule.
    """
    if not is_finite_number(lr) or lr <= 0:
        raise ArgumentError("scaled_learning_rate", "lr", lr, "the learning rate that worked at from_batch, "
                                                              "a finite number > 0")
    for name, batch in (("from_batch", from_batch), ("to_batch", to_batch)):
        if not is_finite_number(batch) or batch <= 0:
            raise ArgumentError("scaled_learning_rate", name, batch, "a number of sequences per optimizer step > 0 "
                                "(per_device_train_batch_size * gradient_accumulation_steps)")
    if rule not in SCALING_RULES:
        raise ArgumentError("scaled_learning_rate", "rule", rule, f"one of {', '.join(map(repr, SCALING_RULES))}: "
                                                                  f"'linear' for SGD, 'sqrt' for Adam-type optimizers")
    ratio = to_batch / from_batch
    return lr * (ratio if rule == "linear" else math.sqrt(ratio))


def at_equal_data(base: RunConfig, batch: int) -> RunConfig:
    """``base`` trained at ``batch`` (no accumulation) on the same examples: ``base``'s steps
    times its batch, read in as many steps as that batch needs, and evaluated as often.

    Why: compared at equal steps, a larger batch simply reads more data and wins for that
    reason alone; at equal data the comparison is of how the same examples are split into
    steps, which is what the batch-size question asks (chapter 05, and the transfer benchmark).
    """
    examples = base.max_steps * base.per_device_train_batch_size * base.gradient_accumulation_steps
    if not (isinstance(batch, int) and 1 <= batch <= examples and examples % batch == 0):
        raise ArgumentError("at_equal_data", "batch", batch, f"a whole number from 1 to {examples} that divides the {examples} examples "
                            f"the base reads ({base.max_steps} steps of {base.per_device_train_batch_size})")
    evaluations = max(1, base.max_steps // base.eval_steps)
    steps = examples // batch
    return base.replace(per_device_train_batch_size=batch, gradient_accumulation_steps=1, max_steps=steps,
                        eval_steps=max(1, steps // evaluations))
