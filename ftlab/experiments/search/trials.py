"""One Optuna trial = one ``ftlab.train`` run, read back from the run cache when it exists.

The trial reports each evaluation's loss (every ``eval_steps``) to Optuna, so a pruner can
stop a bad run early: ``PruneOnEval`` asks ``trial.should_prune()`` after each evaluation
and, when told to, sets ``control.should_training_stop``; ``train`` then ends the run at
that step as it would at ``max_steps``.

A pruned run is not a finished experiment, so it never answers ``train(config)`` for its
config: it is saved with ``status="pruned"`` and ``metrics["pruned_step"]`` in the run
cache's pruned area (:class:`~ftlab.runs.cache.RunCache`), and a later ``train`` of the same
config trains it in full. A search does read it back: a later trial with the same config
replays its evaluations to the pruner and, if that prunes it at or before the step it
reached, costs nothing (otherwise it trains in full).

A completed run in the cache is replayed the same way, step by step, so a search with a
pruner over runs an earlier search trained without one prunes exactly where it would
have live (training is deterministic) and measures the steps pruning saves for free.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ftlab.config.run_config import RunConfig
from ftlab.runs.cache import RunCache
from ftlab.runs.record import Run
from ftlab.experiments.search.space import Space, suggest
from ftlab.experiments.search.study import mark_origin
from ftlab.training.train import train


class PruneOnEval(TrainerCallback):
    """Reports each evaluation's loss to the Optuna trial and stops training when the
    trial's pruner says so (``pruned_step`` then holds the step)."""

    def __init__(self, trial: optuna.Trial, reported: set[int] | None = None) -> None:
        self.trial = trial
        self.reported = set(reported or ())
        """Steps already reported (a replay before this run): Optuna keeps the first value."""
        self.pruned_step: int | None = None

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    metrics: dict[str, float] | None = None, **kw: Any) -> None:
        step = state.global_step
        if step == 0 or not metrics or "eval_loss" not in metrics or step in self.reported:
            return  # step 0 is the base model, the same for every trial: nothing to judge
        self.reported.add(step)
        self.trial.report(float(metrics["eval_loss"]), step)
        if self.trial.should_prune():
            self.pruned_step = step
            control.should_training_stop = True


def stored_run(config: RunConfig, cache: RunCache) -> Run | None:
    """The completed run of ``config`` in the run cache, else its pruned run, else None;
    either only if trained on the data and model the files hold now (the cache key)."""
    key, _ = cache.key_for(config)
    return cache.load_completed(key) or cache.load_pruned(key)


def eval_points(run: Run) -> list[tuple[int, float]]:
    """(step, eval loss) after step 0: what a trial reports."""
    return [(e["step"], float(e["eval_loss"])) for e in run.evals if e["step"] > 0]


def replay(trial: optuna.Trial, run: Run) -> int | None:
    """Report a stored run's evaluations to the trial in order; the step at which the
    pruner stops it, or None if it lets the run through to its last evaluation."""
    for step, loss in eval_points(run):
        trial.report(loss, step)
        if trial.should_prune():
            return step
    return None


class Objective:
    """The objective a study optimizes: suggest a config, get its Run, return the final
    eval loss (raise ``optuna.TrialPruned`` when pruned)."""

    def __init__(self, base: RunConfig, space: Space, contributor: str, runs_dir: Path | None,
                 on_run: Callable[[optuna.Trial, Run], None] | None = None) -> None:
        self.base = base
        self.space = space
        self.contributor = contributor
        self.cache = RunCache(runs_dir)
        self.on_run = on_run
        """Called with each trial's Run before its result is told to Optuna (progress lines)."""

    def __call__(self, trial: optuna.Trial) -> float:
        mark_origin(trial, self.contributor)
        config = self.base.replace(**suggest(trial, self.space))
        trial.set_user_attr("config_hash", config.hash())
        trial.set_user_attr("run_key", self.cache.key_for(config)[0])
        trial.set_user_attr("max_steps", config.max_steps)
        run = self._run(trial, config)
        pruned = run.metrics.get("pruned_step")
        trial.set_user_attr("steps_run", pruned if pruned is not None else config.max_steps)
        trial.set_user_attr("from_cache", run.from_cache)
        if self.on_run is not None:
            self.on_run(trial, run)
        if pruned is not None:
            trial.set_user_attr("pruned_step", pruned)
            raise optuna.TrialPruned(f"pruned at step {pruned}")
        value = run.metrics.get("final_eval_loss")
        if not (isinstance(value, float) and math.isfinite(value)):
            # Optuna fails a trial whose value is NaN; the flag says it is a result, not a crash
            trial.set_user_attr("diverged", run.metrics.get("diverged") or "no final eval loss")
            return math.nan
        return value

    def _run(self, trial: optuna.Trial, config: RunConfig) -> Run:
        """The trial's Run: replayed from storage when the pruner stops it within what is
        stored or it is a completed run; trained otherwise."""
        stored = stored_run(config, self.cache)
        if stored is not None:
            step = replay(trial, stored)
            if step is not None:
                return _as_pruned(stored, step)
            if stored.status == "completed":
                return stored
        callback = PruneOnEval(trial, {s for s, _ in eval_points(stored)} if stored else None)
        run = train(config, callbacks=[callback], runs_dir=self.cache.folder, progress=False, save=False)
        if run.status == "interrupted":
            raise KeyboardInterrupt  # Optuna marks the trial FAIL and the search stops, as asked
        if callback.pruned_step is not None:
            run = _as_pruned(run, callback.pruned_step)
        self.cache.save_or_warn(run, pruned=run.status == "pruned")
        return run


def _as_pruned(run: Run, step: int) -> Run:
    """``run`` marked pruned at ``step``: status, step, and its evaluations up to that step
    (a completed run replayed to a pruner keeps only what the pruned trial would have seen)."""
    run.status = "pruned"
    run.metrics["pruned_step"] = step
    run.evals = [e for e in run.evals if e["step"] <= step]
    run.history = [r for r in run.history if r["step"] <= step]
    return run


def trial_run(trial: FrozenTrial, runs_dir: str | Path | None = None) -> Run | None:
    """The Run behind a finished trial (its completed run from the cache, or its pruned
    run), or None when it is not in this runs folder (another machine's, or removed)."""
    key = trial.user_attrs.get("run_key")
    run = RunCache(runs_dir).load_any(key) if key else None
    if run is not None and trial.state == optuna.trial.TrialState.PRUNED and "pruned_step" in trial.user_attrs:
        run = _as_pruned(run, trial.user_attrs["pruned_step"])
    return run
