"""Training a search's trials ahead, in worker processes, where the sampler does not need
their results to choose them.

Why: a search runs its trials one after another, because a model-based sampler (TPE)
chooses each point from the results before it. A grid or a random search does not: its
points are fixed by its seed before the first result, and so are TPE's random startup
trials. Those runs are independent, and two one-thread workers on two cores train them
faster than one process (:mod:`ftlab.training.parallel`).

Training ahead only fills the run cache. The search itself then runs as it always does and
finds each of those runs there, so its trials, their order and their values are exactly
those of a search trained in one process: a wrong guess would cost an unneeded run, never
a different result. The points are foreseen by running the study's own sampler (a copy,
same seed, same history) in a scratch study that answers every trial with a dummy value.
"""
from __future__ import annotations

import copy

import optuna
from optuna.pruners import NopPruner

from ftlab.config.run_config import RunConfig
from ftlab.experiments.search.plan import Plan
from ftlab.experiments.search.space import suggest
from ftlab.experiments.search.study import quiet_optuna
from ftlab.runs.cache import RunCache
from ftlab.training.parallel import train_in_workers

BLIND_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
"""The trial states TPE counts toward its random startup trials."""


def foreseen_configs(plan: Plan, todo: int) -> list[RunConfig]:
    """The configs of the search's next trials (at most ``todo``) that its sampler draws
    without reading a result: all of a grid's or random search's, TPE's remaining startup
    trials, none for other samplers or when a pruner may stop a trial (a run trained ahead
    in full would cost more than the pruned trial it replaces)."""
    if not isinstance(plan.study.pruner, NopPruner):
        return []
    blind = plan.blind_trials
    if blind is not None:
        blind = max(blind - len(plan.study.get_trials(deepcopy=False, states=BLIND_STATES)), 0)
    count = todo if blind is None else min(todo, blind)
    if count == 0:
        return []
    scratch = optuna.create_study(direction="minimize", sampler=copy.deepcopy(plan.study.sampler))
    scratch.add_trials(t for t in plan.study.get_trials(deepcopy=False) if t.state.is_finished())
    points: list[dict] = []

    def draw(trial: optuna.Trial) -> float:
        points.append(suggest(trial, plan.space))
        return 0.0  # a blind sampler does not read it; TPE's startup only counts it

    with quiet_optuna():
        scratch.optimize(draw, n_trials=count)  # inside optimize, as a grid's last point stops the study
    return [plan.base.replace(**p) for p in points]


def train_ahead(plan: Plan, todo: int, workers: int) -> set[str]:
    """Train the foreseen trials that the run cache lacks in ``workers`` processes; the run
    keys of those trained (empty with one worker, or fewer than two runs to train)."""
    if workers < 2:
        return set()
    configs = foreseen_configs(plan, todo)
    cache = RunCache(plan.runs_dir)
    missing = {cache.key_for(c)[0]: c for c in configs if cache.load_completed(cache.key_for(c)[0]) is None}
    trained = train_in_workers([("", c) for c in missing.values()], workers=workers, runs_dir=plan.runs_dir,
                               progress=False)
    return set(missing) if trained else set()

