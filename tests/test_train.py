import json
import sys

import pytest
from transformers import TrainerCallback

from ftlab import DeviceError, ModelNotFoundError, Run, RunConfig, train


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


def _must_not_load(*args, **kwargs):
    raise AssertionError("a cached run was trained again")


def test_run_json_round_trip_and_cache_hit(finished, tmp_path, monkeypatch):
    run, runs = finished
    path = runs / f"{run.config.hash()}.json"
    assert path.is_file() and json.loads(path.read_text())["config_hash"] == run.config.hash()
    again = Run.load(path)
    assert again.to_dict() == run.to_dict()
    with monkeypatch.context() as patched:  # a cache hit must not even load the model
        patched.setattr(sys.modules["ftlab.train"], "load_model", _must_not_load)
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
    assert Run.cached(tiny_config, tmp_path) is None  # a half run never answers a later cache lookup


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
    assert Run.cached(config, runs, second.metrics["data_sha256"]).history == second.history
