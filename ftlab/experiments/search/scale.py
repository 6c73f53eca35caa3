"""``tune_search``: the same search on Ray Tune, as many trials at once as there are workers.

Ray Tune runs the trials (one ``ftlab.train`` run each, in Ray worker processes, on this
machine or a cluster); Optuna's sampler chooses them (Ray's ``OptunaSearch``), and ASHA
(Ray's asynchronous successive halving) stops the bad ones early, judging the eval loss
reported every ``eval_steps``. Every finished Ray trial is recorded in the same Optuna
study a local :func:`ftlab.experiments.search.search` would use, with the same user attributes, so
``trial_rows``, ``best_so_far`` and the widgets read both alike, and a second call
continues the study (the sampler starts from the trials already in it).

Ray is an optional extra: ``pip install 'ftlab[scale]'``. Without it, ``tune_search``
raises a SearchError saying so, before anything else.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import optuna
from optuna.samplers import BaseSampler

from ftlab.config.run_config import RunConfig
from ftlab.experiments.search.errors import SearchError
from ftlab.experiments.search.plan import plan_search
from ftlab.experiments.search.space import DEFAULT_GRID_POINTS, GridPoints, Space
from ftlab.experiments.search.study import fail_dead_trials, quiet_optuna

SCHEDULER = "asha"
"""How a Ray search's study names what stops its trials early (there is no Optuna pruner)."""


def require_ray() -> None:
    """A SearchError saying how to install Ray Tune when it is missing."""
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.tune") is None:
        raise SearchError("tune_search needs Ray Tune, which is not installed: pip install 'ftlab[scale]' (or "
                          "pip install 'ray[tune]'), then restart the kernel; ftlab.experiments.search.search runs the same "
                          "search in this process without it")


def tune_search(base: RunConfig | None = None, space: Space | None = None, *, n_trials: int = 8,
                sampler: str | BaseSampler = "tpe", storage: Any = None, study_name: str | None = None, seed: int = 0,
                grid_points: GridPoints = DEFAULT_GRID_POINTS, workers: int | None = None,
                contributor: str | None = None, runs_dir: str | Path | None = None,
                progress: bool = True) -> optuna.Study:
    """Search like :func:`ftlab.experiments.search.search`, with the trials run by Ray Tune.

    ``workers`` trials run at once (default: the CPUs of the Ray cluster; a local Ray is
    started with that many when none is running), one CPU each. A trial ASHA stops is a
    PRUNED trial in the study, with the step it reached; its run is not cached (Ray ends
    the worker's training mid-run). The study is the one of ``search`` with the same
    arguments and ``pruner="asha"``: ``storage``, ``study_name`` and ``n_trials`` mean the
    same there.
    """
    require_ray()
    from ftlab.experiments.search.ray_tune import run_tuner  # imports Ray: only now that it is known to be there

    with quiet_optuna():
        plan = plan_search(base, space, n_trials=n_trials, sampler=sampler, pruner=None, storage=storage,
                           study_name=study_name, seed=seed, grid_points=grid_points, contributor=contributor,
                           runs_dir=runs_dir, scheduler=SCHEDULER)
        fail_dead_trials(plan.study)
        todo = max(plan.budget - plan.done(), 0)
        if progress:
            print(f"tune_search {plan.study.study_name}: {todo} trial{'' if todo == 1 else 's'} to run on Ray",
                  flush=True)
        if todo:
            run_tuner(plan, todo, workers, progress)
    return plan.study
