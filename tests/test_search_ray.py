"""tune_search on a real local Ray instance: the trials run in Ray workers (Optuna's sampler
as the search algorithm, ASHA as the scheduler) and land in the Optuna study."""
from __future__ import annotations

import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from ftlab.runs.cache import RunCache
from ftlab.experiments.search import steps_saved, trial_rows, tune_search

ray = pytest.importorskip("ray", reason="Ray Tune is the optional extra: pip install 'ftlab[scale]'")

LR = {"learning_rate": FloatDistribution(1e-3, 1e-2, log=True)}


def test_tune_search_runs_trials_on_ray_and_the_study_shows_them(tiny_config, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    monkeypatch.setenv("FTLAB_RUNS", str(runs))
    small = tiny_config.replace(max_steps=4, eval_steps=2, eval_size=8, exact_match_size=0)
    assert not ray.is_initialized()
    study = tune_search(small, LR, n_trials=4, sampler="random", workers=2)
    assert not ray.is_initialized(), "the local Ray started for the search is shut down after it"
    rows = trial_rows(study)
    assert len(rows) == 4 and {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"}
    assert all(t.user_attrs["runner"] == "ray" for t in study.trials)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert done, "ASHA lets at least the best trial run to the end"
    for trial in done:  # each completed Ray trial is a cached ftlab run, with the reported curve
        config = small.replace(**trial.params)
        assert RunCache(runs).load_completed(RunCache.key_for(config)[0]).metrics["final_eval_loss"] == trial.value
        assert sorted(trial.intermediate_values) == [2, 4]
    for trial in study.trials:
        if trial.state == TrialState.PRUNED:
            assert trial.user_attrs["pruned_step"] == 2 and trial.value is None
    assert steps_saved(study) == 2 * (4 - len(done))
    # called again, the study is complete: nothing runs
    capsys.readouterr()
    again = tune_search(small, LR, n_trials=4, sampler="random")
    assert again.study_name == study.study_name and len(again.trials) == 4
    assert "0 trials to run on Ray" in capsys.readouterr().out


def test_a_local_ray_whose_node_times_out_at_startup_is_started_again(monkeypatch):
    """Ray's raylet has a fixed 30 s to register; on a loaded machine the first start can miss it."""
    from ftlab.experiments.search import ray_tune
    calls: list[str] = []

    def init(**_):
        calls.append("init")
        if len(calls) == 1:
            raise Exception("The current node timed out during startup. This could happen because ...")
    monkeypatch.setattr(ray_tune.ray, "init", init)
    monkeypatch.setattr(ray_tune.ray, "shutdown", lambda: calls.append("shutdown"))
    ray_tune.start_local_ray(1)
    assert calls == ["init", "shutdown", "init"]
    monkeypatch.setattr(ray_tune.ray, "init", lambda **_: (_ for _ in ()).throw(ValueError("num_cpus")))
    with pytest.raises(ValueError):  # any other failure is raised at once
        ray_tune.start_local_ray(1)
