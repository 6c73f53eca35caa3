"""Plots that compare Runs. Each function draws on a new figure (or the given axes) and
returns the figure, so notebooks show it and tests can inspect it."""
from __future__ import annotations

from typing import Any, Iterable, Literal, Mapping, Sequence, overload

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ftlab.config.run_config import BYTE_LEVEL_PRESETS, RunConfig
from ftlab.memory import MEMORY_PARTS, MiB, MemoryBreakdown
from ftlab.runs.record import Run
from ftlab.experiments.protocol import RateChoice
from ftlab.experiments.stats import noise_band

MEMORY_COLORS = {"weights": "#4c72b0", "gradients": "#dd8452", "optimizer": "#55a868", "activations": "#c44e52"}


@overload
def new_figure(figsize: tuple[float, float] = (7, 4), ncols: Literal[1] = 1) -> tuple[Figure, Axes]: ...
@overload
def new_figure(figsize: tuple[float, float], ncols: int) -> tuple[Figure, np.ndarray]: ...
def new_figure(figsize: tuple[float, float] = (7, 4), ncols: int = 1) -> tuple[Figure, Axes | np.ndarray]:
    """A new figure with ``ncols`` axes side by side: one Axes, or an array of them.

    The plots here, the widgets' panels and the lessons' figures all start here, so all share
    two choices: a plain ``Figure``, never pyplot (no global state between cells, widgets and
    tests; see :func:`ftlab.foundation.jupyter.show_figures_inline`), and constrained layout, so a title, a colorbar or
    a legend beside the axes is never cut off when a widget renders the figure to PNG.
    """
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(1, ncols)


def figure_and_axes(ax: Axes | None, figsize: tuple[float, float] = (7, 4)) -> tuple[Figure, Axes]:
    """``ax`` and its figure when the caller draws into a layout of its own (a panel, a grid of
    plots), else a new figure of ``figsize``: what every plot that takes ``ax=`` draws on."""
    if ax is not None:
        return ax.figure, ax
    return new_figure(figsize)


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
    fig, ax = figure_and_axes(ax)
    ax.plot(steps, values, color=color, label=label, **LOSS_STYLES[kind])
    return fig


def plot_losses(runs: Sequence[Run], ax: Axes | None = None, train: bool = True, eval: bool = True,
                smooth: int = 1, title: str = "Loss") -> Figure:
    """Train loss (thin, optionally smoothed) and eval loss (markers) of several runs overlaid."""
    fig, ax = figure_and_axes(ax)
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
    _finish(ax, f"cross-entropy loss ({loss_unit(runs)})", title)
    return fig


def loss_unit(runs: Iterable[Run | RunConfig]) -> str:
    """What one unit of the runs' cross-entropy is: nats per byte for the byte-level presets
    (each token is one byte), nats per token for every other model. Every loss axis says it.
    Configs may stand in for runs, so a chapter can name its unit before it trains."""
    models = {getattr(run, "config", run).model for run in runs}
    byte_level = {m in BYTE_LEVEL_PRESETS for m in models}
    if len(byte_level) != 1:
        return "nats per token (per byte for the byte-level models)"
    return "nats per byte" if byte_level.pop() else "nats per token"


def _tokens_seen(run: Run) -> dict[int, int]:
    """Training tokens read up to each logged step (step 0: none)."""
    seen, total = {0: 0}, 0
    for row in run.history:
        total += row.get("tokens", 0)
        seen[row["step"]] = total
    return seen


