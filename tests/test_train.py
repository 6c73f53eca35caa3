import contextlib
import json
from pathlib import Path
import shutil
import socket
import sys
import time
import warnings

import pytest
from transformers import TrainerCallback

from ftlab import DeviceError, ModelNotFoundError, Run, RunConfig
from ftlab.setup import models
from ftlab.setup import sources
from ftlab import train
from ftlab.errors import ModelError
from ftlab.runs.cache import RunCache
from ftlab.runs.record import SCHEMA_VERSION
from ftlab.training.divergence import flag_divergence


@pytest.fixture(scope="module")
def finished(tmp_path_factory, addition_jsonl):
    runs = tmp_path_factory.mktemp("runs")
    cfg = RunConfig(model="tiny", dataset=str(addition_jsonl), system_prompt="", lora_r=0, learning_rate=3e-3,
                    max_steps=24, per_device_train_batch_size=8, max_seq_length=64, eval_steps=8,
                    eval_size=16, exact_match_size=4, max_new_tokens=4, warmup_steps=0.25, lr_scheduler_type="cosine")
    return train(cfg, runs_dir=runs, progress=False), runs


def test_loss_falls_and_everything_is_recorded(finished):
    run, _ = finished
    assert run.status == "completed" and len(run.history) == 24
    assert run.metrics["final_eval_loss"] < 0.6 * run.metrics["initial_eval_loss"]
    assert [e["step"] for e in run.evals] == [0, 8, 16, 24]
    for key in ("loss", "learning_rate", "grad_norm", "weight_norm", "tokens_per_second", "step_time"):
        assert all(r.get(key) is not None for r in run.history), key
    assert run.memory is not None and run.memory.activations > 0 and run.memory.optimizer == 2 * run.memory.weights
    assert 0.0 <= run.metrics["exact_match"] <= 1.0 and len(run.samples) == 4


def test_learning_rate_history_is_the_schedule_actually_used(finished):
    run, _ = finished
    from transformers import get_scheduler
    import torch
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=run.config.learning_rate)
    sched = get_scheduler("cosine", opt, num_warmup_steps=6, num_training_steps=24)
    expected = []
    for _ in range(24):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert run.series("learning_rate")[1] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def saved_path(config: RunConfig, runs: Path) -> Path:
    """Where the run cache keeps the completed run of ``config``."""
    cache = RunCache(runs)
    return cache.path(cache.key_for(config)[0])


def _must_not_load(*args, **kwargs):
    raise AssertionError("a cached run was trained again")


def test_run_json_round_trip_and_cache_hit(finished, tmp_path, monkeypatch):
    run, runs = finished
    path = saved_path(run.config, runs)
    saved = json.loads(path.read_text())
    assert saved["config_hash"] == run.config.hash() and saved["key"] == path.stem == run.key
    assert saved["schema"] == SCHEMA_VERSION
    again = Run.load(path)
    assert again.to_dict() == run.to_dict()
    with monkeypatch.context() as patched:  # a cache hit must not even load the model
        patched.setattr(sys.modules["ftlab.training.train"], "load_model", _must_not_load)
        cached = train(run.config, runs_dir=runs, label="again")
    assert cached.history == run.history and cached.label == "again"
    assert not list(runs.glob("*.tmp"))  # atomic write leaves no temp files


def test_interrupt_keeps_history_and_is_not_cached(tiny_config, tmp_path):
    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise KeyboardInterrupt

    run = train(tiny_config, runs_dir=tmp_path, callbacks=[StopAt()], progress=False)
    assert run.status == "interrupted"
    assert [r["step"] for r in run.history] == [1, 2, 3]
    assert all("loss" in r for r in run.history[:2])
    assert not saved_path(tiny_config, tmp_path).exists()  # a half run never answers a later cache lookup


