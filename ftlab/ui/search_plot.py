"""The pictures of a search: the loss landscape over two fields, and best-so-far per sampler.

Like every ftlab plot, each function returns a matplotlib ``Figure`` (no pyplot state), so
a notebook cell shows it, a widget renders it to PNG, and a test inspects it.
"""
from __future__ import annotations

from typing import Mapping

import optuna
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from ftlab.experiments.search.results import best_so_far, best_trial, finished_trials
from ftlab.ui.plot import figure_and_axes


def _finished(study: optuna.Study | None) -> list[FrozenTrial]:
    """The finished trials; none for no study (a widget before its first search)."""
    return finished_trials(study) if study is not None else []


def numeric_params(study: optuna.Study | None) -> list[str]:
    """The study's numeric fields, in the order its trials first have them: what a landscape
    can put on its axes."""
    names: dict[str, None] = {}
    for trial in _finished(study):
        for name, distribution in trial.distributions.items():
            if not isinstance(distribution, CategoricalDistribution):
                names.setdefault(name, None)
    return list(names)


def _is_log(trials: list[FrozenTrial], name: str) -> bool:
    return any(getattr(t.distributions.get(name), "log", False) for t in trials)


def plot_landscape(study: optuna.Study | None, x: str | None = None, y: str | None = None, ax: Axes | None = None,
                   title: str = "Final eval loss over the search space") -> Figure:
    """Each finished trial as a point at its values of ``x`` and ``y`` (default: the first two
    numeric fields), coloured by its final eval loss; pruned trials as grey crosses, diverged
    ones as red crosses, the best trial circled. With one numeric field: loss against it."""
    fig, ax = figure_and_axes(ax, (6, 4.5))
    trials = _finished(study)
    numeric = numeric_params(study)
    x = x or (numeric[0] if numeric else None)
    y = y or (numeric[1] if len(numeric) > 1 and numeric[1] != x else None)
    ax.set_title(title)
    if x is None or not trials:
        ax.text(0.5, 0.5, "no finished trials yet", ha="center", va="center", transform=ax.transAxes, color="#888")
        return fig
    shown = [t for t in trials if x in t.params and (y is None or y in t.params)]
    done = [t for t in shown if t.state == TrialState.COMPLETE]
    if done and y:
        points = ax.scatter([t.params[x] for t in done], [t.params[y] for t in done], c=[t.value for t in done],
                            cmap="viridis_r", s=45, edgecolors="k", linewidths=0.4, zorder=3)
        fig.colorbar(points, ax=ax, label="final eval loss")
    elif done:
        ax.scatter([t.params[x] for t in done], [t.value for t in done], color="C0", s=35, zorder=3, label="completed")
    for state, color, text in ((TrialState.PRUNED, "#999", "pruned"), (TrialState.FAIL, "#c62828", "diverged")):
        # without a second field, a stopped trial sits at the last eval loss it reported
        group = [t for t in shown if t.state == state and (y or t.intermediate_values)]
        if group:
            ax.scatter([t.params[x] for t in group],
                       [t.params[y] if y else t.intermediate_values[max(t.intermediate_values)] for t in group],
                       marker="x", color=color, s=40, zorder=2, label=f"{text} ({len(group)})")
    best = best_trial(study) if study is not None else None
    if best is not None and x in best.params and (y is None or y in best.params):
        ax.scatter([best.params[x]], [best.params[y] if y else best.value], s=220, facecolors="none",
                   edgecolors="#d62728", linewidths=2, zorder=4, label=f"best: {best.value:.4f} (trial {best.number})")
    ax.set_xlabel(x)
    ax.set_ylabel(y or "final eval loss")
    if _is_log(trials, x):
        ax.set_xscale("log")
    if y and _is_log(trials, y):
        ax.set_yscale("log")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return fig


def plot_best_so_far(studies: optuna.Study | Mapping[str, optuna.Study | None], ax: Axes | None = None,
                     title: str = "Best final eval loss so far") -> Figure:
    """The lowest final eval loss after each trial, one line per study (a sampler each):
    which one finds a good point sooner on the same budget. A None study draws no line."""
    fig, ax = figure_and_axes(ax, (6, 4))
    named = studies if isinstance(studies, Mapping) else {studies.study_name: studies}
    for label, study in named.items():
        curve = best_so_far(study) if study is not None else []
        if curve:
            ax.step(range(1, len(curve) + 1), curve, where="post", marker="o", markersize=3, label=label)
    ax.set_xlabel("trials")
    ax.set_ylabel("best final eval loss")
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finished trials yet", ha="center", va="center", transform=ax.transAxes, color="#888")
    return fig

