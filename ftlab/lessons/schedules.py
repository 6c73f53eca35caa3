"""Learning-rate schedules: what the library does, and one of them rebuilt by hand.

A schedule is just a function from "optimizer step" to "learning rate". Trainer builds it with
`transformers.get_scheduler`, which wraps a `torch.optim.lr_scheduler.LambdaLR`: the optimizer keeps
a base learning rate and the scheduler multiplies it by a factor in [0, 1] (the "lambda") that depends
only on the step number. So the whole schedule can be read off without training anything: build a
throwaway optimizer over one dummy parameter, step it, and record the learning rate. That is what
`lr_curve` does, and because it calls the very function Trainer calls, the curves in the notebook are
the schedules a run will actually follow, not a re-drawing from memory of a paper.

`warmup_cosine_lr` then writes the most common schedule (linear warmup, cosine decay) from scratch
with nothing but `math`, and the tests check it against the library at every step. Seeing the two
agree to the last digit is the point: the "magic" schedule is a few lines of arithmetic.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from transformers import get_scheduler

from ftlab.config.run_config import resolve_warmup_steps


#: The schedules a learner compares, spelled as `TrainingArguments.lr_scheduler_type` spells them.
#: Left out on purpose: "reduce_lr_on_plateau" and "greedy" react to the eval loss, so they have no
#: curve that depends on the step alone, and "cosine_warmup_with_min_lr" is an off-by-one variant of
#: "cosine_with_min_lr" that would draw on top of it.
SCHEDULERS: tuple[str, ...] = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "inverse_sqrt",
    "cosine_with_min_lr",
    "warmup_stable_decay",
)


def _check_name(name: str) -> None:
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; valid names: {', '.join(SCHEDULERS)}")


def default_scheduler_kwargs(name: str, num_training_steps: int) -> dict[str, Any]:
    """The `lr_scheduler_kwargs` a scheduler needs to run at all, or to look like itself on a plot.

    Most schedulers need nothing beyond warmup and length. The exceptions:

    - cosine_with_min_lr refuses to start without a floor (`min_lr` or `min_lr_rate`); 10% of the peak
      is the usual choice, and it is what makes this curve differ from plain "cosine".
    - warmup_stable_decay has no default decay length (`num_decay_steps` is a required argument of
      `get_wsd_schedule`, and `get_scheduler` only passes warmup and total steps). Decaying over the
      last 20% of the run is the common recipe; the stable phase is whatever is left after warmup.
    - cosine_with_restarts defaults to a single cycle, which is indistinguishable from "cosine" apart
      from the last step; 2 cycles show the restart.
    - polynomial: the library defaults (decay to lr_end=1e-7 with power=1.0) are spelled out so the
      learner can see them. With power 1 it is a straight line, i.e. almost exactly "linear"; raise
      `power` to bend it.
    """
    _check_name(name)
    if num_training_steps < 1:
        raise ValueError(f"num_training_steps must be >= 1, got {num_training_steps}")
    if name == "cosine_with_min_lr":
        return {"min_lr_rate": 0.1}
    if name == "warmup_stable_decay":
        return {"num_decay_steps": max(1, int(0.2 * num_training_steps))}
    if name == "cosine_with_restarts":
        return {"num_cycles": 2}
    if name == "polynomial":
        return {"lr_end": 1e-7, "power": 1.0}
    return {}


def lr_curve(name: str, *, num_training_steps: int, learning_rate: float, warmup_steps: int | float = 0,
             scheduler_kwargs: Mapping[str, Any] | None = None) -> list[float]:
    """The learning rate used at each optimizer step 0..num_training_steps-1, as Trainer would use it.

    This asks the library rather than re-implementing anything: it builds the scheduler with
    `transformers.get_scheduler` (the same call Trainer makes) on a throwaway optimizer and records
    the learning rate before each step. Trainer calls `optimizer.step()` and then
    `lr_scheduler.step()`, so the rate in force at step k is the one read before stepping k times.

    `warmup_steps` follows TrainingArguments: an int >= 1 is a step count, a float in [0, 1) a ratio of
    the run (rounded up). `scheduler_kwargs` default to `default_scheduler_kwargs(name, ...)`; a dict
    given here replaces them entirely (pass {} to get the bare library defaults).
    """
    _check_name(name)
    if num_training_steps < 1:
        raise ValueError(f"num_training_steps must be >= 1, got {num_training_steps}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    warmup = resolve_warmup_steps(warmup_steps, num_training_steps)
    kwargs = dict(default_scheduler_kwargs(name, num_training_steps) if scheduler_kwargs is None
                  else scheduler_kwargs)

    # One dummy parameter is enough: the scheduler only touches optimizer.param_groups[*]["lr"].
    # SGD keeps no state, and with no gradient its step() is a no-op, so this costs nothing.
    dummy = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([dummy], lr=learning_rate)
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=num_training_steps,
                              scheduler_specific_kwargs=kwargs)
    lrs: list[float] = []
    for _ in range(num_training_steps):
        lrs.append(float(optimizer.param_groups[0]["lr"]))
        optimizer.step()  # before scheduler.step(), in Trainer's order (and to keep torch from warning)
        scheduler.step()
    return lrs


def warmup_cosine_lr(step: int, *, learning_rate: float, warmup_steps: int | float, num_training_steps: int,
                     num_cycles: float = 0.5, min_lr_rate: float = 0.0) -> float:
    """Linear warmup then cosine decay, from scratch: the learning rate at optimizer `step`.

    This is the schedule behind `lr_scheduler_type="cosine"` (min_lr_rate=0) and
    `"cosine_with_min_lr"` (min_lr_rate>0), rebuilt with plain arithmetic:

    1. Warmup (step < warmup): rise in a straight line from 0 towards the peak, factor = step / warmup.
       Step 0 therefore trains with lr = 0: the first update only fills AdamW's moment estimates.
       Early Adam steps divide by a second moment estimated from one or two gradients, so a
       full-size step on it can be far too large; warmup keeps those steps small. Whether that
       matters depends on the rate: chapter 02's exercise 2 compares linear decay with and without
       warmup, each at its own rate.
    2. Progress (step >= warmup): how far through the decay phase we are, from 0 at the end of warmup
       to 1 at `num_training_steps`: progress = (step - warmup) / (total - warmup).
    3. Cosine: factor = 0.5 * (1 + cos(2*pi * num_cycles * progress)). With the default half cycle
       (num_cycles=0.5) this is cos(pi * progress) moved into [0, 1]: flat at the start (long time
       near the peak, where learning is fast), steepest in the middle, flat again near 0 at the end
       (small, careful steps while the model settles into a minimum).
    4. Floor: factor = factor * (1 - min_lr_rate) + min_lr_rate squeezes [0, 1] into
       [min_lr_rate, 1], so the run never stops learning entirely. With min_lr_rate=0 this changes
       nothing.
    5. The learning rate is learning_rate * factor (clamped at 0, as the library does, in case
       num_cycles > 0.5 ever makes it dip below).

    `max(1, ...)` in the divisions mirrors the library: it turns "0 warmup steps" and "no decay
    steps" into a division by 1 rather than by 0. `warmup_steps` may be a ratio, as in lr_curve.
    """
    warmup = resolve_warmup_steps(warmup_steps, num_training_steps)
    if step < warmup:  # 1. warmup: a straight line up from 0
        factor = float(step) / float(max(1, warmup))
    else:
        progress = float(step - warmup) / float(max(1, num_training_steps - warmup))  # 2. 0 -> 1 over the decay
        factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))  # 3. cosine, 1 -> 0
        factor = factor * (1 - min_lr_rate) + min_lr_rate  # 4. the floor
        factor = max(0.0, factor)
    return learning_rate * factor  # 5. the factor times the peak