def test_gpu_only_options_fail_before_training(tiny_config, tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceError, match="fp16"):
        train(tiny_config.replace(fp16=True), runs_dir=tmp_path)
    with pytest.raises(DeviceError, match="paged_adamw_8bit"):
        train(tiny_config.replace(optim="paged_adamw_8bit"), runs_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_missing_model_path_is_a_clear_error(tiny_config, tmp_path):
    with pytest.raises(ModelNotFoundError, match="no model folder there"):
        train(tiny_config.replace(model=str(tmp_path / "missing-model")), runs_dir=tmp_path)
    with pytest.raises(ModelNotFoundError, match="preset"):
        train(tiny_config.replace(model="nobody/no-such-model-ftlab"), runs_dir=tmp_path)


def test_editing_the_data_file_is_not_answered_from_the_cache(tiny_config, tmp_path):
    # the learner's own file: one run, then the file changes under the same config
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i} twice?", "response": str(2 * i)}) + "\n" for i in range(60)))
    config = tiny_config.replace(dataset=str(data), max_steps=2, eval_steps=2, exact_match_size=0)
    runs = tmp_path / "runs"
    first = train(config, runs_dir=runs, progress=False)
    assert train(config, runs_dir=runs, progress=False).history == first.history  # unchanged file: cache hit
    data.write_text("".join(json.dumps({"prompt": f"{i} thrice?", "response": str(3 * i)}) + "\n" for i in range(60)))
    second = train(config, runs_dir=runs, progress=False)
    assert second.metrics["data_sha256"] != first.metrics["data_sha256"]
    assert second.evals[0]["eval_loss"] != first.evals[0]["eval_loss"], "trained on the new data, not the old run"
    assert Run.load(saved_path(config, runs)).history == second.history
    assert len(list(runs.glob("*.json"))) == 2  # the first data's run is kept under its own key


# --- a damaged cache file is a miss, not an error ---------------------------------------------