def plot_arms(arms: Mapping[str, Sequence[Run]], ax: Axes | None = None, key: str = "eval_loss",
              x: Literal["step", "tokens"] = "step", title: str = "Eval loss: mean over seeds, band = every seed") -> Figure:
    """Each arm's mean ``key`` curve over its seeds, inside a band from the lowest to the
    highest seed at every logged point, so the noise a verdict is read against is seen.

    With the 2-5 seeds a chapter affords, the band spans every seed's curve; it is a picture of
    the noise, not a test (verdicts come from :mod:`ftlab.experiments.stats`). ``x="tokens"`` puts training
    tokens seen on x, for arms that read the data at different rates (batch sizes)."""
    fig, ax = figure_and_axes(ax)
    every = [run for runs in arms.values() for run in runs]
    for i, (label, runs) in enumerate(arms.items()):
        series = [dict(zip(*run.series(key))) for run in runs]
        points = sorted(set.intersection(*(set(s) for s in series)))
        if not points:
            continue
        stacked = np.array([[s[p] for p in points] for s in series])
        where = points if x == "step" else [float(np.mean([_tokens_seen(r).get(p, 0) for r in runs])) for p in points]
        color = f"C{i % 10}"
        ax.plot(where, stacked.mean(axis=0), "o-", color=color, markersize=3, lw=1.8, label=f"{label} ({len(runs)} seeds)")
        if len(runs) > 1:
            ax.fill_between(where, stacked.min(axis=0), stacked.max(axis=0), color=color, alpha=0.18, lw=0)
    ax.set_xlabel("optimizer step" if x == "step" else "training tokens seen")
    ax.set_ylabel(f"{key.replace('_', ' ')} ({loss_unit(every)})" if "loss" in key else key.replace("_", " "))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_rate_choices(choices: Mapping[str, RateChoice], ax: Axes | None = None,
                      title: str = "Each arm's rate sweep (validation, selection seed)") -> Figure:
    """Each arm's selection metric against its rate (log scale), its chosen rate ringed and a
    diverged run drawn as an x at the top: where the best sits in its grid, and how flat the
    bowl is around it. One seed per point, the selection seed, so no band: the verdicts come
    from fresh seeds (:func:`ftlab.experiments.protocol.report`)."""
    fig, ax = figure_and_axes(ax)
    finite = [s for c in choices.values() for s in c.scores if np.isfinite(s)]
    top = max(finite) if finite else 1.0
    for i, (label, choice) in enumerate(choices.items()):
        color = f"C{i % 10}"
        ok = [(v, s) for v, s in zip(choice.grid, choice.scores) if np.isfinite(s)]
        if ok:
            ax.plot(*zip(*ok), "o-", color=color, lw=1.6, markersize=4, label=label)
        bad = [v for v, s in zip(choice.grid, choice.scores) if not np.isfinite(s)]
        if bad:
            ax.plot(bad, [top] * len(bad), "x", color=color, markersize=8)
        if choice.best is not None:
            ax.plot([choice.best], [choice.scores[choice.grid.index(choice.best)]], "o", markersize=12,
                    markerfacecolor="none", markeredgecolor=color, markeredgewidth=2)
    ax.set_xscale("log")
    ax.set_xlabel(f"{next(iter(choices.values())).field.replace('_', ' ')} (ringed: chosen; x: diverged)")
    ax.set_ylabel("final validation loss")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def plot_final(arms: Mapping[str, Sequence[Run]], ax: Axes | None = None, key: str = "final_eval_loss",
               x: Sequence[float] | None = None, xlabel: str | None = None, logx: bool = False,
               title: str | None = None) -> Figure:
    """Each arm's final ``key``: every seed as a dot and the mean with its 95% t interval
    (:func:`ftlab.experiments.stats.noise_band`) as an error bar. ``x`` places the arms on a numeric axis
    (a learning rate, a λ) instead of one slot per label."""
    fig, ax = figure_and_axes(ax)
    labels = list(arms)
    where = list(x) if x is not None else list(range(len(labels)))
    every = [run for runs in arms.values() for run in runs]
    means = []
    for i, (label, pos) in enumerate(zip(labels, where)):
        found = [float(r.metrics[key]) for r in arms[label]]
        ax.plot([pos] * len(found), found, "o", color="0.55", markersize=4, label="one seed" if i == 0 else None)
        mean = float(np.mean(found))
        means.append(mean)
        if len(found) > 1:
            _, low, high = noise_band(found)
            ax.errorbar([pos], [mean], yerr=[[mean - low], [high - mean]], fmt="s", color="C0", capsize=4,
                        label="mean, 95% interval" if i == 0 else None)
        else:
            ax.plot([pos], [mean], "s", color="C0", label="mean (one seed: no interval)" if i == 0 else None)
    if x is not None:
        ax.plot(where, means, "-", color="C0", lw=1, alpha=0.6)
        if logx:
            ax.set_xscale("log")
    else:
        ax.set_xticks(where, labels, rotation=20, ha="right")
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{key.replace('_', ' ')} ({loss_unit(every)})" if "loss" in key else key.replace("_", " "))
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_reliability(arms: Mapping[str, Sequence[Run]], ax: Axes | None = None,
                     title: str = "Reliability of the answer tokens") -> Figure:
    """Each arm's accuracy against its confidence, bin by bin (the run metric ``reliability``):
    every seed as faint dots, the arm's seeds pooled (token-weighted) as a line. A calibrated
    model lies on the diagonal; below it, the model is surer than it is right."""
    fig, ax = figure_and_axes(ax)
    ax.plot([0, 1], [0, 1], ":", color="0.5", label="calibrated")
    for i, (label, runs) in enumerate(arms.items()):
        pooled: dict[float, list[float]] = {}
        for run in runs:
            rows = run.metrics["reliability"]
            ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], "o", color=f"C{i % 10}", alpha=0.3, ms=3)
            for r in rows:
                n, conf, acc = pooled.setdefault(r["low"], [0.0, 0.0, 0.0])
                pooled[r["low"]] = [n + r["tokens"], conf + r["tokens"] * r["confidence"], acc + r["tokens"] * r["accuracy"]]
        bins = [pooled[low] for low in sorted(pooled)]
        ax.plot([c / n for n, c, _ in bins], [a / n for n, _, a in bins], "o-", color=f"C{i % 10}",
                label=f"{label} ({len(runs)} seeds pooled)")
    ax.set(xlabel="confidence of the top token", ylabel="accuracy (top token = label)", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_metric(runs: Sequence[Run], key: str, ax: Axes | None = None, ylabel: str | None = None,
                logy: bool = False) -> Figure:
    """Any per-step history key (learning_rate, grad_norm, weight_norm, tokens_per_second)."""
    fig, ax = figure_and_axes(ax)
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
    fig, ax = figure_and_axes(ax, figsize=(8, 4.5))
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
    fig, ax = figure_and_axes(ax, figsize=(max(6.0, 1.3 * len(pairs) + 3), 4))
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
