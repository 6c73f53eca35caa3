"""A search space: which RunConfig fields a search varies, and over which values.

A space is a plain dict of Optuna distributions keyed by RunConfig field names, so what a
learner writes here carries straight to Optuna, Ray Tune's ``OptunaSearch`` and
``Trainer.hyperparameter_search``::

    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    space = {"learning_rate": FloatDistribution(1e-4, 1e-2, log=True),
             "weight_decay": FloatDistribution(1e-3, 0.3, log=True),
             "lr_scheduler_type": CategoricalDistribution(["linear", "cosine"]),
             "warmup_steps": IntDistribution(0, 6)}

``check_space`` refuses, before any trial starts, a name RunConfig does not have and a
range RunConfig would refuse somewhere (a negative bound, a warmup range that mixes step
counts and fractions), naming the field and the fix. A grid search needs a finite list of
values per field: ``grid`` spaces a float range evenly (on a log scale for log
distributions) and keeps every choice of a categorical one.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping

import numpy as np
import optuna
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution,
                                  distribution_to_json, json_to_distribution)

from ftlab.config.run_config import RunConfig
from ftlab.errors import ConfigError
from ftlab.experiments.search.errors import SearchError

Space = Mapping[str, BaseDistribution]
"""RunConfig field name -> the Optuna distribution its value is drawn from."""


def check_space(base: RunConfig, space: Space) -> dict[str, BaseDistribution]:
    """``space`` as a dict, after checking every field against RunConfig itself.

    Each distribution's ends and middle (every choice of a categorical) are put into
    ``base`` and validated as RunConfig validates any config, so a bound RunConfig would
    refuse fails here, before the first trial, and not in the middle of a search.
    """
    if not isinstance(space, Mapping) or not space:
        raise SearchError(f"search space {space!r} is not usable: give a non-empty dict of RunConfig field -> "
                          "Optuna distribution, e.g. {'learning_rate': FloatDistribution(1e-4, 1e-2, log=True)}")
    checked = {}
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    for name, distribution in space.items():
        if name not in fields:
            base.replace(**{name: distribution})  # RunConfig's own error: no such field, did you mean ...
        if not isinstance(distribution, (FloatDistribution, IntDistribution, CategoricalDistribution)):
            raise ConfigError(name, distribution, "in a search space each field needs an Optuna FloatDistribution, "
                              "IntDistribution or CategoricalDistribution (optuna.distributions)")
        for value in probe_values(distribution):
            try:
                base.replace(**{name: value})
            except ConfigError as err:
                raise ConfigError(name, distribution, f"the search space reaches {value!r}, which RunConfig refuses "
                                  f"({err}); narrow the range to values RunConfig allows") from None
        checked[name] = distribution
    return checked


def probe_values(distribution: BaseDistribution) -> list[Any]:
    """The values of a distribution worth validating: both ends and the middle of a range
    (the middle catches a range whose ends are valid but not what lies between), every choice."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    low, high = distribution.low, distribution.high
    if isinstance(distribution, IntDistribution):
        return sorted({low, high, low + (high - low) // 2 // distribution.step * distribution.step})
    middle = math.sqrt(low * high) if distribution.log else (low + high) / 2
    return [low, middle, high]


GridPoints = int | Mapping[str, int]
"""Values per numeric field of a grid: one count for all, or a count per field name (the
fields a mapping leaves out get ``DEFAULT_GRID_POINTS``)."""
DEFAULT_GRID_POINTS = 3


def grid(space: Space, points: GridPoints) -> dict[str, list[Any]]:
    """The values a grid search tries per field: ``points`` per numeric range (fewer for an
    integer range with fewer values), every choice of a categorical field."""
    return {name: grid_values(distribution, points_for(points, name)) for name, distribution in space.items()}


def points_for(points: GridPoints, name: str) -> int:
    """How many grid values field ``name`` gets."""
    return points if isinstance(points, int) else points.get(name, DEFAULT_GRID_POINTS)


def check_grid_points(points: GridPoints, space: Space) -> None:
    """A SearchError unless ``points`` is an int >= 2 or maps fields of ``space`` to ints >= 2."""
    counts = {"all fields": points} if isinstance(points, int) else points
    ok = isinstance(counts, Mapping) and all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 2 for n in counts.values())
    unknown = [] if isinstance(points, int) or not ok else sorted(set(counts) - set(space))
    if not ok or unknown:
        raise SearchError(f"grid_points={points!r} is not allowed: values per numeric field of a grid, an int >= 2 or "
                          f"a dict of field -> int >= 2 naming fields of the space"
                          + (f" ({', '.join(unknown)} is not one)" if unknown else ""))


def grid_values(distribution: BaseDistribution, points: int) -> list[Any]:
    """``points`` values spread over a range: evenly on a log scale for a log distribution
    (1e-4, 1e-3, 1e-2), rounded to three significant digits so they read as a learner
    would type them; a categorical distribution's choices as they are."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    low, high = distribution.low, distribution.high
    spread = np.geomspace if distribution.log else np.linspace
    if isinstance(distribution, IntDistribution):
        steps = range(low, high + 1, distribution.step)
        if len(steps) <= points:
            return list(steps)
        return sorted({int(low + round((v - low) / distribution.step) * distribution.step)
                       for v in spread(low, high, points)})
    values = [float(f"{v:.3g}") for v in spread(low, high, points)]
    return sorted({min(max(v, low), high) for v in values})


def grid_size(values: Mapping[str, list[Any]]) -> int:
    """How many trials a grid has: the product of the value counts."""
    return math.prod(len(v) for v in values.values())


def suggest(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    """One value per field, asked of the trial through Optuna's public ``suggest_*`` calls
    (what a hand-written objective would do), so any sampler can steer them."""
    params: dict[str, Any] = {}
    for name, d in space.items():
        if isinstance(d, FloatDistribution):
            params[name] = trial.suggest_float(name, d.low, d.high, log=d.log, step=d.step)
        elif isinstance(d, IntDistribution):
            params[name] = trial.suggest_int(name, d.low, d.high, log=d.log, step=d.step)
        else:
            params[name] = trial.suggest_categorical(name, d.choices)
    return params


def space_to_json(space: Space) -> str:
    """The space as JSON text (Optuna's own distribution JSON, in field order): stored on a
    study so a resumed or joined search uses exactly the space the study was made for."""
    return json.dumps({name: distribution_to_json(d) for name, d in space.items()})


def space_from_json(text: str) -> dict[str, BaseDistribution]:
    """The space ``space_to_json`` wrote."""
    return {name: json_to_distribution(d) for name, d in json.loads(text).items()}


def describe(params: Mapping[str, Any]) -> str:
    """'learning_rate=0.001, lr_scheduler_type=cosine': a trial's values in one line."""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