def test_corrupt_cache_file_is_moved_aside_once_and_the_run_trains(tiny_config, tmp_path):
    config = tiny_config.replace(max_steps=1, eval_steps=1, eval_size=4, exact_match_size=0)
    path = saved_path(config, tmp_path)
    path.write_text('{"config": {"model": "tiny"}, "history": [{"step": 1, "lo')  # not a run at all
    with pytest.warns(UserWarning, match=rf"{path.stem}\.json is not a readable run: not valid JSON at line 1.*"
                                         rf"Moved it to .*quarantine/{path.stem}\.json\.corrupt-"):
        run = train(config, runs_dir=tmp_path, progress=False)
    assert run.status == "completed" and not run.from_cache
    aside = list((tmp_path / "quarantine").glob(f"{path.stem}.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text().endswith('"lo')  # kept as it was, for a look
    assert Run.load(path).history == run.history  # the fresh run took its place
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: the next call is a quiet cache hit
        assert train(config, runs_dir=tmp_path, progress=False).from_cache


def test_hand_edited_cache_file_with_a_bad_config_is_a_miss_too(tiny_config, tmp_path):
    config = tiny_config.replace(max_steps=1, eval_steps=1, exact_match_size=0)
    path = saved_path(config, tmp_path)
    saved = Run(config=config, history=[], metrics={"data_sha256": "x"}).to_dict()
    saved["config"]["learning_rate"] = 50.0  # edited by hand into a value RunConfig refuses
    path.write_text(json.dumps(saved))
    with pytest.warns(UserWarning, match="learning_rate=50.0 is not allowed"):
        assert RunCache(tmp_path).load_completed(path.stem) is None
    assert not path.exists() and len(list((tmp_path / "quarantine").glob("*.corrupt-*"))) == 1


# --- divergence ---------------------------------------------------------------------------------


def _run(losses, evals, **config):
    return Run(config=RunConfig(model="tiny", **config), history=[{"step": i + 1, "loss": x} for i, x in enumerate(losses)],
               evals=[{"step": s, "eval_loss": x} for s, x in evals])


@pytest.mark.parametrize("losses,evals,expected", [
    ([5.0, 4.0, 3.0, 2.5, 2.0], [(0, 5.5), (5, 2.2)], None),                           # learning
    ([5.0, 9.0, float("nan"), float("nan"), 1.0], [(0, 5.5), (5, 2.0)], "non-finite"),
    ([5.0, 4.0, 3.0, 2.0, 1.0], [(0, 5.5), (5, float("inf"))], "non-finite"),
    ([5.5, 18.4, 70.9, 43.1, 45.3, 55.2], [(0, 5.6), (3, 31.9), (6, 28.5)], "runaway"),  # lr 0.9, full fine-tune
    ([5.0, 5.1, 5.2, 5.3, 5.2], [(0, 5.5), (5, 9.0)], "runaway"),                       # eval blew up, train flat
    ([3.0, 1.0, 0.3, 0.1, 0.05], [(0, 3.0), (5, 5.0)], None),                           # overfitting, not divergence
    ([2.6, 3.0, 5.1, 6.2, 8.3, 5.3], [(0, 3.4), (6, 4.2)], "runaway"),                  # a too-high rate, 6 ci steps
])
def test_divergence_is_flagged_with_advice(losses, evals, expected):
    run = _run(losses, evals, learning_rate=0.5, max_grad_norm=0.0)
    flag_divergence(run)
    assert run.metrics.get("diverged") == expected
    if expected:
        advice = run.metrics["divergence_advice"]
        assert "lower the learning rate (this run: 0.5" in advice and "warmup" in advice and "max_grad_norm" in advice
    else:
        assert "divergence_advice" not in run.metrics


def test_a_runaway_run_is_reported_and_warned_about(addition_jsonl, tmp_path):
    config = RunConfig(model="tiny", dataset=str(addition_jsonl), system_prompt="", lora_r=0, learning_rate=0.9,
                       max_steps=4, per_device_train_batch_size=4, max_seq_length=64, eval_steps=4, eval_size=8,
                       exact_match_size=0, max_grad_norm=0.0)
    with pytest.warns(UserWarning, match=r"diverged \(runaway\): the train loss rose from .*lower the learning rate"):
        run = train(config, runs_dir=tmp_path, progress=False)
    assert run.status == "completed" and run.metrics["diverged"] == "runaway"
    assert run.metrics["final_eval_loss"] > 1.5 * run.metrics["initial_eval_loss"]
    assert Run.load(saved_path(config, tmp_path)).metrics["diverged"] == "runaway"  # saved with the run
    with pytest.warns(UserWarning, match="diverged"):  # a cache hit says so too
        assert train(config, runs_dir=tmp_path, progress=False).from_cache


def test_a_healthy_run_is_not_flagged(finished):
    run, _ = finished
    assert "diverged" not in run.metrics and "divergence_advice" not in run.metrics


def test_tiny_preset_defaults_train(tmp_path):
    # every field at its default but the run's length: the byte-level preset picks a length that fits
    config = RunConfig(model="tiny").replace(max_steps=1, eval_steps=1, train_size=40, eval_size=4, exact_match_size=0)
    run = train(config, runs_dir=tmp_path, progress=False)
    assert run.status == "completed" and run.metrics["data_dropped_too_long"] == 0 and len(run.history) == 1


# --- hub ids answer in seconds without network, and still resolve with it ------------------------


def test_hub_model_without_network_fails_within_seconds(monkeypatch, tiny_config, tmp_path):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sources, "_probe_cache", None)
    monkeypatch.setattr(socket, "create_connection", _hanging_connection)  # a network that never answers
    started = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="does not answer from this machine within 2.5 s"):
        train(tiny_config.replace(model="someone/some-model"), runs_dir=tmp_path)
    assert time.perf_counter() - started < 5
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE=1 is set"):
        models.resolve_model("someone/some-model")
    assert time.perf_counter() - started < 1
    assert not list(tmp_path.iterdir())


def _hanging_connection(address, timeout=None, *args, **kwargs):
    assert address == ("hub.example.invalid", 8443) or address[0] == "huggingface.co"
    time.sleep(30)
    raise OSError("no answer")


