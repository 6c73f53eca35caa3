"""Sweeps: the same run with one knob changed, the basic experiment of every chapter.

A sweep is only a loop over ``train``, but writing it once keeps labels consistent and
means every point comes from the run cache when a chapter is re-executed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ftlab.config.profiles import profile_name
from ftlab.config.run_config import RunConfig
from ftlab.memory import MEMORY_PARTS
from ftlab.runs.record import Run
from ftlab.stats import Comparison, compare_to_baseline
from ftlab.training.parallel import default_workers, train_in_workers
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


def train_each(configs: Sequence[tuple[str, RunConfig]], *, retrain: bool = False,
               runs_dir: str | Path | None = None, progress: bool = True) -> list[Run]:
    """One Run per (label, config) pair, each under its own config's seed: for illustrations
    that change several knobs at once. (Comparing them is :func:`ftlab.stats.compare`'s job,
    over the seeds of :func:`arms`.)"""
    return [train(cfg, label=text, retrain=retrain, runs_dir=runs_dir, progress=progress) for text, cfg in configs]


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


def seed_runs(base: RunConfig, seeds: Sequence[int] = (42, 43), *, label: str = "baseline",
              retrain: bool = False, runs_dir: str | Path | None = None, progress: bool = True) -> list[Run]:
    """The same run under several seeds (data order, initialisation, dropout): one arm of a
    comparison, whose spread is the noise its difference from another arm is read against."""
    return [train(base.replace(seed=s), label=f"{label}, seed {s}", retrain=retrain, runs_dir=runs_dir,
                  progress=progress) for s in seeds]


def arms(configs: Sequence[tuple[str, RunConfig]], seeds: Sequence[int], *, retrain: bool = False,
         runs_dir: str | Path | None = None, progress: bool = True, workers: int | None = None
         ) -> dict[str, list[Run]]:
    """Each (label, config) trained under every seed of ``seeds``: ``{label: runs}``.

    An arm is one config repeated with only the seed changed, the unit :mod:`ftlab.stats`
    compares. Every arm gets the same seeds in the same order, so the i-th runs of two arms
    share their data order and initialisation and can be compared ``paired=True``.

    The runs are independent, so those the cache lacks are trained in ``workers`` processes
    (default: :func:`~ftlab.training.parallel.default_workers`; 1 trains them here, one after
    another). Pass ``workers=1`` where the runs' step times are compared: runs that share the
    cores with each other are slower than one alone.
    """
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"seeds={list(seeds)!r}: give each arm distinct seeds, at least one")
    jobs = [(f"{text}, seed {s}", cfg.replace(seed=s)) for text, cfg in configs for s in seeds]
    count = default_workers(profile_name()) if workers is None else workers
    trained = train_in_workers(jobs, workers=count, runs_dir=runs_dir, retrain=retrain, progress=progress)
    return {text: seed_runs(cfg, seeds, label=text, retrain=retrain and not trained, runs_dir=runs_dir,
                            progress=progress) for text, cfg in configs}


def values(runs: Sequence[Run], key: str = "final_eval_loss") -> list[float]:
    """``key`` of each run's final metrics (recorded or :data:`DERIVED`), in order: an arm as
    ftlab.stats reads it."""
    found = [metric(run, key) for run in runs]
    missing = [run.label or run.config_hash for run, v in zip(runs, found) if v is None]
    if missing:
        raise KeyError(f"metric {key!r} is missing from runs {missing}; see ftlab.runs.record.METRICS "
                       f"(and ftlab.sweep.DERIVED) for the names")
    return [float(v) for v in found]


def early_values(runs: Sequence[Run], steps: int) -> list[float]:
    """Each run's mean training loss over its first ``steps`` logged steps, in order.

    Where a knob acts on the start of a run (warmup), its effect shows here before the end
    of the run can hide it; ftlab.stats reads these like :func:`values`.
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


def verdicts(arms_: Mapping[str, Sequence[Run]], baseline: str, key: str = "final_eval_loss", *,
             paired: bool = True) -> dict[str, Comparison]:
    """Every arm of ``arms_`` against the arm named ``baseline`` on metric ``key``, with a
    family-wise 95% level (:func:`ftlab.stats.compare_to_baseline`): ``{label: Comparison}``.

    ``paired`` defaults to True because :func:`arms` gives every arm the same seeds.
    """
    if baseline not in arms_:
        raise KeyError(f"baseline={baseline!r} is not an arm; the arms are {list(arms_)}")
    others = {label: values(runs, key) for label, runs in arms_.items() if label != baseline}
    return compare_to_baseline(values(arms_[baseline], key), others, paired=paired)


def memory_cost(runs: Sequence[Run]) -> dict[str, int]:
    """For each part of the measured training memory, the largest minus the smallest bytes
    over ``runs``: what changing the knob between them costs in memory (0 = nothing)."""
    measured = [run.memory for run in runs if run.memory is not None]
    if len(measured) < 2:
        raise ValueError("memory_cost needs at least two runs with a measured memory breakdown")
    return {part: max(getattr(m, part) for m in measured) - min(getattr(m, part) for m in measured)
            for part in MEMORY_PARTS}
