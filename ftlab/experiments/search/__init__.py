"""Hyperparameter search on Optuna, and on Ray Tune to scale out: resumable and shareable.

    from optuna.distributions import FloatDistribution
    from ftlab.experiments.search import search, trial_rows, best_so_far
    study = search(base, {"learning_rate": FloatDistribution(1e-4, 1e-2, log=True)}, n_trials=12, sampler="tpe")

Modules, one concern each: ``space`` (the space, checked against RunConfig; grid values),
``study`` (storages, resuming after a crash), ``plan`` (every check before the first
trial), ``trials`` (one trial = one ``train`` run; pruning), ``ahead`` (the trials a sampler draws
without a result, trained side by side), ``local`` (``search``),
``scale`` and ``ray_tune`` (``tune_search`` on Ray Tune), ``classroom`` (a workshop's
shared study), ``results`` (rows, best-so-far, steps saved), ``trainer``
(``Trainer.hyperparameter_search`` for comparison). The plots of a study (landscape,
best-so-far) are presentation: :mod:`ftlab.ui.search_plot`.
"""
from ftlab.experiments.search.classroom import CLASS_STUDY, contribute, join_class_study, open_class_study
from ftlab.experiments.search.errors import SearchError
from ftlab.experiments.search.local import search, search_all
from ftlab.experiments.search.plan import PRUNERS, SAMPLERS
from ftlab.experiments.search.results import (best_so_far, best_trial, contributors, finished_trials, steps_run, steps_saved, trial_row,
                      trial_rows)
from ftlab.experiments.search.scale import tune_search
from ftlab.experiments.search.space import grid, suggest
from ftlab.experiments.search.study import default_storage_url, open_storage, study_setup
from ftlab.experiments.search.trainer import trainer_search_example
from ftlab.experiments.search.trials import trial_run

__all__ = ["search", "search_all", "tune_search", "SearchError", "SAMPLERS", "PRUNERS", "trial_rows", "trial_row", "best_so_far",
           "best_trial", "contributors", "finished_trials", "steps_run", "steps_saved", "trial_run", "grid", "suggest",
           "default_storage_url", "open_storage", "open_class_study", "join_class_study", "study_setup", "contribute",
           "CLASS_STUDY", "trainer_search_example"]
