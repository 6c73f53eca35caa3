"""Random search and successive halving written by hand give what Optuna gives."""

import optuna
import pytest

from ftlab.lessons.halving import asha_stops
from ftlab.lessons.random_search import random_points

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = {"learning_rate": (1e-4, 1e-2), "weight_decay": (1e-3, 1.0)}


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_random_points_are_optunas_random_sampler_draws(seed):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    study.optimize(lambda t: sum(t.suggest_float(k, lo, hi, log=True) for k, (lo, hi) in SPACE.items()), n_trials=6)
    ours = random_points(SPACE, 6, seed)
    for trial, point in zip(study.trials, ours):
        assert trial.params == pytest.approx(point, rel=1e-12)


def _curves(n=12, evals=(2, 4, 6, 8, 10, 12, 14, 16)):
    """Made-up eval curves that fall at different speeds, with some noise."""
    import random
    rng = random.Random(3)
    return [[(s, 2.0 + rng.random() - 0.05 * s * rng.random()) for s in evals] for _ in range(n)]


@pytest.mark.parametrize("min_resource, eta", [(2, 3), (4, 2), (2, 2)])
def test_asha_stops_where_optunas_successive_halving_pruner_stops(min_resource, eta):
    curves = _curves()
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource, reduction_factor=eta)
    study = optuna.create_study(pruner=pruner)
    theirs = []
    for curve in curves:
        trial, stop = study.ask(), None
        for step, loss in curve:
            trial.report(loss, step)
            if trial.should_prune():
                stop = step
                break
        study.tell(trial, state=optuna.trial.TrialState.PRUNED) if stop else study.tell(trial, curve[-1][1])
        theirs.append(stop)
    assert asha_stops(curves, min_resource, eta) == theirs
    assert any(s is not None for s in theirs) and any(s is None for s in theirs)
