"""Trials trained ahead in worker processes: the points a sampler draws without a result are
foreseen exactly, trained side by side, and the search then runs the same trials from the cache."""
from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution

from ftlab.experiments.search import search
from ftlab.experiments.search import trials as trials_module
from ftlab.experiments.search.ahead import foreseen_configs
from ftlab.experiments.search.plan import plan_search, tpe_startup_trials
from test_search import runs  # noqa: F401  (autouse: every run and study in a temp runs folder)

SPACE = {"learning_rate": FloatDistribution(1e-3, 1e-2, log=True),
         "weight_decay": FloatDistribution(1e-3, 1.0, log=True)}


@pytest.fixture()
def small(tiny_config):
    return tiny_config.replace(max_steps=2, eval_steps=2, eval_size=8, exact_match_size=0)


def planned(base, n_trials, sampler, pruner=None, seed=0):
    return plan_search(base, SPACE, n_trials=n_trials, sampler=sampler, pruner=pruner, storage=None, study_name=None,
                       seed=seed, grid_points=2, contributor=None, runs_dir=None)


def points(configs):
    return [(c.learning_rate, c.weight_decay) for c in configs]


@pytest.mark.parametrize("sampler, n_trials, blind", [("grid", 4, 4), ("random", 3, 3), ("tpe", 7, 2)])
def test_foreseen_points_are_the_first_trials_the_search_runs(small, sampler, n_trials, blind):
    foreseen = foreseen_configs(planned(small, n_trials, sampler, seed=3), n_trials)
    assert len(foreseen) == blind == (tpe_startup_trials(n_trials) if sampler == "tpe" else n_trials)
    study = search(small, SPACE, n_trials=n_trials, sampler=sampler, seed=3, grid_points=2, progress=False)
    ran = [(t.params["learning_rate"], t.params["weight_decay"]) for t in sorted(study.trials, key=lambda t: t.number)]
    assert ran[:blind] == points(foreseen)  # the same points, in the same order


def test_nothing_is_foreseen_where_a_pruner_may_stop_a_trial_or_the_sampler_reads_results(small):
    assert foreseen_configs(planned(small, 4, "random", pruner="median"), 4) == []
    assert foreseen_configs(planned(small, 4, optuna.samplers.TPESampler(seed=0)), 4) == []
    assert len(foreseen_configs(planned(small, 4, optuna.samplers.RandomSampler(seed=0)), 4)) == 4


def test_trials_trained_ahead_in_workers_are_the_trials_a_one_process_search_trains(small, tmp_path,
                                                                                      monkeypatch, capsys):
    (tmp_path / "alone").mkdir()
    alone = search(small, SPACE, n_trials=3, sampler="random", runs_dir=tmp_path / "alone", progress=False)

    def refuse(*args, **kwargs):
        raise AssertionError("a trial trained in the search's own process")
    monkeypatch.setattr(trials_module, "train", refuse)
    ahead = search(small, SPACE, n_trials=3, sampler="random", workers=2, progress="random, 2 workers")
    assert [(t.params, t.value) for t in ahead.trials] == [(t.params, t.value) for t in alone.trials]
    line = capsys.readouterr().out.strip()
    assert line.startswith("random, 2 workers: search ") and line.endswith(
        "3 trials · 3 trained (3 of them ahead, in 2 worker processes), 0 from the run cache")


def test_tpe_searches_side_by_side_train_their_next_trials_in_workers_and_match_searches_run_alone(
        small, tmp_path, monkeypatch, capsys):
    from ftlab.experiments.search import search_all

    (tmp_path / "alone").mkdir()
    alone = [search(small, SPACE, n_trials=4, sampler="tpe", seed=s, runs_dir=tmp_path / "alone", progress=False)
             for s in (0, 1)]
    plan = planned(small, 4, "tpe", seed=0)
    assert plan.foresees_next and tpe_startup_trials(4) == 2
    monkeypatch.setattr(trials_module, "train", lambda *a, **k: pytest.fail("a trial trained in the search's process"))
    together = search_all([dict(base=small, space=SPACE, n_trials=4, sampler="tpe", seed=s, progress=f"tpe {s}")
                           for s in (0, 1)], workers=2)
    for mine, theirs in zip(together, alone):  # past the startup too: the same points, values, order
        assert [(t.params, t.value) for t in mine.trials] == [(t.params, t.value) for t in theirs.trials]
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["tpe 0", "tpe 1"]
    assert all(line.endswith("4 trials · 4 trained (4 of them ahead, in 2 worker processes), 0 from the run cache")
               for line in lines)


def test_a_trial_past_tpe_startup_is_foreseen_one_at_a_time_and_only_for_ftlabs_own_tpe(small):
    study = search(small, SPACE, n_trials=2, sampler="tpe", seed=0, progress=False)  # the startup, done
    assert len(study.trials) == 2
    plan = planned(small, 4, "tpe", seed=0)  # the same study, resumed: its next trial reads the two results
    assert len(foreseen_configs(plan, 2)) == 1
    assert foreseen_configs(planned(small, 4, optuna.samplers.TPESampler(seed=0)), 4) == []


def test_search_all_takes_search_keywords_only_and_workers_once(small):
    from ftlab.experiments.search import search_all

    with pytest.raises(TypeError, match="n_trial"):
        search_all([dict(base=small, space=SPACE, n_trial=2)])
    with pytest.raises(TypeError, match="give workers once"):
        search_all([dict(base=small, space=SPACE, workers=2)])
