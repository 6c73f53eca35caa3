"""Sweeps: the same run with one knob changed, the basic experiment of every chapter.

A sweep is only a loop over ``train``, but writing it once keeps labels consistent and
means every point comes from the run cache when a chapter is re-executed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from ftlab.config.run_config import RunConfig
from ftlab.memory import MEMORY_PARTS
from ftlab.runs.record import Run
from ftlab.training.train import train


def sweep(base: RunConfig, field: str, values: Iterable[Any], *, label: str | None = None,
          retrain: bool = False, runs_dir: str | Path | None = None, progress: bool = True,
          **fixed: Any) -> list[Run]:
    """One Run per value of ``field`` (other fields from ``base`` and ``fixed``).

    ``label`` is a format string with ``{value}`` (default: "field=value").
    """
    runs = []
    for value in values:
        config = base.replace(**fixed, **{field: value})
        text = (label or f"{field}={{value}}").format(value=value)
        runs.append(train(config, label=text, retrain=retrain, runs_dir=runs_dir, progress=progress))
    return runs


def compare(configs: Sequence[tuple[str, RunConfig]], *, retrain: bool = False,
            runs_dir: str | Path | None = None, progress: bool = True) -> list[Run]:
    """One Run per (label, config) pair: for comparisons that change several knobs at once."""
    return [train(cfg, label=text, retrain=retrain, runs_dir=runs_dir, progress=progress) for text, cfg in configs]


METRIC_KEYS = ("train_loss", "final_eval_loss", "best_eval_loss", "exact_match", "seconds_per_step")
"""The metrics a comparison of runs shows unless told otherwise."""


def metric_rows(runs: Sequence[Run], keys: Sequence[str] = METRIC_KEYS) -> list[dict[str, Any]]:
    """One dict per run: ``label`` (its label, else its config hash) and each of ``keys`` from
    its final metrics (None where it has none).

    The one place that reads a run into a table row: the text table under a sweep's plot
    and the Playground's HTML table format these same values, so they never disagree.
    """
    return [{"label": run.label or run.config_hash, **{k: run.metrics.get(k) for k in keys}} for run in runs]


def metric_table(runs: Sequence[Run], keys: Sequence[str] = METRIC_KEYS) -> str:
    """A fixed-width text table of run metrics, for printing under a plot."""
    widths = [max(18, len(k) + 2) for k in keys]
    head = f"{'run':28s}" + "".join(f"{k:>{w}s}" for k, w in zip(keys, widths))
    lines = [head, "-" * len(head)]
    for row in metric_rows(runs, keys):
        cells = [f"{row[k]:{w}.4f}" if isinstance(row[k], float) else f"{str(row[k]):>{w}s}" for k, w in zip(keys, widths)]
        lines.append(f"{row['label'][:28]:28s}" + "".join(cells))
    return "\n".join(lines)


def seed_runs(base: RunConfig, seeds: Sequence[int] = (42, 43), *, label: str = "baseline",
              retrain: bool = False, runs_dir: str | Path | None = None, progress: bool = True) -> list[Run]:
    """The same run under several seeds (data order, LoRA initialisation, dropout): how far
    apart they end is the noise every knob's effect must be read against."""
    return [train(base.replace(seed=s), label=f"{label}, seed {s}", retrain=retrain, runs_dir=runs_dir,
                  progress=progress) for s in seeds]


def seed_spread(runs: Sequence[Run], key: str = "final_eval_loss") -> float:
    """Largest minus smallest ``key`` over runs that differ only in their seed."""
    values = [run.metrics[key] for run in runs]
    return max(values) - min(values)


def versus_noise(difference: float, spread: float) -> str:
    """A difference between two runs, said next to the seed spread: "effect" only when it is
    larger than what changing the seed alone does, otherwise "noise"."""
    verdict = "larger than the seed spread: an effect" if abs(difference) > spread else "inside the seed spread: noise"
    return f"{difference:+.3f} (seed spread {spread:.3f}; {verdict})"


def memory_cost(runs: Sequence[Run]) -> dict[str, int]:
    """For each part of the measured training memory, the largest minus the smallest bytes
    over ``runs``: what changing the knob between them costs in memory (0 = nothing)."""
    measured = [run.memory for run in runs if run.memory is not None]
    if len(measured) < 2:
        raise ValueError("memory_cost needs at least two runs with a measured memory breakdown")
    return {part: max(getattr(m, part) for m in measured) - min(getattr(m, part) for m in measured)
            for part in MEMORY_PARTS}
