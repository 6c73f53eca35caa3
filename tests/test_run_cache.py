"""RunCache: the key, other versions' files, and a folder that cannot be written.

Each test here fails on the code before the cache had one owner: there the key was the
config's hash alone, a newer ftlab's file was renamed ``.corrupt-*`` by an older one, and a
read-only runs folder was found only when the trained run could not be saved.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from ftlab import Run, RunConfig, train
from ftlab.errors import CacheError
from ftlab.runs import cache as cache_module
from ftlab.runs.cache import RunCache, run_key
from ftlab.runs.record import METRICS, SCHEMA_VERSION, UnknownSchema
from ftlab.setup.presets import model_identity, resolve_model


@pytest.fixture()
def one_step(tiny_config: RunConfig) -> RunConfig:
    return tiny_config.replace(max_steps=1, eval_steps=1, eval_size=4, exact_match_size=0)


@pytest.fixture(scope="module")
def finished(addition_jsonl, tmp_path_factory) -> Run:
    config = RunConfig(model="tiny", dataset=str(addition_jsonl), system_prompt="", lora_r=0, learning_rate=3e-3,
                       max_steps=10, per_device_train_batch_size=8, max_seq_length=64, eval_steps=5, eval_size=8,
                       exact_match_size=0)
    return train(config, runs_dir=tmp_path_factory.mktemp("runs"), progress=False)


def test_the_key_of_a_config_is_pinned():
    # Changing this string invalidates every learner's and every workshop's run cache: only a
    # change to what a run *is* may do that, and it then comes with a KEY_VERSION bump.
    assert RunConfig(model="tiny", learning_rate=1e-3, seed=7).hash() == "62e28d43ac2e"
    assert run_key(RunConfig(model="tiny"), "data", "model") == "e66114e9e059ec35"


def test_a_field_left_at_its_default_is_not_hashed():
    """So adding a RunConfig field with a default keeps every existing key, and every cached run."""
    config = RunConfig(model="tiny", learning_rate=1e-3)
    explicit = RunConfig(model="tiny", learning_rate=1e-3, weight_decay=RunConfig().weight_decay,
                         lora_target_modules=list(RunConfig().lora_target_modules))
    assert explicit.hash() == config.hash()
    assert config.replace(weight_decay=0.5).hash() != config.hash()


def test_the_key_follows_data_bytes_and_model_bytes(one_step, tmp_path):
    folder = tmp_path / "mine"
    shutil.copytree(resolve_model("tiny"), folder)
    config = one_step.replace(model=str(folder))
    key, sha = RunCache.key_for(config)
    assert sha is not None and RunCache.key_for(config)[0] == key  # stable
    (folder / "config.json").write_text((folder / "config.json").read_text() + "\n")
    assert model_identity(str(folder)) != model_identity("tiny")
    assert RunCache.key_for(config)[0] != key


def test_a_newer_schema_file_is_skipped_with_one_line_and_left_as_it_is(one_step, tmp_path, capsys):
    cache = RunCache(tmp_path)
    key, _ = cache.key_for(one_step)
    newer = Run(config=one_step, metrics={}, history=[], env={"ftlab": "9.9"}).to_dict()
    newer["schema"] = SCHEMA_VERSION + 1
    path = cache.path(key)
    path.write_text(json.dumps(newer))
    before = path.read_bytes()
    with pytest.raises(UnknownSchema, match=f"written by ftlab 9.9 \\(run schema {SCHEMA_VERSION + 1}\\)"):
        Run.load(path)
    with pytest.warns(UserWarning) as caught:
        run = train(one_step, runs_dir=tmp_path, progress=False)  # trains, and would save under the same key
    said = [str(w.message) for w in caught]
    assert any("skipped" in m and "written by ftlab 9.9" in m for m in said), said
    assert any(f"not saved over {path.name}" in m for m in said), said
    assert run.status == "completed" and path.read_bytes() == before  # the newer file is not replaced
    assert not (tmp_path / "quarantine").exists() and not list(tmp_path.rglob("*.corrupt-*"))
    listing = cache.listing()
    assert listing.runs == [] and len(listing.skipped) == 1 and f"run schema {SCHEMA_VERSION + 1}" in listing.skipped[0]


def test_a_file_with_a_config_field_this_version_lacks_is_skipped_too(one_step, tmp_path):
    cache = RunCache(tmp_path)
    newer = Run(config=one_step, env={"ftlab": "9.9"}).to_dict()
    newer["config"]["gradient_noise"] = 0.1  # a field a later ftlab added, without a schema bump
    path = cache.path("0123456789abcdef")
    path.write_text(json.dumps(newer))
    with pytest.raises(UnknownSchema, match="config fields this ftlab lacks \\(gradient_noise\\)"):
        Run.load(path)
    assert cache.load_completed("0123456789abcdef") is None and path.is_file()


def test_an_older_schema_file_is_read_and_its_metrics_renamed(one_step, tmp_path):
    old = Run(config=one_step, history=[{"step": 1, "loss": 1.0}]).to_dict()
    del old["schema"], old["key"]
    old["metrics"] = {"final_train_loss": 1.0, "stopped_step": 4, "best_step": 2, "final_eval_loss": 1.2}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    run = Run.load(path)
    assert run.metrics == {"train_loss": 1.0, "steps": 4, "best_eval_step": 2, "final_eval_loss": 1.2}


def test_every_metric_a_run_records_is_declared(finished):
    run = finished
    assert set(run.metrics) <= set(METRICS)
    with pytest.raises(KeyError, match="undeclared run metrics \\['final_trian_loss'\\]"):
        Run(config=run.config, metrics={"final_trian_loss": 1.0}).to_dict()


def test_one_summary_line_names_each_quantity(finished):
    run = finished
    m = run.metrics
    line = run.summary()
    assert f"train loss {m['train_loss']:.3f} (mean of last {m['train_loss_window']} steps)" in line
    assert m["last_step_train_loss"] == run.history[-1]["loss"]
    assert f"-> {m['final_eval_loss']:.3f}" in line


def _refuse_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder this process cannot write (chmod does not stop root, who runs CI)."""
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(cache_module.tempfile, "mkstemp", refuse)


