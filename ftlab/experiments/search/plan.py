"""Everything a search checks and opens before its first trial.

``plan_search`` turns the arguments of :func:`ftlab.experiments.search.search` (and of the Ray Tune
variant) into an open study, a checked space and a budget, or raises: an unknown field
or a range RunConfig refuses (ConfigError), an unknown sampler or pruner, a grid larger
than the budget, a storage that cannot be opened, a study name taken by another
experiment (SearchError). So a bad input never costs a trial.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler

from ftlab.config.run_config import RunConfig
from ftlab.experiments.search.errors import SearchError
from ftlab.experiments.search.space import GridPoints, Space, check_grid_points, check_space, grid, grid_size
from ftlab.experiments.search.study import (counted_contributor, create_or_load, default_contributor, describe_study, finished_by,
                                open_storage, study_name_for, study_setup)

SAMPLERS = ("grid", "random", "tpe")
"""Sampler names ``search`` takes (or give any ``optuna.samplers.BaseSampler``)."""
PRUNERS = ("median", "hyperband")
"""Pruner names ``search`` takes (or give any ``optuna.pruners.BasePruner``; None: no pruning)."""


@dataclass
class Plan:
    """A search ready to run: its open study and what its trials are made of."""

    study: optuna.Study
    base: RunConfig
    space: dict[str, BaseDistribution]
    budget: int
    """Trials of ``counted`` the study holds when the search is done (completed, pruned
    or diverged); fewer than asked for a grid with fewer points."""
    contributor: str
    """Whom the new trials are credited to."""
    counted: str | None
    """Whose trials count toward the budget (:func:`~ftlab.experiments.search.study.counted_contributor`)."""
    runs_dir: Path | None
    blind_trials: int | None = 0
    """How many of the study's first trials its sampler draws without reading a result
    (None: all of them, a grid or random search; TPE: its random startup trials): those
    can be trained ahead, side by side (:mod:`~ftlab.experiments.search.ahead`)."""
    foresees_next: bool = False
    """Whether, past its blind trials, a copy of the sampler draws the next trial as the
    sampler itself will (ftlab's own TPE: seeded, reading only finished trials). One trial at
    a time can then be trained ahead, beside other searches' (:func:`~ftlab.experiments.search.local.search_all`)."""

    def done(self) -> int:
        """Trials already in the study that count toward the budget."""
        return finished_by(self.study, self.counted)


def plan_search(base: RunConfig | None, space: Space | None, *, n_trials: int, sampler: str | BaseSampler,
                pruner: str | BasePruner | None, storage: Any, study_name: str | None, seed: int,
                grid_points: GridPoints, contributor: str | None, runs_dir: str | Path | None,
                scheduler: str | None = None) -> Plan:
    """Check the arguments, open (or create, or join) the study, and build its sampler.

    ``base`` and ``space`` both None join the existing study ``study_name`` with the base
    config and space recorded on it (a workshop's shared study). ``scheduler`` names what
    stops trials early when that is not an Optuna pruner (Ray Tune's ASHA): it names the
    study as a pruner would.
    """
    if not (isinstance(n_trials, int) and not isinstance(n_trials, bool) and n_trials >= 1):
        raise SearchError(f"n_trials={n_trials!r} is not allowed: the trial budget is an int >= 1")
    store = None  # opened after the checks that need no storage, so a bad space creates no study file
    if base is None and space is None:
        if not study_name:
            raise SearchError("nothing to search: give base and space, or study_name (and storage) to join a study")
        store = open_storage(storage, runs_dir)
        base, space = study_setup(create_or_load(store, study_name, None))
    elif base is None or space is None:
        raise SearchError(f"give both base and space (or neither, to join study_name={study_name!r}); "
                          f"{'base' if base is None else 'space'} is missing")
    checked = check_space(base, space)
    check_grid_points(grid_points, checked)
    sampler_label, grid_total = _sampler_label(sampler, checked, grid_points, n_trials)
    pruner_obj = make_pruner(pruner, base)
    pruner_label = scheduler or ("none" if pruner is None else label(pruner_obj))
    name = study_name or study_name_for(base, checked, sampler_label, pruner_label, seed)
    if store is None:
        store = open_storage(storage, runs_dir)
    study = create_or_load(store, name, describe_study(base, checked, sampler_label, pruner_label))
    # seeded by how far the study is, so a resumed search draws new points, not its first ones again
    sampler_obj = make_sampler(sampler, checked, grid_points, n_trials, seed + len(study.trials))
    study = optuna.load_study(study_name=name, storage=store, sampler=sampler_obj, pruner=pruner_obj)
    budget = n_trials if grid_total is None else min(n_trials, grid_total)
    credited = contributor or default_contributor()
    return Plan(study, base, checked, budget, credited, counted_contributor(study_name, credited),
                Path(runs_dir) if runs_dir else None, count_blind_trials(sampler, n_trials), sampler == "tpe")


def _sampler_label(sampler: str | BaseSampler, space: Space, grid_points: GridPoints,
                   n_trials: int) -> tuple[str, int | None]:
    """(the sampler's label, the grid's size for a grid search); the grid checked against the budget."""
    if isinstance(sampler, BaseSampler):
        return label(sampler), None
    if sampler not in SAMPLERS:
        raise SearchError(f"sampler={sampler!r} is not allowed: one of {', '.join(SAMPLERS)}, or an "
                          f"optuna.samplers.BaseSampler")
    if sampler != "grid":
        return sampler, None
    values = grid(space, grid_points)
    size = grid_size(values)
    if size > n_trials:
        counts = " x ".join(f"{len(v)} {name}" for name, v in values.items())
        raise SearchError(f"n_trials={n_trials} is too small for the grid: it has {size} points ({counts}); set "
                          f"n_trials={size}, or lower grid_points (now {grid_points!r}) or the choices of a field")
    return f"grid{json.dumps(grid_points, sort_keys=True)}", size


def make_sampler(sampler: str | BaseSampler, space: Space, grid_points: GridPoints, n_trials: int,
                 seed: int) -> BaseSampler:
    """The Optuna sampler a name stands for. TPE starts from a third of the budget of random
    trials (at least 2, at most Optuna's 10), so on a budget of a dozen trials it has most
    of them left to exploit what it learnt."""
    if isinstance(sampler, BaseSampler):
        return sampler
    if sampler == "grid":
        return optuna.samplers.GridSampler(grid(space, grid_points), seed=seed)
    if sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(n_startup_trials=tpe_startup_trials(n_trials), multivariate=True, seed=seed)


def tpe_startup_trials(n_trials: int) -> int:
    """TPE's random startup trials on a budget of ``n_trials``: a third, at least 2, at most Optuna's 10."""
    return min(10, max(2, n_trials // 3))


def count_blind_trials(sampler: str | BaseSampler, n_trials: int) -> int | None:
    """How many first trials ``sampler`` (a name or a sampler) draws without reading a result:
    all (None) for a grid or random search, TPE's startup trials for ``"tpe"``, and none
    known (0) for any other sampler given from outside."""
    if sampler == "tpe":
        return tpe_startup_trials(n_trials)
    if isinstance(sampler, str) or isinstance(sampler, (optuna.samplers.GridSampler, optuna.samplers.RandomSampler)):
        return None
    return 0


def make_pruner(pruner: str | BasePruner | None, base: RunConfig) -> BasePruner:
    """The Optuna pruner a name stands for: ``median`` is Optuna's MedianPruner as it comes
    (5 trials before it prunes any); ``hyperband`` gets its resources in steps, from one
    evaluation (``eval_steps``) to the full run (``max_steps``)."""
    if isinstance(pruner, BasePruner):
        return pruner
    if pruner is None:
        return optuna.pruners.NopPruner()
    if pruner == "median":
        return optuna.pruners.MedianPruner()
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=base.eval_steps, max_resource=max(base.max_steps, 1))
    raise SearchError(f"pruner={pruner!r} is not allowed: one of {', '.join(PRUNERS)}, None (no pruning) or an "
                      f"optuna.pruners.BasePruner")


def label(obj: BaseSampler | BasePruner) -> str:
    """'MedianPruner(n_startup_trials=5, n_warmup_steps=0, ...)': the class and its plain
    settings, so two differently set pruners name two studies."""
    settings = ", ".join(f"{k.lstrip('_')}={v!r}" for k, v in sorted(vars(obj).items())
                         if isinstance(v, (int, float, str, bool)) or v is None)
    return f"{type(obj).__name__}({settings})"
