"""Runs read into numbers and tables: a metric of a run, an arm's values, a text table.

These are pure functions of saved :class:`~ftlab.runs.record.Run` records, kept with the
runs (not with the sweeps that train them) so that drawing a table, in a widget or under a
plot, never imports the trainer.
"""
from __future__ import annotations

from typing import Any, Sequence

from ftlab.memory import MEMORY_PARTS
from ftlab.runs.record import Run

__all__ = ["METRIC_KEYS", "DERIVED", "metric", "metric_rows", "metric_table", "values", "early_values", "memory_cost"]


METRIC_KEYS = ("train_loss", "final_eval_loss", "best_eval_loss", "exact_match", "seconds_per_step")
"""The metrics a comparison of runs shows unless told otherwise."""

DERIVED: dict[str, Any] = {
    "rise_from_best": lambda m: m["final_eval_loss"] - m["best_eval_loss"],
}
"""Metrics read from a run's recorded ones rather than recorded themselves: how far the
validation loss climbed from its lowest point by the end (overfitting's size, chapters 03
and 04). Derived here, on read, so a notebook never writes into ``run.metrics`` and runs
already in the cache need no new field."""


def metric(run: Run, key: str) -> Any:
    """``key`` of a run's final metrics, recorded or :data:`DERIVED` (None where it has none)."""
    if key in DERIVED:
        try:
            return DERIVED[key](run.metrics)
        except (KeyError, TypeError):
            return None
    return run.metrics.get(key)


def metric_rows(runs: Sequence[Run], keys: Sequence[str] = METRIC_KEYS) -> list[dict[str, Any]]:
    """One dict per run: ``label`` (its label, else its config hash) and each of ``keys`` from
    its final metrics (None where it has none).

    The one place that reads a run into a table row: the text table under a sweep's plot
    and the Playground's HTML table format these same values, so they never disagree.
    """
    return [{"label": run.label or run.config_hash, **{k: metric(run, k) for k in keys}} for run in runs]


def metric_table(runs: Sequence[Run], keys: Sequence[str] = METRIC_KEYS) -> str:
    """A fixed-width text table of run metrics, for printing under a plot."""
    widths = [max(18, len(k) + 2) for k in keys]
    rows = metric_rows(runs, keys)
    name = max([28] + [len(row["label"]) + 1 for row in rows])  # a label is never cut: its seed is in it
    head = f"{'run':{name}s}" + "".join(f"{k:>{w}s}" for k, w in zip(keys, widths))
    lines = [head, "-" * len(head)]
    for row in rows:
        cells = [f"{row[k]:{w}.4f}" if isinstance(row[k], float) else f"{str(row[k]):>{w}s}" for k, w in zip(keys, widths)]
        lines.append(f"{row['label']:{name}s}" + "".join(cells))
    return "\n".join(lines)


def values(runs: Sequence[Run], key: str = "final_eval_loss") -> list[float]:
    """``key`` of each run's final metrics (recorded or :data:`DERIVED`), in order: an arm as
    ftlab.experiments.stats reads it."""
    found = [metric(run, key) for run in runs]
    missing = [run.label or run.config_hash for run, v in zip(runs, found) if v is None]
    if missing:
        raise KeyError(f"metric {key!r} is missing from runs {missing}; see ftlab.runs.record.METRICS "
                       f"(and ftlab.runs.table.DERIVED) for the names")
    return [float(v) for v in found]


def early_values(runs: Sequence[Run], steps: int) -> list[float]:
    """Each run's mean training loss over its first ``steps`` logged steps, in order.

    Where a knob acts on the start of a run (warmup), its effect shows here before the end
    of the run can hide it; ftlab.experiments.stats reads these like :func:`values`.
    """
    if steps < 1:
        raise ValueError(f"steps={steps}: average over at least one step")
    out = []
    for run in runs:
        losses = run.series("loss")[1][:steps]
        if len(losses) < steps:
            raise ValueError(f"run {run.label or run.config_hash} logged {len(losses)} training losses, fewer than steps={steps}")
        out.append(sum(losses) / steps)
    return out


def memory_cost(runs: Sequence[Run]) -> dict[str, int]:
    """For each part of the measured training memory, the largest minus the smallest bytes
    over ``runs``: what changing the knob between them costs in memory (0 = nothing)."""
    measured = [run.memory for run in runs if run.memory is not None]
    if len(measured) < 2:
        raise ValueError("memory_cost needs at least two runs with a measured memory breakdown")
    return {part: max(getattr(m, part) for m in measured) - min(getattr(m, part) for m in measured)
            for part in MEMORY_PARTS}
