import dataclasses
import inspect
import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import get_scheduler

from ftlab import ConfigError, RunConfig
from ftlab.config.profiles import base_config, knob_config, workload
from ftlab.config.run_config import SCHEDULER_TYPES, scheduler_arguments
from ftlab.errors import ArgumentError, ConfigFileError


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
    cfg = RunConfig(lora_target_modules=["q_proj", "v_proj"], lr_scheduler_type="cosine_with_min_lr",
                    lr_scheduler_kwargs={"min_lr_rate": 0.1},
                    neftune_noise_alpha=5.0, warmup_steps=0.1)
    again = RunConfig.from_json(cfg.to_json())
    assert again == cfg and again.hash() == cfg.hash()
    assert json.loads(cfg.to_json())["lora_target_modules"] == ["q_proj", "v_proj"]
    assert cfg.replace(learning_rate=1e-3).hash() != cfg.hash()


def test_hash_is_the_same_in_another_interpreter():
    # no id(), no set or dict order: a fresh interpreter with another string-hash seed agrees
    code = ("from ftlab import RunConfig; print(RunConfig(seed=1, lr_scheduler_type='polynomial', "
            "lr_scheduler_kwargs={'power': 2.0, 'lr_end': 1e-6}).hash())")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert other.stdout.strip() == RunConfig(seed=1, lr_scheduler_type="polynomial",
                                             lr_scheduler_kwargs={"lr_end": 1e-6, "power": 2.0}).hash()


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


# --- typos, JSON text and scheduler arguments: caught when the config is made -----------------


def test_constructor_typo_suggests_the_field():
    with pytest.raises(ConfigError, match="did you mean learning_rate") as info:
        RunConfig(lerning_rate=1e-3)
    assert info.value.field == "lerning_rate"
    with pytest.raises(ConfigError, match="did you mean per_device_train_batch_size"):
        RunConfig(per_device_train_batchsize=8)
    with pytest.raises(ConfigError, match="did you mean learning_rate"):
        dataclasses.replace(RunConfig(), lerning_rate=1e-3)  # dataclasses.replace goes through the same check
    assert dataclasses.replace(RunConfig(), learning_rate=1e-3).learning_rate == 1e-3
    assert "learning_rate" in inspect.signature(RunConfig).parameters  # help() and IDEs still see the fields


def test_from_json_names_the_position_and_the_fix():
    with pytest.raises(ConfigFileError, match=r"my\.json: not valid JSON at line 2, column 1: .*trailing comma"):
        RunConfig.from_json('{"model": "tiny",\n}', source="my.json")
    with pytest.raises(ConfigFileError, match="needs a JSON object"):
        RunConfig.from_json('"tiny"')
    run_json = json.dumps({"config": RunConfig().to_dict(), "history": []})
    with pytest.raises(ConfigFileError, match="saved Run"):
        RunConfig.from_json(run_json)


NEEDS = {"cosine_with_min_lr": {"min_lr_rate": 0.1}, "cosine_warmup_with_min_lr": {"min_lr_rate": 0.1},
         "warmup_stable_decay": {"num_decay_steps": 10}}
"""What each scheduler cannot start without."""


@pytest.mark.parametrize("name", SCHEDULER_TYPES)
def test_every_scheduler_accepts_the_arguments_it_needs(name):
    cfg = RunConfig(lr_scheduler_type=name, lr_scheduler_kwargs=NEEDS.get(name, {}))
    accepted, _ = scheduler_arguments(name)
    if accepted is None:  # a scheduler taking **kwargs: nothing to check against
        return
    with pytest.raises(ConfigError, match=f"'no_such_argument' is not an argument of the '{name}' scheduler"):
        cfg.replace(lr_scheduler_kwargs={**cfg.lr_scheduler_kwargs, "no_such_argument": 1})
    if accepted:  # the library agrees: the same key makes get_scheduler fail (constant ones ignore it)
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        with pytest.raises(TypeError):
            get_scheduler(name, opt, num_warmup_steps=1, num_training_steps=10,
                          scheduler_specific_kwargs={**cfg.lr_scheduler_kwargs, "no_such_argument": 1})


