"""Sweeps and arms: the same run with one knob changed, under several seeds, the basic
experiment of every chapter.

An arm is only a loop over ``train``, but writing it once keeps labels consistent, gives
every arm the same seeds, and means every point comes from the run cache when a chapter is
re-executed. Reading the runs into numbers and tables is :mod:`ftlab.runs.table`'s job,
which needs no trainer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from ftlab.config.profiles import profile_name
from ftlab.config.run_config import RunConfig
from ftlab.runs.record import Run
from ftlab.runs.table import values
from ftlab.experiments.stats import Comparison, compare_to_baseline
from ftlab.training.parallel import default_workers, train_in_workers
from ftlab.training.train import train

__all__ = ["arms", "seed_runs", "train_each", "verdicts"]


def train_each(configs: Sequence[tuple[str, RunConfig]], *, retrain: bool = False,
               runs_dir: str | Path | None = None, progress: bool = True) -> list[Run]:
    """One Run per (label, config) pair, each under its own config's seed: for illustrations
    that change several knobs at once. (Comparing them is :func:`ftlab.experiments.stats.compare`'s job,
    over the seeds of :func:`arms`.)"""
    return [train(cfg, label=text, retrain=retrain, runs_dir=runs_dir, progress=progress) for text, cfg in configs]


def seed_runs(base: RunConfig, seeds: Sequence[int] = (42, 43), *, label: str = "baseline",
              retrain: bool = False, runs_dir: str | Path | None = None, progress: bool = True) -> list[Run]:
    """The same run under several seeds (data order, initialisation, dropout): one arm of a
    comparison, whose spread is the noise its difference from another arm is read against."""
    return [train(base.replace(seed=s), label=f"{label}, seed {s}", retrain=retrain, runs_dir=runs_dir,
                  progress=progress) for s in seeds]


def arms(configs: Sequence[tuple[str, RunConfig]], seeds: Sequence[int], *, retrain: bool = False,
         runs_dir: str | Path | None = None, progress: bool = True, workers: int | None = None,
         keep_first: bool = False) -> dict[str, list[Run]]:
    """Each (label, config) trained under every seed of ``seeds``: ``{label: runs}``.

    An arm is one config repeated with only the seed changed, the unit :mod:`ftlab.experiments.stats`
    compares. Every arm gets the same seeds in the same order, so the i-th runs of two arms
    share their data order and initialisation and can be compared ``paired=True``.

    The runs are independent, so those the cache lacks are trained in ``workers`` processes
    (default: :func:`~ftlab.training.parallel.default_workers`; 1 trains them here, one after
    another). Pass ``workers=1`` where the runs' step times are compared: runs that share the
    cores with each other are slower than one alone. ``keep_first`` keeps the weights of each
    arm's run under the first seed, where workers train it
    (:func:`~ftlab.training.adapter_io.trained_model` then reads them, no second training).
    """
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"seeds={list(seeds)!r}: give each arm distinct seeds, at least one")
    jobs = [(f"{text}, seed {s}", cfg.replace(seed=s)) for text, cfg in configs for s in seeds]
    count = default_workers(profile_name()) if workers is None else workers
    keep = {f"{text}, seed {seeds[0]}" for text, _ in configs} if keep_first else set()
    trained = train_in_workers(jobs, workers=count, runs_dir=runs_dir, retrain=retrain, progress=progress, keep=keep)
    return {text: seed_runs(cfg, seeds, label=text, retrain=retrain and not trained, runs_dir=runs_dir,
                            progress=progress) for text, cfg in configs}


def verdicts(arms_: Mapping[str, Sequence[Run]], baseline: str, key: str = "final_eval_loss", *,
             paired: bool = True) -> dict[str, Comparison]:
    """Every arm of ``arms_`` against the arm named ``baseline`` on metric ``key``, with a
    family-wise 95% level (:func:`ftlab.experiments.stats.compare_to_baseline`): ``{label: Comparison}``.

    ``paired`` defaults to True because :func:`arms` gives every arm the same seeds.
    """
    if baseline not in arms_:
        raise KeyError(f"baseline={baseline!r} is not an arm; the arms are {list(arms_)}")
    others = {label: values(runs, key) for label, runs in arms_.items() if label != baseline}
    return compare_to_baseline(values(arms_[baseline], key), others, paired=paired)