def test_an_unwritable_runs_folder_is_refused_before_training(one_step, tmp_path, monkeypatch):
    _refuse_writes(monkeypatch)
    monkeypatch.setattr(sys.modules["ftlab.training.train"], "load_model",
                        lambda *a, **k: pytest.fail("the model was loaded before the folder was checked"))
    with pytest.raises(CacheError, match="cannot be written \\(Permission denied\\); point FTLAB_RUNS"):
        train(one_step, runs_dir=tmp_path, progress=False)


def test_a_save_that_fails_after_training_still_returns_the_run(one_step, tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(cache_module, "write_json_atomic", full_disk)
    with pytest.warns(UserWarning, match="could not save the trained run .* the run is returned but not cached"):
        run = train(one_step, runs_dir=tmp_path, progress=False)
    assert run.status == "completed" and run.history and not list(tmp_path.glob("*.json"))


def test_find_remove_and_pruned_runs_stay_apart(one_step, tmp_path):
    cache = RunCache(tmp_path)
    done = train(one_step, runs_dir=tmp_path, progress=False)
    pruned = Run(config=one_step.replace(seed=1), status="pruned", metrics={"pruned_step": 1})
    cache.save(pruned, pruned=True)
    assert cache.load_completed(done.key).history == done.history
    assert cache.load_completed(pruned.key) is None and cache.load_pruned(pruned.key).status == "pruned"
    assert cache.load_any(pruned.key).status == "pruned"
    assert [run.key for _, run in cache.listing().runs] == [done.key]  # pruned runs are not the cache's runs
    assert cache.find(done.key[:5]) == cache.path(done.key)
    with pytest.raises(CacheError, match="no run 'zz'"):
        cache.find("zz")
    assert cache.remove(done.key) == cache.path(done.key) and cache.load_completed(done.key) is None


def test_a_relative_runs_folder_means_the_same_folder_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTLAB_RUNS", "shared-runs")
    assert RunCache().folder == tmp_path / "shared-runs" and RunCache().folder.is_absolute()
    assert RunCache(Path("x")).folder == tmp_path / "x"
