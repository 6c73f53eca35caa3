"""Arms trained in worker processes: the same runs, under the same keys, as trained here."""
from __future__ import annotations

import pytest

from ftlab.errors import ConfigError
from ftlab.runs.cache import RunCache
from ftlab.experiments.sweep import arms
from ftlab.training.parallel import WORKERS_ENV, default_workers, train_in_workers


def test_workers_default_to_one_per_core_on_cpu_and_to_none_elsewhere(monkeypatch):
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    monkeypatch.setattr("ftlab.training.parallel.usable_cores", lambda: 8)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert default_workers("cpu") == 8
    assert default_workers("ci") == 1  # nbval's own xdist workers already fill the cores
    monkeypatch.setattr("ftlab.training.parallel.usable_cores", lambda: 2)
    assert default_workers("cpu") == 1  # two cores: no gain worth blurring step times for
    assert default_workers("cpu", timed=False) == 2  # ... but a rate sweep reads no step time
    assert default_workers("ci", timed=False) == 1
    monkeypatch.setattr("ftlab.training.parallel.usable_cores", lambda: 8)
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert default_workers("cpu") == 1
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert default_workers("gpu") == 3


@pytest.mark.parametrize("text", ["0", "two", "-1", ""])
def test_a_bad_worker_count_is_refused_naming_the_variable(monkeypatch, text):
    monkeypatch.setenv(WORKERS_ENV, text)
    with pytest.raises(ConfigError, match=f"{WORKERS_ENV}=.* is not allowed: a whole number of worker processes, 1 or more"):
        default_workers("cpu")


def test_arms_trained_in_two_workers_are_cached_runs_read_back_in_seed_order(tiny_config, tmp_path, capsys):
    base = tiny_config.replace(max_steps=2, eval_steps=2, exact_match_size=0)
    configs = [("a", base), ("b", base.replace(learning_rate=1e-3))]
    found = arms(configs, (42, 43), runs_dir=tmp_path, workers=2)
    out = capsys.readouterr().out
    assert "training 4 runs in 2 worker processes" in out and out.count("trained in") == 4
    assert list(found) == ["a", "b"]
    for label, config in configs:
        runs = found[label]
        assert [r.config.seed for r in runs] == [42, 43] and all(r.from_cache for r in runs)
        assert [r.label for r in runs] == [f"{label}, seed 42", f"{label}, seed 43"]
        assert all(r.env["cpu_threads"] >= 1 and r.metrics["steps"] == 2 for r in runs)
    # everything is cached now: the workers have nothing to do and start nothing
    assert train_in_workers([(f"a, seed {s}", base.replace(seed=s)) for s in (42, 43)], workers=2,
                            runs_dir=tmp_path) == 0
    assert len(RunCache(tmp_path).listing().runs) == 4


def test_a_worker_is_silenced_before_anything_heavy_is_imported():
    """A spawned worker imports its initializer's module before the initializer runs, so that
    module must not pull in bitsandbytes (which logs on AVX512-BF16 CPUs) or the rest of the
    training stack: their import-time output would land in the notebook's cell."""
    import subprocess
    import sys

    from ftlab.training import parallel

    initializer = parallel._shared_pool(1)._initializer
    code = (f"import sys, {initializer.__module__}; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'bitsandbytes') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]" and loaded.stderr == ""


def test_a_report_seed_trained_in_a_worker_keeps_its_weights_for_trained_model(tiny_config, tmp_path, monkeypatch):
    from ftlab.training.adapter_io import has_weights, trained_model, weights_folder

    base = tiny_config.replace(max_steps=2, eval_steps=2, exact_match_size=0)
    found = arms([("a", base), ("b", base.replace(learning_rate=1e-3))], (42, 43), runs_dir=tmp_path, workers=2,
                 keep_first=True)
    kept = [has_weights(weights_folder(runs[i].config, tmp_path)) for runs in found.values() for i in (0, 1)]
    assert kept == [True, False, True, False]  # the first seed of each arm, only
    monkeypatch.setattr("ftlab.training.train.train", lambda *a, **k: pytest.fail("trained again"))
    run, model = trained_model(found["a"][0].config, runs_dir=tmp_path, progress=False)
    assert run.from_cache and run.metrics == found["a"][0].metrics
