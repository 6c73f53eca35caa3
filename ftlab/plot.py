"""Plots that compare Runs. Each function draws on a new figure (or the given axes) and
returns the figure, so notebooks show it and tests can inspect it."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .memory import MiB, MemoryBreakdown
from .notebook import ipython_shell
from .quant import NF4Tensor, nf4_code, quantization_error
from .run import Run

MEMORY_PARTS = ("weights", "gradients", "optimizer", "activations")
MEMORY_COLORS = {"weights": "#4c72b0", "gradients": "#dd8452", "optimizer": "#55a868", "activations": "#c44e52"}


def show_figures_inline(shell: Any = None) -> bool:
    """Teach the running IPython to draw a matplotlib ``Figure`` as a PNG; True if it did.

    ftlab draws on ``matplotlib.figure.Figure`` objects rather than pyplot, so plots keep no
    global state between cells, widgets and tests. IPython, however, only learns to render a
    Figure when pyplot loads its inline backend; without this, a cell that returns a plot
    shows ``<Figure size 700x400 with 1 Axes>`` instead of the picture. ``import ftlab``
    calls it; outside IPython it does nothing (and does not import IPython).
    """
    if shell is None:
        shell = ipython_shell()
    if shell is None:
        return False
    from IPython.core.pylabtools import select_figure_formats
    select_figure_formats(shell, {"png"})
    return True


def _axes(ax: Axes | None, figsize: tuple[float, float] = (7, 4)) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def frame_steps(ax: Axes, ylabel: str, title: str | None = None) -> None:
    """The look every step-on-x plot shares, without the legend: also the frame of a plot
    that has no curve yet (the Playground before its first run), where a legend would be
    an empty box."""
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)


def _finish(ax: Axes, ylabel: str, title: str | None = None) -> None:
    """A finished step-on-x plot: the shared frame and the legend of its curves."""
    frame_steps(ax, ylabel, title)
    ax.legend(fontsize=8)


def _label(run: Run, i: int) -> str:
    return run.label or f"run {i} ({run.config_hash})"


LOSS_STYLES: dict[str, dict[str, Any]] = {"train": {"alpha": 0.6, "lw": 1}, "eval": {"marker": "o", "lw": 2}}
"""Train loss thin and faint (it is noisy), eval loss bold with a marker per evaluation."""


def plot_loss_curve(steps: Sequence[int], values: Sequence[float], kind: str, color: str, label: str,
                    ax: Axes | None = None) -> Figure:
    """One train or eval loss curve (``kind``) in the look :func:`plot_losses` gives every run,
    so a curve drawn on its own, such as the Playground's run still in training, looks like
    the one it becomes."""
    fig, ax = _axes(ax)
    ax.plot(steps, values, color=color, label=label, **LOSS_STYLES[kind])
    return fig


def plot_losses(runs: Sequence[Run], ax: Axes | None = None, train: bool = True, eval: bool = True,
                smooth: int = 1, title: str = "Loss") -> Figure:
    """Train loss (thin, optionally smoothed) and eval loss (markers) of several runs overlaid."""
    fig, ax = _axes(ax)
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        if train:
            steps, loss = run.series("loss")
            if smooth > 1 and len(loss) >= smooth:
                loss = [sum(loss[max(0, j - smooth + 1):j + 1]) / len(loss[max(0, j - smooth + 1):j + 1]) for j in range(len(loss))]
            plot_loss_curve(steps, loss, "train", color, f"{_label(run, i)} train", ax=ax)
        if eval:
            steps, loss = run.series("eval_loss")
            plot_loss_curve(steps, loss, "eval", color, f"{_label(run, i)} eval", ax=ax)
    _finish(ax, "cross-entropy loss", title)
    return fig


def plot_eval_by_tokens(runs: Sequence[Run], ax: Axes | None = None, title: str = "Eval loss by tokens seen") -> Figure:
    """Eval loss against the real training tokens read so far: runs at different batch sizes
    take different numbers of steps for the same data, so steps would compare unlike things."""
    fig, ax = _axes(ax)
    for i, run in enumerate(runs):
        seen, total = {0: 0}, 0
        for row in run.history:
            total += row.get("tokens", 0)
            seen[row["step"]] = total
        steps, loss = run.series("eval_loss")
        ax.plot([seen.get(s, total) for s in steps], loss, "o-", color=f"C{i % 10}", label=_label(run, i), markersize=4)
    ax.set_xlabel("training tokens seen")
    ax.set_ylabel("eval loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_metric(runs: Sequence[Run], key: str, ax: Axes | None = None, ylabel: str | None = None,
                logy: bool = False) -> Figure:
    """Any per-step history key (learning_rate, grad_norm, weight_norm, tokens_per_second)."""
    fig, ax = _axes(ax)
    for i, run in enumerate(runs):
        steps, values = run.series(key)
        ax.plot(steps, values, color=f"C{i % 10}", label=_label(run, i))
    if logy:
        ax.set_yscale("log")
    _finish(ax, ylabel or key.replace("_", " "))
    return fig


def plot_schedules(curves: Mapping[str, Sequence[float]], ax: Axes | None = None,
                   title: str = "Learning-rate schedules") -> Figure:
    """One line per schedule (step on x, learning rate on y), e.g.
    ``{n: schedules.lr_curve(n, ...) for n in schedules.SCHEDULERS}``."""
    fig, ax = _axes(ax, figsize=(8, 4.5))
    for i, (name, lrs) in enumerate(curves.items()):
        # dashes for the second set of ten, so no two of many lines share a color and a style
        ax.plot(range(len(lrs)), lrs, label=name, color=f"C{i % 10}", ls="-" if i < 10 else "--", lw=1.6)
    _finish(ax, "learning rate", title)
    return fig


def plot_lr(runs: Sequence[Run], ax: Axes | None = None) -> Figure:
    """The learning rate each run really used at each step."""
    return plot_metric(runs, "learning_rate", ax=ax, ylabel="learning rate")


def plot_memory(items: Mapping[str, MemoryBreakdown] | Iterable[Run], ax: Axes | None = None,
                title: str = "Training memory (measured)") -> Figure:
    """Stacked bars of weights / gradients / optimizer state / activations in MiB."""
    if isinstance(items, Mapping):
        pairs = list(items.items())
    else:
        pairs = [(_label(r, i), r.memory) for i, r in enumerate(items) if r.memory is not None]
    fig, ax = _axes(ax, figsize=(max(6.0, 1.3 * len(pairs) + 3), 4))
    names = [p[0] for p in pairs]
    bottom = [0.0] * len(pairs)
    for part in MEMORY_PARTS:
        values = [getattr(m, part) / MiB for _, m in pairs]
        ax.bar(names, values, bottom=bottom, label=part, color=MEMORY_COLORS[part])
        bottom = [b + v for b, v in zip(bottom, values)]
    for x, total in enumerate(bottom):
        ax.annotate(f"{total:.0f}", (x, total), ha="center", va="bottom", fontsize=8)
    ax.set_ylim(top=1.12 * max(bottom, default=1.0))  # room for the totals under the title
    ax.set_ylabel("MiB")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, never over them
    ax.tick_params(axis="x", labelrotation=20)
    return fig


def plot_quantization_error(weight: torch.Tensor, q: NF4Tensor, name: str = "weight") -> Figure:
    """Where NF4's 16 levels fall on a real weight, and how the round-trip error grows with a
    block's absmax.

    Left: the weight histogram over its central 99.9% (a few outliers would otherwise squeeze
    the bulk into one bar) with the levels of the median block drawn as lines. Right: RMS
    error per block of ``q.blocksize`` against that block's absmax.
    """
    err = quantization_error(weight, q)
    values = weight.detach().flatten().float()
    sorted_values = values.sort().values  # torch.quantile refuses tensors above 16M elements
    lo = sorted_values[int(0.0005 * (len(values) - 1))].item()
    hi = sorted_values[int(0.9995 * (len(values) - 1))].item()
    typical = err["block_absmax"].median().item()
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.hist(values.clamp(lo, hi).numpy(), bins=120, density=True, color=MEMORY_COLORS["weights"],
              alpha=0.7, label="original weights")
    levels = [v for v in (nf4_code() * typical).tolist() if lo <= v <= hi]
    for i, level in enumerate(levels):
        left.axvline(level, color=MEMORY_COLORS["activations"], lw=0.8,
                     label=f"NF4 levels x median block absmax ({typical:.3f})" if i == 0 else None)
    left.set(title=f"{name}: values and the NF4 levels", xlabel="value", xlim=(lo, hi))
    left.legend(fontsize=8, loc="upper left")
    right.scatter(err["block_absmax"].numpy(), err["block_rms_error"].numpy(), s=2)
    right.set(title=f"round-trip error per block of {q.blocksize}", xlabel="block absmax", ylabel="RMS error")
    right.grid(alpha=0.3)
    return fig
