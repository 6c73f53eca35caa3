"""The learning-rate range test (Leslie Smith 2015; popularised by fastai's `lr_find`).

Idea: instead of guessing a learning rate and paying for a full run to learn it was wrong, train
for a few dozen steps while the learning rate grows exponentially from tiny to huge, and watch the
loss. Three regimes show up on a log-x plot:

- too small: the loss barely moves (the updates are lost in noise);
- useful: the loss falls, fastest somewhere in the middle;
- too large: the updates overshoot and the loss climbs, then explodes.

The test is cheap (one short burst of steps) and it is measured on YOUR model and data, so it
reflects things a rule of thumb cannot: LoRA vs full fine-tuning, the scale of the loss, the batch.
It is a guide, not an oracle: each point was trained with a different learning rate for one step on
top of all the previous ones, so the curve mixes "how good is this rate" with "how far has the
model already moved". Read it as "where does it start to work and where does it break".

`lr_range_test` leaves the model exactly as it found it (weights, requires_grad flags, grads,
train/eval mode), so it can be run before the real training in the same notebook.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ftlab.ui.plot import figure_and_axes

LossFn = Callable[[torch.nn.Module, Mapping[str, Any]], torch.Tensor]


@dataclass
class LRFinderResult:
    """What the range test measured. All lists are aligned: point i is the loss computed at step i,
    just before the optimizer stepped with learning rate lrs[i].

    lrs: the learning rate of each step (exponentially spaced).
    losses: the raw loss of each step; noisy, because every step sees a different batch.
    smoothed: the bias-corrected exponential moving average of `losses`; the suggestion uses this.
    suggestion: the learning rate where the smoothed loss fell fastest per decade of learning rate.
    diverged_at: the learning rate at which the test stopped because the loss blew up, or None if
        it ran to end_lr without diverging (then end_lr was not large enough to find the edge).
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    diverged_at: float | None

    def plot(self, ax: Axes | None = None, raw: bool = True) -> Figure:
        """Loss against learning rate on a log x axis, with the suggestion (and divergence) marked."""
        fig, ax = figure_and_axes(ax)
        if raw:
            ax.plot(self.lrs, self.losses, color="C0", alpha=0.3, lw=1, label="loss")
        ax.plot(self.lrs, self.smoothed, color="C0", lw=2, label="smoothed loss")
        i = min(range(len(self.lrs)), key=lambda j: abs(math.log(self.lrs[j]) - math.log(self.suggestion)))
        ax.plot([self.suggestion], [self.smoothed[i]], marker="o", color="C3", ms=8, ls="none",
                label=f"steepest descent: {self.suggestion:.2e}")
        if self.diverged_at is not None:
            ax.axvline(self.diverged_at, color="C7", ls="--", lw=1, label=f"diverged at {self.diverged_at:.2e}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("training loss")
        ax.set_title("Learning-rate range test")
        # The blow-up at the end can be orders of magnitude above the useful part; clip the y axis to
        # the start of the test plus a margin, so the region we care about is not squashed flat.
        finite = [s for s in self.smoothed if math.isfinite(s)]
        if finite:
            lo, top = min(finite), max(finite[0], min(finite) * 1.5)
            ax.set_ylim(lo - 0.05 * (top - lo + 1e-12), top + 0.1 * (top - lo + 1e-12))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        return fig


def _steepest_descent(lrs: list[float], smoothed: list[float]) -> float:
    """The lr where d(smoothed loss) / d(log lr) is most negative, away from both ends.

    Why the steepest point and not the minimum: at the minimum the loss has stopped improving because
    the rate is already at the edge of stability; a real run at that rate, for many steps, tends to
    diverge. Where the loss falls fastest the rate is big enough to make quick progress and still a
    safe distance from the edge.

    Why skip the ends: at the start the model has barely moved and the moving average is still built
    from a couple of samples, so its slope is mostly noise. At the end the average lags behind the raw
    loss (that is what smoothing does), so the last few smoothed points can still slope downwards
    while the real loss has already turned up; a "steepest" point there would sit on the cliff.
    """
    n = len(lrs)
    skip = max(1, n // 10)
    lo, hi = skip, n - 1 - skip  # central differences need a neighbour on each side
    if hi <= lo:  # too few points to skip anything: use every interior point
        lo, hi = 1, n - 2
    if hi < lo:  # fewer than 3 points: no slope at all, fall back to the lowest loss
        return lrs[min(range(n), key=lambda i: smoothed[i])]
    best_i, best_slope = lo, math.inf
    for i in range(lo, hi + 1):
        slope = (smoothed[i + 1] - smoothed[i - 1]) / (math.log(lrs[i + 1]) - math.log(lrs[i - 1]))
        if slope < best_slope:
            best_i, best_slope = i, slope
    return lrs[best_i]


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def lr_range_test(model: torch.nn.Module, batches: Iterable[Mapping[str, Any]], *, start_lr: float = 1e-7,
                  end_lr: float = 1.0, num_steps: int = 100, weight_decay: float = 0.0, smoothing: float = 0.9,
                  diverge_factor: float = 4.0, loss_fn: LossFn | None = None,
                  trainable_only: bool = True) -> LRFinderResult:
    """Run the range test on `model` and give the model back unchanged.

    Step i (0-based) trains with lr_i = start_lr * (end_lr / start_lr) ** (i / (num_steps - 1)), so
    the rates are evenly spaced on a log axis: every decade gets the same number of steps. The
    optimizer is AdamW (what Trainer uses) over the trainable parameters, or over all of them with
    trainable_only=False (their requires_grad is switched on for the test and restored after).

    batches: dicts the model accepts as keyword arguments (input_ids, attention_mask, labels...);
        cycled if there are fewer than num_steps. Tensors are moved to the model's device.
    smoothing: beta of the exponential moving average of the loss. The average starts at 0, so it is
        divided by (1 - beta**(i+1)) (Adam's bias correction); without that the first points would
        read as a loss far below the real one.
    diverge_factor: stop as soon as the smoothed loss exceeds this multiple of the best smoothed loss
        so far (or the loss is inf/nan): past that point the model is being destroyed, the numbers
        carry no information, and every further step is wasted time.
    loss_fn: loss_fn(model, batch) -> scalar tensor; default model(**batch).loss.

    Raises ValueError for start_lr/end_lr that are not positive or not increasing, num_steps < 10,
    smoothing outside [0, 1), diverge_factor <= 1, or no batches.
    """
    if not start_lr > 0:
        raise ValueError(f"start_lr must be > 0, got {start_lr}")
    if not end_lr > 0:
        raise ValueError(f"end_lr must be > 0, got {end_lr}")
    if start_lr >= end_lr:
        raise ValueError(f"start_lr ({start_lr}) must be smaller than end_lr ({end_lr})")
    if num_steps < 10:
        raise ValueError(f"num_steps must be >= 10 to give a usable curve, got {num_steps}")
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    if not diverge_factor > 1:
        raise ValueError(f"diverge_factor must be > 1, got {diverge_factor}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")

    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad or not trainable_only]
    if not named:
        raise ValueError("model has no trainable parameters (requires_grad is False everywhere); "
                         "pass trainable_only=False to test all parameters")
    params = [p for _, p in named]
    device = params[0].device

    # Everything the test changes, saved so it can be put back exactly: the weights it trains (a
    # detached copy, like state_dict()), every requires_grad flag, the .grad tensors, train/eval mode.
    saved_weights = {name: p.detach().clone() for name, p in named}
    saved_flags = {name: p.requires_grad for name, p in model.named_parameters()}
    saved_grads = {name: (None if p.grad is None else p.grad.detach().clone()) for name, p in named}
    saved_modes = [(m, m.training) for m in model.modules()]  # per module: some may be frozen in eval

    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    diverged_at: float | None = None
    batch_iter = itertools.cycle(batches)
    try:
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        model.train()
        optimizer = torch.optim.AdamW(params, lr=start_lr, weight_decay=weight_decay)
        ratio = end_lr / start_lr
        avg, best = 0.0, math.inf
        for i in range(num_steps):
            lr = start_lr * ratio ** (i / (num_steps - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            try:
                batch = next(batch_iter)
            except StopIteration:
                raise ValueError("batches is empty") from None
            batch = _to_device(batch, device)
            loss = loss_fn(model, batch) if loss_fn is not None else model(**batch).loss
            value = float(loss.detach())
            if not math.isfinite(value):
                diverged_at = lr
                break
            avg = smoothing * avg + (1 - smoothing) * value
            smooth = avg / (1 - smoothing ** (i + 1))
            lrs.append(lr)
            losses.append(value)
            smoothed.append(smooth)
            if smooth > diverge_factor * best:
                diverged_at = lr
                break
            best = min(best, smooth)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        del optimizer  # drop AdamW's two moment buffers (2x the trainable parameters) right away
    finally:
        with torch.no_grad():
            for name, p in named:
                p.copy_(saved_weights[name])
        for name, p in model.named_parameters():
            p.requires_grad_(saved_flags[name])
        for name, p in named:
            p.grad = saved_grads[name]
        for m, mode in saved_modes:
            m.training = mode

    if not lrs:
        raise ValueError(f"the loss was not finite at the first step (start_lr={start_lr}); check the model and batches")
    return LRFinderResult(lrs=lrs, losses=losses, smoothed=smoothed, suggestion=_steepest_descent(lrs, smoothed),
                          diverged_at=diverged_at)