def test_hub_id_with_network_is_handed_to_from_pretrained(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(sources, "hub_reachable", lambda *a, **k: True)
    assert models.resolve_model("someone/some-model") == "someone/some-model"  # downloaded by from_pretrained


def test_hub_probe_asks_hf_endpoint_and_is_bounded(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.invalid:8443")
    monkeypatch.setattr(sources, "_probe_cache", None)
    monkeypatch.setattr(socket, "create_connection", _hanging_connection)
    started = time.perf_counter()
    assert sources.hub_reachable(timeout=0.5) is False
    assert time.perf_counter() - started < 2
    monkeypatch.setattr(socket, "create_connection", lambda address, timeout=None: contextlib.nullcontext())
    assert sources.hub_reachable() is False  # answered from the minute-long memory
    monkeypatch.setattr(sources, "_probe_cache", None)
    assert sources.hub_reachable() is True


# --- model folders and LoRA targets -------------------------------------------------------------


def test_a_good_model_folder_passes_and_lora_targets_match_like_peft(tmp_path, tiny_config):
    folder = tmp_path / "mine"
    shutil.copytree(models.resolve_model("tiny"), folder)
    assert models.resolve_model(str(folder)) == str(folder)
    model, _ = models.load_model(tiny_config.replace(model="tiny", lora_r=0))
    for targets in (["all-linear"], ["q_proj", "down_proj"], ["self_attn.q_proj"], ["model.layers.0.mlp.up_proj"]):
        models.check_lora_targets(model, tiny_config.replace(lora_r=4, lora_target_modules=targets))
    with pytest.raises(ModelError, match="names 'q_prj', which model 'tiny' does not have"):
        models.check_lora_targets(model, tiny_config.replace(lora_r=4, lora_target_modules=["q_proj", "q_prj"]))


def test_early_stopping_stops_after_patience_and_keeps_the_best(tmp_path):
    """Trainer's EarlyStoppingCallback on a 32-example split that the pretrained tiny base
    overfits within a few epochs: the run stops ``patience`` evaluations after its best one."""
    cfg = RunConfig(model="tiny-pretrained", lora_r=0, learning_rate=3e-3, system_prompt="", max_seq_length=256,
                    per_device_train_batch_size=8, exact_match_size=0, train_size=32, max_steps=80, eval_steps=4,
                    eval_size=32, early_stopping_patience=2)
    run = train(cfg, runs_dir=tmp_path, progress=False)
    m = run.metrics
    assert m["stopped_early"] and m["steps"] < cfg.max_steps
    assert m["steps"] == m["best_eval_step"] + cfg.early_stopping_patience * cfg.eval_steps
    best = min(run.evals, key=lambda e: e["eval_loss"])
    assert best["step"] == m["best_eval_step"] and m["best_eval_loss"] == best["eval_loss"]
    assert all(e["eval_loss"] >= best["eval_loss"] for e in run.evals if e["step"] > m["best_eval_step"])
    # the run ends with the restored best weights, and its final metrics say so and describe them
    assert m["weights"] == f"best step {m['best_eval_step']} (restored by early stopping)"
    assert m["final_eval_loss"] == best["eval_loss"] < run.evals[-1]["eval_loss"]


def test_sgd_momentum_reaches_the_optimizer(tiny_config):
    """optim_args travels to Trainer: SGD with momentum keeps one buffer per parameter."""
    from ftlab.training.arguments import training_optimizer
    model, _ = models.load_model(tiny_config.replace(optim="sgd"))
    plain = training_optimizer(tiny_config.replace(optim="sgd"), model)
    moving = training_optimizer(tiny_config.replace(optim="sgd", optim_args="momentum=0.9"), model)
    assert plain.defaults["momentum"] == 0 and moving.defaults["momentum"] == 0.9


def test_a_run_leaves_the_import_heap_out_of_the_collectors_scan(finished):
    """Trainer runs gc.collect() at the start of every run; after ftlab's first run the objects of the imports
    are frozen, so that collection no longer scans the whole process (0.24 s a run before)."""
    import gc
    assert gc.get_freeze_count() > 100_000  # torch and transformers alone make about 600,000 objects


def test_the_model_runs_no_hub_kernels(tiny_config):
    """transformers 5.25 would swap layers for code from the Hub's kernels-community (and fail to load without
    the kernels package); load_model turns that off."""
    model, _ = models.load_model(tiny_config)
    assert model.use_kernels is False
