"""``search``: an Optuna study over RunConfig fields, run in this process, resumable.

Optuna does the searching (sampler, pruner, storage); ftlab only supplies the objective
(one ``train`` run per trial, see :mod:`ftlab.experiments.search.trials`) and the bookkeeping that
makes a search a notebook can re-run: the study is stored (see :mod:`ftlab.experiments.search.study`)
and named after the search itself, so calling the same search again continues it, and
trials already trained come back from the run cache.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial

from ftlab.config.run_config import RunConfig
from ftlab.runs.record import Run
from ftlab.experiments.search.ahead import foreseen_configs, train_ahead
from ftlab.experiments.search.plan import Plan, plan_search
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
    return search_all([dict(base=base, space=space, n_trials=n_trials, sampler=sampler, pruner=pruner, storage=storage,
                            study_name=study_name, seed=seed, grid_points=grid_points, contributor=contributor,
                            runs_dir=runs_dir, callbacks=callbacks, progress=progress)], workers=workers)[0]


def search_all(calls: Sequence[Mapping[str, Any]], *, workers: int = 1) -> list[optuna.Study]:
    """Several independent searches, each a dict of :func:`search`'s keywords (all but
    ``workers``), run side by side; their studies, in order.

    Why: one TPE search cannot train two trials at once, as each point follows from the
    results before it, but three TPE searches can each train their next trial at the same
    time. The searches advance in rounds: every trial a copy of a search's sampler foresees
    (all of a grid's or random search's, TPE's startup trials, then TPE's next trial) is
    trained in ``workers`` processes, all searches together; then each search runs those
    trials, which it finds in the run cache. Each study gets the trials, in the order and
    with the values, that it would get run alone in one process. A text ``progress`` keeps
    each search's output to one line (per-trial lines of several searches interleave).
    """
    running = [_Running.start(**_keywords(call)) for call in calls]
    while active := [r for r in running if r.left]:
        foreseen = [(r.plan, foreseen_configs(r.plan, r.left) if workers > 1 else []) for r in active]
        for r, keys in zip(active, train_ahead(foreseen, workers)):
            r.ahead |= keys
        for r, (_, configs) in zip(active, foreseen):
            r.advance(len(configs) or r.left)  # nothing foreseen: the rest in this process, as it comes
    for r in running:
        r.summary(workers)
    return [r.plan.study for r in running]


def _keywords(call: Mapping[str, Any]) -> dict[str, Any]:
    """A search's keywords with :func:`search`'s defaults filled in (it owns them); a keyword
    it does not take raises TypeError naming it, and so does ``workers``: one pool serves all."""
    if "workers" in call:
        raise TypeError("search_all(calls, workers=...): give workers once, to search_all, not in a call")
    bound = inspect.signature(search).bind(**call)
    bound.apply_defaults()
    return {name: value for name, value in bound.arguments.items() if name != "workers"}


@dataclass
class _Running:
    """One search of :func:`search_all` under way: its plan, what is left, what it trained."""

    plan: Plan
    left: int
    resumed: str
    progress: bool | str
    callbacks: list[Callback]
    objective: Objective
    runs: list[Run] = field(default_factory=list)
    ahead: set[str] = field(default_factory=set)

    @classmethod
    def start(cls, *, base: RunConfig | None, space: Space | None, n_trials: int, sampler: str | BaseSampler,
              pruner: str | BasePruner | None, storage: Any, study_name: str | None, seed: int,
              grid_points: GridPoints, contributor: str | None, runs_dir: str | Path | None,
              callbacks: Iterable[Callback], progress: bool | str) -> _Running:
        """Check and open the search (:func:`plan_search`), and say what it has to do."""
        with quiet_optuna():
            plan = plan_search(base, space, n_trials=n_trials, sampler=sampler, pruner=pruner, storage=storage,
                               study_name=study_name, seed=seed, grid_points=grid_points, contributor=contributor,
                               runs_dir=runs_dir)
            lost = fail_dead_trials(plan.study)
        done = plan.done()
        todo = max(plan.budget - done, 0)
        resumed = f", {done} done before" if done else ""
        if lost:
            resumed += f"; trial {', '.join(map(str, lost))} was running in a process that is gone: marked FAIL"
        if progress is True:
            print(f"search {plan.study.study_name}: {todo} trial{'' if todo == 1 else 's'} to run{resumed}", flush=True)
        runs: list[Run] = []
        on_run = _printer(done, plan.budget) if progress is True else lambda trial, run: runs.append(run)
        objective = Objective(plan.base, plan.space, plan.contributor, plan.runs_dir, on_run)
        return cls(plan, todo, resumed, progress, list(callbacks), objective, runs)

    def advance(self, count: int) -> None:
        """Run the search's next ``count`` trials here (those trained ahead come from the cache)."""
        count = min(count, self.left)
        with quiet_optuna():
            for _ in range(count):
                self.plan.study.optimize(self.objective, n_trials=1, callbacks=self.callbacks)
        self.left -= count

    def summary(self, workers: int) -> None:
        """A text ``progress``: the search's one line, what trained and what came from the cache."""
        if not isinstance(self.progress, str):
            return
        todo = len(self.runs)
        trained = sum(not run.from_cache or run.key in self.ahead for run in self.runs)
        where = f" ({len(self.ahead)} of them ahead, in {workers} worker processes)" if self.ahead else ""
        print(f"{self.progress}: search {self.plan.study.study_name}, {todo} trial{'' if todo == 1 else 's'}"
              f"{self.resumed} · {trained} trained{where}, {todo - trained} from the run cache", flush=True)


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