def test_scheduler_arguments_it_needs_are_required():
    with pytest.raises(ConfigError, match="needs num_decay_steps"):
        RunConfig(lr_scheduler_type="warmup_stable_decay")
    with pytest.raises(ConfigError, match="min_lr or min_lr_rate"):
        RunConfig(lr_scheduler_type="cosine_with_min_lr")
    with pytest.raises(ConfigError, match="Only one of min_lr or min_lr_rate"):
        RunConfig(lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr": 1e-5, "min_lr_rate": 0.1})
    assert RunConfig(lr_scheduler_type="polynomial", lr_scheduler_kwargs={"lr_end": 1e-6, "power": 2.0})


@pytest.mark.parametrize("field", ["packing", "gradient_checkpointing", "bf16", "fp16", "load_in_4bit",
                                   "load_in_8bit", "bnb_4bit_use_double_quant"])
def test_bool_fields_take_bools_only(field):
    with pytest.raises(ConfigError, match="True or False"):
        RunConfig(**{field: "yes"})
    with pytest.raises(ConfigError, match="True or False"):
        RunConfig(**{field: 1})


def test_one_target_module_as_a_string_is_a_list_of_one():
    assert RunConfig(lora_target_modules="all-linear").lora_target_modules == ("all-linear",)
    assert RunConfig(lora_target_modules="all-linear") == RunConfig(lora_target_modules=["all-linear"])
    with pytest.raises(ConfigError, match="list of module names"):
        RunConfig(lora_target_modules=None)


# --- max_seq_length follows the model unless it is given --------------------------------------


def test_every_preset_gets_a_max_seq_length_its_defaults_train_with():
    assert RunConfig().max_seq_length == 128 and RunConfig(model="smollm2-135m").max_seq_length == 128
    assert RunConfig(model="tiny").max_seq_length == 384 == RunConfig(model="tiny-pretrained").max_seq_length
    assert RunConfig(model="tiny", max_seq_length=64).max_seq_length == 64  # a length given is kept
    assert RunConfig(model="some/hub-model").max_seq_length == 128


def test_default_length_keeps_old_hashes_and_follows_a_model_change():
    # a config that never named a length hashes as it did when 128 was the default: old runs still answer
    assert RunConfig().hash() == RunConfig(max_seq_length=128).hash()
    assert json.loads(RunConfig(model="tiny").to_json())["max_seq_length"] == 384  # never None in JSON
    assert RunConfig().replace(model="tiny").max_seq_length == 384
    assert RunConfig(model="tiny").replace(model="smollm2-135m").max_seq_length == 128
    assert RunConfig(max_seq_length=96).replace(model="tiny").max_seq_length == 96
    assert RunConfig.from_json(RunConfig(model="tiny").to_json()).replace(model="smollm2-135m").max_seq_length == 384


def test_an_environment_variable_is_not_called_a_field():
    err = ConfigError("FTLAB_PROFILE", "gpux", "one of ci, cpu, gpu")
    assert str(err).startswith("FTLAB_PROFILE='gpux' is not allowed")


@pytest.mark.parametrize("call, text", [
    (lambda: workload("gpux"), "workload(name='gpux') is not allowed: one of ci, cpu, gpu"),
    (lambda: base_config("gpux"), "base_config(profile='gpux') is not allowed: one of ci, cpu, gpu"),
    (lambda: knob_config("gpux"), "knob_config(profile='gpux') is not allowed: one of ci, cpu, gpu"),
])
def test_a_profile_argument_is_not_called_a_field(call, text):
    with pytest.raises(ArgumentError) as info:
        call()
    assert str(info.value) == text and not isinstance(info.value, ConfigError)
