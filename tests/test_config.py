import dataclasses
import json
import os
import subprocess
import sys

import pytest

from ftlab import ConfigError, RunConfig


@pytest.mark.parametrize("field,value", [
    ("learning_rate", -1e-4), ("learning_rate", 0.0), ("learning_rate", float("nan")), ("learning_rate", 5.0),
    ("lr_scheduler_type", "cosine_annealing"), ("lr_scheduler_type", "reduce_lr_on_plateau"),
    ("warmup_steps", -1), ("warmup_steps", 2.5), ("weight_decay", -0.1), ("weight_decay", 100.0),
    ("optim", "adam"), ("lora_r", -1), ("lora_dropout", 1.0), ("lora_target_modules", ()),
    ("per_device_train_batch_size", 0), ("gradient_accumulation_steps", 0), ("max_steps", -5),
    ("neftune_noise_alpha", -5.0), ("label_smoothing_factor", 1.0), ("max_seq_length", 8),
    ("seed", -1), ("eval_steps", 0), ("model", ""), ("dataset", " "), ("per_device_train_batch_size", True),
    ("max_steps", 10.0), ("lr_scheduler_kwargs", {1: 2}),
])
def test_bad_values_name_field_value_and_fix(field, value):
    with pytest.raises(ConfigError) as info:
        RunConfig(**{field: value})
    msg = str(info.value)
    assert f"RunConfig.{field}=" in msg and repr(value)[:10] in msg
    assert info.value.field == field


def test_choices_are_listed_in_the_message():
    with pytest.raises(ConfigError, match="cosine_with_min_lr"):
        RunConfig(lr_scheduler_type="cosin")
    with pytest.raises(ConfigError, match="adamw_8bit"):
        RunConfig(optim="adamw")


def test_conflicting_fields():
    with pytest.raises(ConfigError, match="load_in_4bit"):
        RunConfig(load_in_4bit=True, load_in_8bit=True)
    with pytest.raises(ConfigError, match="QLoRA"):
        RunConfig(load_in_4bit=True, lora_r=0)
    with pytest.raises(ConfigError, match="bf16"):
        RunConfig(bf16=True, fp16=True)


def test_unknown_field_is_refused_with_a_hint():
    with pytest.raises(ConfigError, match="warmup_steps"):
        RunConfig().replace(warmup_ratio=0.1)


def test_json_round_trip_and_stable_hash():
    cfg = RunConfig(lora_target_modules=["q_proj", "v_proj"], lr_scheduler_kwargs={"min_lr_rate": 0.1},
                    neftune_noise_alpha=5.0, warmup_steps=0.1)
    again = RunConfig.from_json(cfg.to_json())
    assert again == cfg and again.hash() == cfg.hash()
    assert json.loads(cfg.to_json())["lora_target_modules"] == ["q_proj", "v_proj"]
    assert cfg.replace(learning_rate=1e-3).hash() != cfg.hash()


def test_hash_is_the_same_in_another_interpreter():
    # no id(), no set or dict order: a fresh interpreter with another string-hash seed agrees
    code = "from ftlab import RunConfig; print(RunConfig(seed=1, lr_scheduler_kwargs={'b': 1, 'a': 2}).hash())"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert other.stdout.strip() == RunConfig(seed=1, lr_scheduler_kwargs={"a": 2, "b": 1}).hash()


@pytest.mark.parametrize("spelled,canonical", [
    (dict(neftune_noise_alpha=0), dict(neftune_noise_alpha=None)),
    (dict(neftune_noise_alpha=0.0), dict()),
    (dict(weight_decay=0), dict(weight_decay=0.0)),
    (dict(warmup_steps=0.0), dict(warmup_steps=0)),
    (dict(warmup_steps=5.0), dict(warmup_steps=5)),
    (dict(max_grad_norm=1), dict()),
    (dict(neftune_noise_alpha=5), dict(neftune_noise_alpha=5.0)),
])
def test_one_spelling_per_setting_gives_one_hash(spelled, canonical):
    a, b = RunConfig(**spelled), RunConfig(**canonical)
    assert a == b and a.hash() == b.hash() and a.to_json() == b.to_json()
    assert RunConfig.from_json(a.to_json()) == b


def test_replace_validates_again():
    with pytest.raises(ConfigError):
        RunConfig().replace(learning_rate=-1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().learning_rate = 1.0  # type: ignore[misc]


def test_derived_values():
    assert RunConfig(lora_r=0).method == "full"
    assert RunConfig().method == "lora"
    assert RunConfig(load_in_4bit=True).method == "qlora"
    assert RunConfig(per_device_train_batch_size=4, gradient_accumulation_steps=3).effective_batch_size == 12
