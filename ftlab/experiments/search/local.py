"""``search``: an Optuna study over RunConfig fields, run in this process, resumable.

Optuna does the searching (sampler, pruner, storage); ftlab only supplies the objective
(one ``train`` run per trial, see :mod:`ftlab.experiments.search.trials`) and the bookkeeping that
makes a search a notebook can re-run: the study is stored (see :mod:`ftlab.experiments.search.study`)
and named after the search itself, so calling the same search again continues it, and
trials already trained come back from the run cache.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial

from ftlab.config.run_config import RunConfig
from ftlab.runs.record import Run
from ftlab.experiments.search.ahead import train_ahead
from ftlab.experiments.search.plan import plan_search
from ftlab.experiments.search.space import DEFAULT_GRID_POINTS, GridPoints, Space, describe
from ftlab.experiments.search.study import fail_dead_trials, quiet_optuna
from ftlab.experiments.search.trials import Objective

Callback = Callable[[optuna.Study, FrozenTrial], None]
"""Called after every trial (Optuna's ``study.optimize`` callback): how a widget redraws."""


def search(base: RunConfig | None = None, space: Space | None = None, *, n_trials: int = 12,
           sampler: str | BaseSampler = "tpe", pruner: str | BasePruner | None = None, storage: Any = None,
           study_name: str | None = None, seed: int = 0, grid_points: GridPoints = DEFAULT_GRID_POINTS,
           contributor: str | None = None, runs_dir: str | Path | None = None, callbacks: Iterable[Callback] = (),
           progress: bool | str = True, workers: int = 1) -> optuna.Study:
    """Search ``space`` around ``base`` until the study holds ``n_trials`` finished trials
    of yours, and return the Optuna study.

    * ``space``: RunConfig field -> Optuna distribution (see :mod:`ftlab.experiments.search.space`);
      every field and range is checked against RunConfig before the first trial.
    * ``sampler``: ``"grid"`` (``grid_points`` values per numeric field, or a dict of
      counts per field; the grid must fit in ``n_trials``), ``"random"``, ``"tpe"``, or
      any Optuna sampler.
    * ``pruner``: None, ``"median"``, ``"hyperband"`` or any Optuna pruner; it judges the
      eval loss reported every ``eval_steps`` and stops a bad run early.
    * ``storage``: None (SQLite in the runs folder), a database URL, or a journal file
      path for processes sharing a disk (see :mod:`ftlab.experiments.search.study`).
    * ``study_name``: None names the study after the search (base, space, sampler,
      pruner, seed), so the same call continues it; give a name to share a study.
      ``base=None, space=None`` with a name joins a study someone else created.
    * ``n_trials`` counts the completed, pruned and diverged trials already in the study
      (all of them; in a study shared by ``study_name``, those ``contributor`` ran, by
      default the JupyterHub or login user name), so a search killed mid-trial and called
      again runs only what is missing, a room sharing a prepared runs folder replays the
      prepared search, and in a shared study each learner runs their own share.

    * ``progress``: True prints a line per trial, False nothing, and a text one line for the
      whole search that starts with it (what trained, what came from the run cache), for a
      chapter that runs many searches.
    * ``workers``: with 2 or more, the trials whose points the sampler draws without a
      result (a grid's, a random search's, TPE's startup trials) are trained ahead in that
      many processes (:mod:`~ftlab.experiments.search.ahead`); the trials are the same.

    Every trial's value is the run's final eval loss (lower is better); pruned trials are
    Optuna's PRUNED trials, and ``ftlab.experiments.search.trial_rows`` reads it all back.
    """
    with quiet_optuna():
        plan = plan_search(base, space, n_trials=n_trials, sampler=sampler, pruner=pruner, storage=storage,
                           study_name=study_name, seed=seed, grid_points=grid_points, contributor=contributor,
                           runs_dir=runs_dir)
        study = plan.study
        lost = fail_dead_trials(study)
    done = plan.done()
    todo = max(plan.budget - done, 0)
    resumed = f", {done} done before" if done else ""
    if lost:
        resumed += f"; trial {', '.join(map(str, lost))} was running in a process that is gone: marked FAIL"
    if progress is True:
        print(f"search {study.study_name}: {todo} trial{'' if todo == 1 else 's'} to run{resumed}", flush=True)
    ahead = train_ahead(plan, todo, workers)
    runs: list[Run] = []
    on_run = _printer(done, plan.budget) if progress is True else lambda trial, run: runs.append(run)
    objective = Objective(plan.base, plan.space, plan.contributor, plan.runs_dir, on_run)
    with quiet_optuna():
        for _ in range(todo):
            study.optimize(objective, n_trials=1, callbacks=list(callbacks))
    if isinstance(progress, str):
        trained = sum(not run.from_cache or run.key in ahead for run in runs)
        where = f" ({len(ahead)} of them ahead, in {workers} worker processes)" if ahead else ""
        print(f"{progress}: search {study.study_name}, {todo} trial{'' if todo == 1 else 's'}{resumed} · "
              f"{trained} trained{where}, {len(runs) - trained} from the run cache", flush=True)
    return study


def _printer(done: int, budget: int) -> Callable[[optuna.Trial, Run], None]:
    """One line per trial: its values and what became of its run."""
    count = [done]

    def show(trial: optuna.Trial, run: Run) -> None:
        count[0] += 1
        m = run.metrics
        source = "from the run cache" if run.from_cache else "trained"
        if "pruned_step" in m:
            outcome = f"pruned at step {m['pruned_step']} ({source})"
        elif isinstance(m.get("final_eval_loss"), float):
            outcome = f"eval loss {m['final_eval_loss']:.4f} ({source})"
        else:
            outcome = f"no eval loss ({m.get('diverged', 'diverged')})"
        print(f"  trial {trial.number} [{count[0]}/{budget}] {describe(trial.params)}: {outcome}", flush=True)

    return show
