"""Training a search's trials ahead, in worker processes, where the sampler does not need
their results to choose them.

Why: a search runs its trials one after another, because a model-based sampler (TPE)
chooses each point from the results before it. A grid or a random search does not: its
points are fixed by its seed before the first result, and so are TPE's random startup
trials. Those runs are independent, and two one-thread workers on two cores train them
faster than one process (:mod:`ftlab.training.parallel`). Past its startup, TPE's next trial
is known too, once the trials before it have finished: several TPE searches can then each
train their next trial at the same time (:func:`~ftlab.experiments.search.local.search_all`).

Training ahead only fills the run cache. The search itself then runs as it always does and
finds each of those runs there, so its trials, their order and their values are exactly
those of a search trained in one process: a wrong guess would cost an unneeded run, never
a different result. The points are foreseen by running the study's own sampler (a copy,
same seed, same history) in a scratch study that answers every trial with a dummy value.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import optuna
from optuna.pruners import NopPruner
from optuna.search_space import IntersectionSearchSpace

from ftlab.config.run_config import RunConfig
from ftlab.experiments.search.plan import Plan
from ftlab.experiments.search.space import suggest
from ftlab.experiments.search.study import quiet_optuna
from ftlab.runs.cache import RunCache
from ftlab.training.parallel import train_in_workers

BLIND_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
"""The trial states TPE counts toward its random startup trials."""


def foreseen_configs(plan: Plan, todo: int) -> list[RunConfig]:
    """The configs of the search's next trials (at most ``todo``) that a copy of its sampler
    draws as the sampler will: all of a grid's or random search's, TPE's remaining startup
    trials, and past them TPE's next trial alone (:attr:`Plan.foresees_next`: the trial after
    it depends on that one's result). None for other samplers, or when a pruner may stop a
    trial (a run trained ahead in full would cost more than the pruned trial it replaces)."""
    if todo < 1 or not isinstance(plan.study.pruner, NopPruner):
        return []
    blind = plan.blind_trials
    if blind is not None:
        blind = max(blind - len(plan.study.get_trials(deepcopy=False, states=BLIND_STATES)), 0)
    count = todo if blind is None else min(todo, blind)
    if count == 0:
        if not plan.foresees_next:
            return []
        count = 1
    scratch = optuna.create_study(direction="minimize", sampler=_copy_of(plan.study.sampler))
    scratch.add_trials(t for t in plan.study.get_trials(deepcopy=False) if t.state.is_finished())
    points: list[dict] = []

    def draw(trial: optuna.Trial) -> float:
        points.append(suggest(trial, plan.space))
        return 0.0  # a blind sampler does not read it; TPE's startup only counts it; past it, none is drawn after

    with quiet_optuna():
        scratch.optimize(draw, n_trials=count)  # inside optimize, as a grid's last point stops the study
    return [plan.base.replace(**p) for p in points]


def _copy_of(sampler: optuna.samplers.BaseSampler) -> optuna.samplers.BaseSampler:
    """The sampler with its random state, for another study. A multivariate TPE caches its
    search space for the one study it has read (and refuses any other); the copy gets an
    empty cache, which it fills from the scratch study's trials, the same trials."""
    copied = copy.deepcopy(sampler)
    if isinstance(getattr(copied, "_search_space", None), IntersectionSearchSpace):
        copied._search_space = IntersectionSearchSpace(include_pruned=True)  # as TPESampler builds it
    return copied


def train_ahead(foreseen: Sequence[tuple[Plan, Sequence[RunConfig]]], workers: int) -> list[set[str]]:
    """Train the foreseen configs of every plan that the run cache lacks, all of them together
    in ``workers`` processes; for each plan, the run keys trained for it (none with one worker,
    or fewer than two runs to train). A config two plans foresee (TPE's startup points are
    the random search's of the same seed) is trained once, and counted for the first."""
    owned: list[set[str]] = [set() for _ in foreseen]
    if workers < 2:
        return owned
    groups: dict[Path | None, dict[str, RunConfig]] = {}
    for keys, (plan, configs) in zip(owned, foreseen):
        cache, group = RunCache(plan.runs_dir), groups.setdefault(plan.runs_dir, {})
        for config in configs:
            key = cache.key_for(config)[0]
            if key not in group and cache.load_completed(key) is None:
                group[key] = config
                keys.add(key)
    trained = {folder: train_in_workers([("", c) for c in group.values()], workers=workers, runs_dir=folder,
                                        progress=False) for folder, group in groups.items()}
    return [keys if trained[plan.runs_dir] else set() for keys, (plan, _) in zip(owned, foreseen)]
