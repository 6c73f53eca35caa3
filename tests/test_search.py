"""ftlab.experiments.search on the tiny model: every trial a cached ftlab.train run, resumable studies,
pruning live and replayed from the cache, and every bad input refused before a trial."""
from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from ftlab import ConfigError, Run, RunConfig
from ftlab.runs.cache import RunCache
from ftlab.experiments.search import (SearchError, best_so_far, contributors, grid, search, steps_run, steps_saved, trial_rows,
                          trial_run, trainer_search_example)
from ftlab.experiments.search import trials as trials_module
from ftlab.experiments.search.study import counts_toward_budget, default_storage_url

LR = {"learning_rate": FloatDistribution(1e-3, 1e-2, log=True)}


@pytest.fixture(autouse=True)
def runs(tmp_path, monkeypatch):
    """Every run and the default study file in a temp runs folder."""
    folder = tmp_path / "runs"
    monkeypatch.setenv("FTLAB_RUNS", str(folder))
    return folder


@pytest.fixture()
def small(tiny_config) -> RunConfig:
    """Four steps, an evaluation every two: two points a pruner can judge."""
    return tiny_config.replace(max_steps=4, eval_steps=2, eval_size=8, exact_match_size=0)


@pytest.fixture()
def no_training(monkeypatch):
    """Fail the test if any trial trains (it must come from the cache, or never start)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a trial trained")
    monkeypatch.setattr(trials_module, "train", refuse)


def states(study):
    return [t.state for t in study.trials]


def test_search_space_and_arguments_are_checked_before_any_trial(small, no_training, tmp_path):
    with pytest.raises(ConfigError, match="lerning_rate.*did you mean learning_rate"):
        search(small, {"lerning_rate": FloatDistribution(1e-4, 1e-2, log=True)})
    with pytest.raises(ConfigError, match=r"RunConfig.learning_rate=.*reaches -0.001.*a float in \(0, 1\)"):
        search(small, {"learning_rate": FloatDistribution(-1e-3, 1e-2)})
    with pytest.raises(ConfigError, match="warmup_steps.*reaches 2.5"):  # both ends valid, the middle is not
        search(small, {"warmup_steps": FloatDistribution(0.0, 5.0)})
    with pytest.raises(ConfigError, match="lr_scheduler_type.*reaches 'cosinus'"):
        search(small, {"lr_scheduler_type": CategoricalDistribution(["linear", "cosinus"])})
    space = {**LR, "lr_scheduler_type": CategoricalDistribution(["linear", "cosine"])}
    with pytest.raises(SearchError, match=r"n_trials=4 is too small for the grid: it has 6 points .*set n_trials=6"):
        search(small, space, sampler="grid", n_trials=4)
    with pytest.raises(SearchError, match="sampler='bayes'.*grid, random, tpe"):
        search(small, LR, sampler="bayes")
    with pytest.raises(SearchError, match="pruner='early'.*median, hyperband"):
        search(small, LR, pruner="early")
    with pytest.raises(SearchError, match=r"grid_points=\{'lerning_rate': 2\}.*\(lerning_rate is not one\)"):
        search(small, LR, sampler="grid", grid_points={"lerning_rate": 2})
    with pytest.raises(SearchError, match="n_trials=0"):
        search(small, LR, n_trials=0)
    with pytest.raises(SearchError, match="'sqlite:////no/such/folder/s.db'.*folder /no/such/folder does not exist"):
        search(small, LR, storage="sqlite:////no/such/folder/s.db")
    with pytest.raises(SearchError, match=r"'postgresql://learner:\*\*\*@127.0.0.1:1/class' cannot be opened"):
        search(small, LR, storage="postgresql://learner:secret@127.0.0.1:1/class")  # nothing listens on port 1
    with pytest.raises(SearchError, match="'nosuchdb://x' cannot be opened"):
        search(small, LR, storage="nosuchdb://x")
    with pytest.raises(SearchError, match="folder .*missing does not exist"):
        search(small, LR, storage=str(tmp_path / "missing" / "class.journal"))
    with pytest.raises(SearchError, match="study 'nobody' does not exist"):
        search(storage=str(tmp_path / "class.journal"), study_name="nobody")


def test_grid_values_read_as_typed():
    values = grid({"learning_rate": FloatDistribution(1e-4, 1e-2, log=True),
                   "warmup_steps": IntDistribution(0, 2), "weight_decay": FloatDistribution(0.0, 0.1),
                   "lr_scheduler_type": CategoricalDistribution(["linear", "cosine"])}, 3)
    assert values == {"learning_rate": [1e-4, 1e-3, 1e-2], "warmup_steps": [0, 1, 2],
                      "weight_decay": [0.0, 0.05, 0.1], "lr_scheduler_type": ["linear", "cosine"]}
    assert grid({"warmup_steps": IntDistribution(0, 10)}, 3) == {"warmup_steps": [0, 5, 10]}
    # a count per field: learning rate x weight decay x warmup on a budget of 12 is 3 x 2 x 2
    space = {**LR, "weight_decay": FloatDistribution(0.01, 0.1, log=True), "warmup_steps": IntDistribution(0, 4)}
    assert grid(space, {"learning_rate": 3, "weight_decay": 2, "warmup_steps": 2}) == {
        "learning_rate": [1e-3, 0.00316, 1e-2], "weight_decay": [0.01, 0.1], "warmup_steps": [0, 4]}


def test_search_caches_its_runs_and_continues_its_study(small, runs, monkeypatch, capsys):
    study = search(small, LR, n_trials=2, sampler="random")
    assert states(study) == [TrialState.COMPLETE] * 2
    assert default_storage_url() == f"sqlite:///{(runs / 'studies.db').resolve()}"
    assert (runs / "studies.db").is_file()
    rows = trial_rows(study)
    assert [r["number"] for r in rows] == [0, 1] and all(r["steps_run"] == 4 and r["pruned_step"] is None for r in rows)
    for trial, row in zip(study.trials, rows):
        config = small.replace(learning_rate=row["learning_rate"])
        assert trial.user_attrs["config_hash"] == config.hash()
        run = RunCache(runs).load_completed(RunCache.key_for(config)[0])  # what a plain train(config) finds
        assert run is not None and run.metrics["final_eval_loss"] == row["value"] == trial.value
        assert sorted(trial.intermediate_values) == [2, 4]
    # the same call again: the study is complete, nothing runs; a bigger budget runs only what is missing
    def refuse(*args, **kwargs):
        raise AssertionError("a trial trained")
    monkeypatch.setattr(trials_module, "train", refuse)
    again = search(small, LR, n_trials=2, sampler="random")
    assert again.study_name == study.study_name and len(again.trials) == 2
    assert "0 trials to run, 2 done before" in capsys.readouterr().out
    monkeypatch.undo()
    monkeypatch.setenv("FTLAB_RUNS", str(runs))
    more = search(small, LR, n_trials=3, sampler="random")
    assert states(more) == [TrialState.COMPLETE] * 3
    assert more.trials[2].params != more.trials[0].params  # a resumed seeded sampler draws new points
    assert len(best_so_far(more)) == 3 and best_so_far(more)[-1] == min(t.value for t in more.trials)


def test_pruning_live_then_full_run_then_replayed_from_the_cache(small, runs, monkeypatch):
    always = optuna.pruners.ThresholdPruner(upper=0.0)  # every loss is above 0: prunes at the first evaluation
    pruned = search(small, LR, n_trials=2, sampler="grid", grid_points=2, pruner=always)
    assert states(pruned) == [TrialState.PRUNED] * 2
    assert sorted(t.params["learning_rate"] for t in pruned.trials) == [1e-3, 1e-2]  # the grid's two points
    assert [r["pruned_step"] for r in trial_rows(pruned)] == [2, 2] and steps_saved(pruned) == 4
    assert steps_run(pruned) == 4
    config = small.replace(learning_rate=pruned.trials[0].params["learning_rate"])
    key = RunCache.key_for(config)[0]
    record = RunCache(runs).load_pruned(key)
    assert record.status == "pruned" and record.metrics["pruned_step"] == 2
    assert [e["step"] for e in record.evals] == [0, 2] and len(record.history) == 2
    assert not (runs / f"{key}.json").exists()  # never answers train(config) as a finished run
    # no pruner, same points: the pruned records are not enough, so both train in full and are cached
    full = search(small, LR, n_trials=2, sampler="grid", grid_points=2)
    assert states(full) == [TrialState.COMPLETE] * 2
    assert [t.params for t in full.trials] == [t.params for t in pruned.trials]
    assert (runs / f"{key}.json").is_file()
    # the pruner again, in a new study: every decision is replayed from the cached runs, no training
    monkeypatch.setattr(trials_module, "train", lambda *a, **k: pytest.fail("a replayed trial trained"))
    replayed = search(small, LR, n_trials=2, sampler="grid", grid_points=2, pruner=always, study_name="replayed")
    assert states(replayed) == [TrialState.PRUNED] * 2
    assert [t.intermediate_values for t in replayed.trials] == [t.intermediate_values for t in pruned.trials]
    assert all(r["from_cache"] for r in trial_rows(replayed)) and steps_saved(replayed) == 4
    assert trial_run(replayed.trials[0], runs).metrics["pruned_step"] == 2


def test_a_diverged_trial_fails_as_a_result_and_counts_toward_the_budget(small, monkeypatch):
    def diverging(config, **kwargs):  # what train returns when the loss blew up
        return Run(config=config, evals=[{"step": 0, "eval_loss": 3.0}, {"step": 4, "eval_loss": math.nan}],
                   metrics={"final_eval_loss": math.nan, "diverged": "non-finite", "data_sha256": "x"})
    monkeypatch.setattr(trials_module, "train", diverging)
    study = search(small, LR, n_trials=2, sampler="random")
    assert states(study) == [TrialState.FAIL] * 2  # Optuna's state for a NaN value; two trials, not more
    assert [r["diverged"] for r in trial_rows(study)] == ["non-finite"] * 2
    assert math.isnan(best_so_far(study)[-1])


def test_rows_best_so_far_and_budget_from_a_study_without_training():
    study = optuna.create_study()
    lr = FloatDistribution(1e-4, 1e-2, log=True)
    def add(state, value=None, **attrs):
        study.add_trial(create_trial(params={"learning_rate": 1e-3}, distributions={"learning_rate": lr},
                                     value=value, state=state, user_attrs={"max_steps": 24, **attrs}))
    add(TrialState.PRUNED, pruned_step=6, steps_run=6, contributor="ana")
    add(TrialState.COMPLETE, 2.0, steps_run=24, contributor="bo")
    add(TrialState.FAIL, diverged="non-finite", steps_run=24, contributor="ana")
    add(TrialState.COMPLETE, 1.5, steps_run=24, contributor="ana")
    add(TrialState.FAIL)  # killed mid-trial: no result, not counted
    assert [counts_toward_budget(t) for t in study.trials] == [True, True, True, True, False]
    curve = best_so_far(study)
    assert math.isnan(curve[0]) and curve[1:] == [2.0, 2.0, 1.5]
    assert steps_saved(study) == 18 and steps_run(study) == 78
    assert contributors(study) == ["ana", "bo"]
    assert [r["state"] for r in trial_rows(study)] == ["PRUNED", "COMPLETE", "FAIL", "COMPLETE", "FAIL"]


def test_trainer_hyperparameter_search_example(small):
    best = trainer_search_example(small, LR, n_trials=2, sampler=optuna.samplers.RandomSampler(seed=0))
    assert 1e-3 <= best.hyperparameters["learning_rate"] <= 1e-2 and math.isfinite(best.objective)
    with pytest.raises(SearchError, match="lora_r is not one"):
        trainer_search_example(small, {"lora_r": IntDistribution(0, 4)})


def test_tune_search_says_how_to_get_ray_when_it_is_missing(small, monkeypatch):
    from ftlab.experiments.search import scale, tune_search
    real = scale.importlib.util.find_spec
    monkeypatch.setattr(scale.importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("ray") else real(name, *a))
    with pytest.raises(SearchError, match=r"needs Ray Tune, which is not installed: pip install 'ftlab\[scale\]'"):
        tune_search(small, LR)


@pytest.mark.parametrize("lost", ["integrity", "create"])
def test_a_fresh_sqlite_storage_opens_while_another_process_creates_its_tables(tmp_path, monkeypatch, lost):
    # the loser of two processes creating studies.db at once gets IntegrityError on the schema
    # version row, or "table ... already exists" on a CREATE TABLE (seen in the kill-and-resume
    # test); it waits for the winner and opens the finished database
    import sqlalchemy.exc
    from ftlab.experiments.search import study as study_module
    real, calls = study_module.RDBStorage, []
    race = {"integrity": sqlalchemy.exc.IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed")),
            "create": sqlalchemy.exc.OperationalError("CREATE TABLE version_info", {},
                                                      Exception("table version_info already exists"))}[lost]

    def racing(url, **kwargs):
        calls.append(url)
        if len(calls) == 1:
            raise race
        return real(url, **kwargs)

    monkeypatch.setattr(study_module, "RDBStorage", racing)
    storage = study_module.open_storage(None, tmp_path)
    assert isinstance(storage, real) and len(calls) == 2
