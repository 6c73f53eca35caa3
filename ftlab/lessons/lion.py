"""Lion, taken apart: one update rule that keeps half of AdamW's state and moves every weight
by exactly the learning rate.

Lion ("EvoLved Sign Momentum", Chen et al. 2023, arXiv:2302.06675) was found by a program
search over update rules. Its step is short enough to read in one go (:func:`lion_step`):

1. **Decoupled weight decay**, as in AdamW: ``p <- p * (1 - lr * wd)``.
2. **Direction**: the sign of an interpolation between the momentum and the new gradient,
   ``c = beta1 * m + (1 - beta1) * g``. Only the sign is used, so every coordinate moves by
   ``+lr``, ``-lr`` or (where ``c`` is exactly 0) not at all: the step has the same size for
   every weight, however large or small its gradient. There is no second moment to divide by,
   which is where AdamW's adaptivity came from; the sign does that job more bluntly.
3. **Momentum**: ``m <- beta2 * m + (1 - beta2) * g``, with a *different*, slower beta than the
   one used for the direction, and updated only after the direction was taken.

Why a chapter cares:

* **Memory**: one state tensor per weight (``m``) instead of AdamW's two, so half the
  optimizer state (see :data:`ftlab.config.optimizers.OPTIMIZER_TABLE`).
* **Learning rate**: a sign step has norm ``lr * sqrt(n)``, larger than AdamW's typical step
  at the same ``lr``, so Lion wants a learning rate 3-10x smaller than AdamW's, and (to keep
  the same decay time scale ``1 / (lr * wd)``, see :func:`ftlab.lessons.weight_decay.adamw_timescale`)
  a weight decay 3-10x larger.
* **Betas**: the paper's defaults are ``(0.9, 0.99)``. Trainer's ``lion_32bit`` / ``lion_8bit``
  pass ``(adam_beta1, adam_beta2)``, which are ``(0.9, 0.999)`` unless set: a momentum that
  averages over about 1000 steps instead of 100.

The test checks :func:`lion_step` step by step against bitsandbytes' ``Lion``, the class
Trainer builds for ``optim="lion_32bit"``.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["lion_step"]


@torch.no_grad()
def lion_step(param: Tensor, grad: Tensor, exp_avg: Tensor, *, lr: float,
              betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0) -> None:
    """One Lion update, in place on ``param`` and on ``exp_avg`` (the momentum ``m``, zeros
    before the first step).

    Term by term (``beta1, beta2 = betas``):

    1. ``p <- p * (1 - lr * wd)``: decoupled decay, the weight shrinks by a fixed fraction and
       the gradient is not touched (as in :func:`ftlab.lessons.weight_decay.adamw_step`).
    2. ``c = beta1 * m + (1 - beta1) * g``: a look at where the momentum is heading with the new
       gradient mixed in; ``p <- p - lr * sign(c)``.
    3. ``m <- beta2 * m + (1 - beta2) * g``: the momentum itself is averaged with ``beta2``.
       With ``beta2 > beta1`` the state remembers longer than the direction looks.

    No step count is needed: Lion has no bias correction (a sign does not care that ``m``
    starts small). The operations follow the order bitsandbytes uses so the two agree to
    float32 rounding; each line is the textbook formula.
    """
    beta1, beta2 = betas
    if weight_decay != 0:
        param.mul_(1 - lr * weight_decay)
    direction = exp_avg.mul(beta1).add(grad, alpha=1 - beta1).sign()
    param.add_(direction, alpha=-lr)
    exp_avg.mul_(beta2).add_(grad, alpha=1 - beta2)
