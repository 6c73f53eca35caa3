"""A workshop searching one space together: one shared study, many contributors.

The teacher opens the class study once, on a storage every learner can reach (a journal
file on the JupyterHub's shared disk, or a PostgreSQL URL for laptops on one network)::

    study = open_class_study("/shared/ftlab/class.journal", base, space)         # teacher

Each learner then adds trials to it, from a search (``search(storage=..., study_name=
"class")`` joins it: base and space come from the study) or from any run they made, a
Playground run included (``contribute(run, study)``). Every trial carries its
contributor's name, so the teacher's widget (``ftlab.ui.widgets.ClassStudy``) shows how many
people searched and who found the best point. Optuna's storages take care of many
writers at once: each trial is added in one storage operation, so none is lost or
counted twice.
"""
from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from ftlab.config.run_config import RunConfig
from ftlab.runs.record import Run
from ftlab.experiments.search.errors import SearchError
from ftlab.experiments.search.space import Space, check_space
from ftlab.experiments.search.study import create_or_load, default_contributor, describe_study, open_storage, quiet_optuna, study_setup
from ftlab.experiments.search.trials import eval_points

CLASS_STUDY = "class"
"""The shared study's name unless the teacher picks another."""


def open_class_study(storage: Any, base: RunConfig, space: Space, name: str = CLASS_STUDY) -> optuna.Study:
    """Create the class study (or open it again: the same base and space continue it)."""
    with quiet_optuna():
        return create_or_load(open_storage(storage), name, describe_study(base, check_space(base, space), "any", "any"))


def join_class_study(storage: Any, name: str = CLASS_STUDY) -> optuna.Study:
    """The class study the teacher opened (a SearchError naming the studies there if not)."""
    with quiet_optuna():
        return create_or_load(open_storage(storage), name, None)


def contribute(run: Run, study: optuna.Study, contributor: str | None = None) -> bool:
    """Add a finished Run to the class study as a trial credited to ``contributor``
    (default: the JupyterHub or login user name); False if this contributor's run of this
    config is already there (a second call adds nothing).

    The run must be the class experiment: its config may differ from the study's base only
    in the searched fields, or its loss would not be comparable (a SearchError lists the
    fields that differ). A value outside the space's range is kept (the range widens for
    it); a categorical value must be one of the space's choices.
    """
    contributor = contributor or default_contributor()
    base, space = study_setup(study)
    if run.status not in ("completed", "pruned"):
        raise SearchError(f"run {run.label or run.config_hash} is {run.status}: only a finished (or pruned) run can be "
                          f"added to the class study; train it to the end first")
    _check_same_experiment(run.config, base, space)
    if any(t.user_attrs.get("config_hash") == run.config_hash and t.user_attrs.get("contributor") == contributor
           for t in study.get_trials(deepcopy=False)):
        return False
    params = {name: getattr(run.config, name) for name in space}
    distributions = {name: _covering(name, d, params[name]) for name, d in space.items()}
    points = dict(eval_points(run))
    attrs: dict[str, Any] = {"contributor": contributor, "config_hash": run.config_hash, "run_key": run.key,
                             "max_steps": run.config.max_steps, "from_cache": True, "runner": "contribute"}
    value = run.metrics.get("final_eval_loss")
    pruned = run.metrics.get("pruned_step")
    if pruned is not None:
        state, value = TrialState.PRUNED, None
        attrs.update(pruned_step=pruned, steps_run=pruned)
    elif isinstance(value, float) and math.isfinite(value):
        state = TrialState.COMPLETE
        attrs["steps_run"] = run.config.max_steps
    else:
        state, value = TrialState.FAIL, None
        attrs.update(diverged=run.metrics.get("diverged") or "no final eval loss", steps_run=run.config.max_steps)
    study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=value, state=state,
                                              intermediate_values={s: v for s, v in points.items()
                                                                   if math.isfinite(v)}, user_attrs=attrs))
    return True


def _check_same_experiment(config: RunConfig, base: RunConfig, space: Space) -> None:
    """SearchError listing the fields outside the space where ``config`` differs from ``base``."""
    mine, theirs = config.to_dict(), base.to_dict()
    differ = [f"{k} ({mine[k]!r}, the class uses {theirs[k]!r})" for k in theirs
              if k not in space and mine[k] != theirs[k]]
    if differ:
        raise SearchError(f"this run is not the class experiment: it differs in {', '.join(differ)}; change only "
                          f"{', '.join(space)} (the searched fields) and train again to contribute it")


def _covering(name: str, distribution: BaseDistribution, value: Any) -> BaseDistribution:
    """The space's distribution, widened to hold ``value`` (a Playground may go past its range)."""
    if isinstance(distribution, CategoricalDistribution):
        if value not in distribution.choices:
            raise SearchError(f"{name}={value!r} is not one of the class study's choices "
                              f"{list(distribution.choices)}; pick one of them to contribute this run")
        return distribution
    if isinstance(distribution, FloatDistribution) and distribution.log and value <= 0:
        raise SearchError(f"{name}={value!r} cannot go on the class study's log scale (it needs a value > 0); "
                          f"use a small positive value instead")
    low, high = min(distribution.low, value), max(distribution.high, value)
    if isinstance(distribution, IntDistribution):
        return IntDistribution(int(low), int(high), log=distribution.log)
    return FloatDistribution(float(low), float(high), log=distribution.log)

