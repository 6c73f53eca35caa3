"""Bad inputs, one table: each gets an ftlab error whose message names the problem and the fix,
before any training starts, and without losing a saved run.

Each row is (description, callable, expected exception type, text the message must hold).
The callable takes a ``Bad`` context: a temp folder, a small good data set, a tiny config
that would train, and switches for the environment. Around every row the trainer is
replaced by one that fails the test if it is ever built, and a saved run in the run cache
must come out of the row byte for byte.

Two rows are widget knob descriptions (``LogSlider``/``Slider`` with impossible ranges):
those raise a plain ValueError (``ftlab/widgets/controls.py``), which does name the knob
and the rule.
"""
from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from ftlab import Run, RunConfig
from ftlab.runs.cache import RunCache
from ftlab.cli.main import read_config
from ftlab.cli.common import CliError
from ftlab.errors import (CacheError, ConfigError, ConfigFileError, DataError, DeviceError, FtlabError, ModelError,
                          ModelNotFoundError)
from ftlab.setup.presets import resolve_model
from ftlab.cli.prepare import chapter_notebooks
from ftlab.config.profiles import profile_name
from ftlab.cli.runs import find_run
from ftlab.foundation.storage import cache_dir
from ftlab.training.train import train
from ftlab.ui.widgets.controls import Dropdown, LogSlider, Slider, Toggle, build_controls


@dataclass
class Bad:
    tmp: Path
    data: Path
    config: RunConfig
    monkeypatch: pytest.MonkeyPatch

    def train(self, **changes: Any) -> Run:
        return train(self.config.replace(**changes), progress=False)

    def env(self, name: str, value: str) -> None:
        self.monkeypatch.setenv(name, value)

    def no_network(self) -> None:
        """No HF_HUB_OFFLINE, and the hub probe answers 'unreachable' (no host is contacted)."""
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
            self.monkeypatch.delenv(name, raising=False)
        self.monkeypatch.setattr(sys.modules["ftlab.setup.sources"], "hub_reachable", lambda *a, **k: False)

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    def model(self, change: Callable[[Path], None]) -> str:
        """A copy of the tiny preset's folder with ``change`` applied to it."""
        folder = self.tmp / "model"
        shutil.copytree(resolve_model("tiny"), folder)
        change(folder)
        return str(folder)


def _lines(*rows: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


GOOD = {"prompt": "1 plus 1?", "response": "2"}


def _pickle_only(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")


def _edit_config(**changes: Any) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config.update(changes)
        for key in [k for k, v in changes.items() if v is None]:
            del config[key]
        (folder / "config.json").write_text(json.dumps(config))
    return change


def _remove(*names: str) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        for name in names:
            (folder / name).unlink()
    return change


def _corrupt_config(folder: Path) -> None:
    (folder / "config.json").write_text('{"model_type": "llama",\n  "hidden_size": 128,,\n}')


def _cpu_only(bad: Bad) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: GPU-only options are allowed")


def _saved_run_text(bad: Bad) -> str:
    return json.dumps(Run(config=RunConfig(model="tiny")).to_dict())


ROWS: list[tuple[str, Callable[[Bad], Any], type[BaseException], str]] = [
    # --- the cases ---------------------------------------------------------------------
    ("data file not UTF-8",
     lambda b: b.train(dataset=str(b.file("latin1.jsonl", _lines(GOOD, GOOD).encode() + '{"prompt": "café?", "response": "x"}\n'.encode("latin-1")))),
     DataError, "latin1.jsonl:3: not UTF-8 text (byte 0xe9 at column 16); save the file as UTF-8"),
    ("model folder with only pickle weights", lambda b: b.train(model=b.model(_pickle_only)),
     ModelError, "holds only pickle weights (pytorch_model.bin); ftlab loads safetensors only"),
    ("model folder whose config asks for remote code",
     lambda b: b.train(model=b.model(_edit_config(auto_map={"AutoModelForCausalLM": "modeling_x.X"})),),
     ModelError, "asks for remote code (auto_map: ['AutoModelForCausalLM']); ftlab never runs code"),
    ("LoRA target module the model does not have",
     lambda b: b.train(lora_r=4, lora_target_modules=["q_proj", "qkv_proj"]),
     ModelError, "names 'qkv_proj', which model 'tiny' does not have; its linear modules are: down_proj, gate_proj, "
                 "k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"),
    ("unknown lr_scheduler_kwargs key",
     lambda b: b.config.replace(lr_scheduler_type="cosine", lr_scheduler_kwargs={"min_lr_rate": 0.1}),
     ConfigError, "'min_lr_rate' is not an argument of the 'cosine' scheduler (it takes num_cycles)"),
    ("typo in the RunConfig constructor", lambda b: RunConfig(lerning_rate=1e-3),
     ConfigError, "RunConfig has no field 'lerning_rate'; did you mean learning_rate?"),
    ("malformed JSON config", lambda b: RunConfig.from_json('{"model": "tiny",}'),
     ConfigFileError, "not valid JSON at line 1, column 18"),
    ("hub model id with HF_HUB_OFFLINE=1",
     lambda b: (b.env("HF_HUB_OFFLINE", "1"), b.train(model="nobody/no-such-model-ftlab")),
     ModelNotFoundError, "a hub id, and HF_HUB_OFFLINE=1 is set and it is not in the Hugging Face cache"),
    ("hub model id without network", lambda b: (b.no_network(), b.train(model="nobody/no-such-model-ftlab")),
     ModelNotFoundError, "does not answer from this machine within 2.5 s"),
    ("hub data set with HF_HUB_OFFLINE=1",
     lambda b: (b.env("HF_HUB_OFFLINE", "1"), b.train(dataset="nobody/no-such-data-ftlab")),
     DataError, "is a hub data set, and HF_HUB_OFFLINE=1 is set"),
    ("hub data set without network", lambda b: (b.no_network(), b.train(dataset="nobody/no-such-data-ftlab")),
     DataError, "does not answer from this machine"),

    # --- config ----------------------------------------------------------------------------------
    ("warmup_stable_decay without its decay length", lambda b: RunConfig(lr_scheduler_type="warmup_stable_decay"),
     ConfigError, "scheduler needs num_decay_steps, e.g. ftlab.lessons.schedules.default_scheduler_kwargs"),
    ("cosine_with_min_lr without a floor", lambda b: RunConfig(lr_scheduler_type="cosine_with_min_lr"),
     ConfigError, "One of min_lr or min_lr_rate should be set"),
    ("scheduler argument a constant schedule would ignore",
     lambda b: RunConfig(lr_scheduler_type="constant", lr_scheduler_kwargs={"num_cycles": 2}),
     ConfigError, "'num_cycles' is not an argument of the 'constant' scheduler (it takes none)"),
    ("scheduler argument of the wrong type",
     lambda b: RunConfig(lr_scheduler_type="cosine", lr_scheduler_kwargs={"num_cycles": "two"}),
     ConfigError, "the 'cosine' scheduler refuses them"),
    ("optim_args for an optimizer that ignores them", lambda b: RunConfig(optim_args="momentum=0.9"),
     ConfigError, "momentum is not read by optim='adamw_torch' (it reads none (only sgd and rmsprop do))"),
    ("optim_args key SGD does not read", lambda b: RunConfig(optim="sgd", optim_args="betas=0.9"),
     ConfigError, "betas is not read by optim='sgd' (it reads dampening, momentum, nesterov, weight_decay)"),
    ("optim_args without =", lambda b: RunConfig(optim="sgd", optim_args="momentum"),
     ConfigError, "'momentum' is not key=value; write key=value pairs separated by commas"),
    ("Nesterov without momentum", lambda b: RunConfig(optim="sgd", optim_args="nesterov=true"),
     ConfigError, "Nesterov momentum needs a momentum > 0 and no dampening"),
    ("optim_args value not a number", lambda b: RunConfig(optim="sgd", optim_args="momentum=high"),
     ConfigError, "momentum='high' is not a number"),
    ("negative early_stopping_patience", lambda b: RunConfig(early_stopping_patience=-1),
     ConfigError, "RunConfig.early_stopping_patience=-1 is not allowed: an int >= 0"),
    ("lr_scheduler_kwargs=None", lambda b: RunConfig(lr_scheduler_kwargs=None),
     ConfigError, "RunConfig.lr_scheduler_kwargs=None is not allowed: a dict"),
    ("lora_target_modules=None", lambda b: RunConfig(lora_target_modules=None),
     ConfigError, "RunConfig.lora_target_modules=None is not allowed"),
    ("a string for a bool", lambda b: RunConfig(packing="yes"), ConfigError, "RunConfig.packing='yes' is not allowed: True or False"),
    ("system_prompt=None", lambda b: RunConfig(system_prompt=None), ConfigError, "'' for no system turn"),
    ("a TrainingArguments name RunConfig spells differently", lambda b: RunConfig(num_train_epochs=3),
     ConfigError, "did you mean max_steps?"),
    ("warmup_ratio", lambda b: RunConfig().replace(warmup_ratio=0.1), ConfigError, "did you mean warmup_steps?"),
    ("a JSON list for a config", lambda b: RunConfig.from_json("[1, 2]"), ConfigFileError, "needs a JSON object"),
    ("a saved run where a config belongs", lambda b: RunConfig.from_json(_saved_run_text(b)),
     ConfigFileError, "this is a saved Run, not a RunConfig"),

    # --- data ------------------------------------------------------------------------------------
    ("a .txt data file", lambda b: b.train(dataset=str(b.file("notes.txt", "1 plus 1 is 2\n"))),
     DataError, "a .txt file is not a data set ftlab reads; give a .jsonl file"),
    ("a CSV in Latin-1",
     lambda b: b.train(dataset=str(b.file("rows.csv", "prompt,response\n".encode() + "prix?,12 €\n".encode("cp1252")))),
     DataError, "rows.csv:2: not UTF-8 text"),
    ("a malformed .json file", lambda b: b.train(dataset=str(b.file("rows.json", '[{"prompt": "a", "response": }]'))),
     DataError, "rows.json:1: not valid JSON (Expecting value at column 30)"),
    ("an empty .jsonl file", lambda b: b.train(dataset=str(b.file("empty.jsonl", "\n\n"))),
     DataError, "empty.jsonl: no examples in the file"),
    ("a data folder without train.jsonl",
     lambda b: (b.file("validation.jsonl", _lines(GOOD)), b.train(dataset=str(b.tmp))),
     DataError, "the folder has no train.jsonl"),
    ("too few examples to carve a validation split", lambda b: b.train(dataset=str(b.file("few.jsonl", _lines(*[GOOD] * 5)))),
     DataError, "only 5 training examples; need >= 20"),
    ("a column the CSV does not have",
     lambda b: b.train(dataset=str(b.file("cols.csv", "question,answer\n" + "a,b\n" * 30))),
     DataError, "has no column 'prompt' (columns: question, answer); set prompt_field / response_field"),
    ("max_seq_length shorter than every prompt",
     lambda b: b.train(dataset=str(b.data), system_prompt=RunConfig().system_prompt, max_seq_length=32),
     DataError, "no training example fits in max_seq_length=32: the shortest prompt"),
    ("FTLAB_DATA pointing nowhere", lambda b: (b.env("FTLAB_DATA", str(b.tmp / "nowhere")), b.train(dataset="finance")),
     DataError, "the shipped data set is not at"),

    # --- model -----------------------------------------------------------------------------------
    ("a broken config.json in a model folder", lambda b: b.train(model=b.model(_corrupt_config)),
     ModelError, "config.json is not valid JSON (line 2, column 22"),
    ("a config.json without model_type", lambda b: b.train(model=b.model(_edit_config(model_type=None))),
     ModelError, "has no 'model_type'"),
    ("a model folder without a tokenizer",
     lambda b: b.train(model=b.model(_remove("tokenizer.json", "tokenizer_config.json"))),
     ModelError, "has no tokenizer files"),
    ("a model folder without weights", lambda b: b.train(model=b.model(_remove("model.safetensors"))),
     ModelError, "has no weights (*.safetensors)"),
    ("a misspelt preset", lambda b: (b.env("HF_HUB_OFFLINE", "1"), b.train(model="tiny-pretraned")),
     ModelNotFoundError, "Did you mean the preset 'tiny-pretrained'?"),
    ("a model path that does not exist", lambda b: b.train(model=str(b.tmp / "missing")),
     ModelNotFoundError, "no model folder there"),

    # --- device ----------------------------------------------------------------------------------
    ("fp16 without a GPU", lambda b: (_cpu_only(b), b.train(fp16=True)), DeviceError, "needs a CUDA GPU and none is present; use bf16=True"),
    ("a paged optimizer without a GPU", lambda b: (_cpu_only(b), b.train(optim="paged_adamw_8bit")),
     DeviceError, "on CPU use 'adamw_8bit'"),

    # --- cache and environment -------------------------------------------------------------------
    ("FTLAB_CACHE pointing at a file", lambda b: (b.env("FTLAB_CACHE", str(b.file("cache", "x"))), b.train()),
     CacheError, "is a file, not a folder; point FTLAB_CACHE at a folder"),
    ("FTLAB_RUNS pointing at a file", lambda b: (b.env("FTLAB_RUNS", str(b.file("runs", "x"))), b.train()),
     CacheError, "is a file, not a folder; point FTLAB_RUNS at a folder"),
    ("a hand-edited run file", lambda b: Run.load(b.file("0123456789ab.json", '{"config": {"model": "tiny"},\n "history": [}')),
     CacheError, "not valid JSON at line 2, column 14"),
    ("a run file missing its history",
     lambda b: Run.load(b.file("0123456789ab.json", json.dumps({"config": {"model": "tiny"}}))),
     CacheError, "no 'history' entry); remove it (ftlab runs remove 0123456789ab)"),
    ("FTLAB_PROFILE=gpux", lambda b: (b.env("FTLAB_PROFILE", "gpux"), profile_name()),
     ConfigError, "FTLAB_PROFILE='gpux' is not allowed: one of ci, cpu, gpu"),

    # --- widget knobs ----------------------------------------------------------------------------
    ("a log slider starting at 0", lambda b: LogSlider("learning_rate", 0, 1e-2), ValueError, "need 0 < min < max"),
    ("a slider with min above max", lambda b: Slider("max_steps", 10, 5, 1), ValueError, "need min < max"),
    ("a dropdown value not among its options",
     lambda b: build_controls(b.config, [Dropdown("lr_scheduler_type", ["linear", "cosine"], value="constant")], {}),
     ConfigError, "one of this dropdown's options: 'linear', 'cosine'"),
    ("a knob on a misspelt field", lambda b: build_controls(b.config, [LogSlider("lerning_rate", 1e-5, 1e-1)], {}),
     ConfigError, "did you mean learning_rate?"),
    ("a toggle set to a string", lambda b: build_controls(b.config, [Toggle("packing", value="yes")], {}),
     ConfigError, "True or False"),
    ("0 on a log slider without an off box",
     lambda b: build_controls(b.config, [LogSlider("learning_rate", 1e-5, 1e-1)], {})["learning_rate"].set(0),
     ConfigError, "a log-scale slider cannot show 0"),

    # --- the ftlab command -----------------------------------------------------------------------
    ("ftlab runs show with an unknown id", lambda b: find_run("nothing"), CliError, "no run 'nothing' in"),
    ("ftlab train with a missing file", lambda b: read_config(b.tmp / "none.json"), CliError, "no such config file"),
    ("ftlab prepare --chapters 99", lambda b: chapter_notebooks(Path(__file__).parent.parent / "notebooks", ["99"]),
     CliError, "--chapters 99: no such chapter; the chapters are 00, 01"),
]

WIDGET_RANGE_ROWS = {"a log slider starting at 0", "a slider with min above max"}
"""Knob descriptions check their own ranges with ValueError (ftlab.ui.widgets.controls)."""


@pytest.fixture()
def bad(tmp_path, addition_jsonl, monkeypatch) -> Bad:
    config = RunConfig(model="tiny", dataset=str(addition_jsonl), system_prompt="", lora_r=0, max_steps=2,
                       per_device_train_batch_size=4, max_seq_length=64, eval_steps=1, eval_size=4, exact_match_size=0)
    return Bad(tmp=tmp_path / "work", data=addition_jsonl, config=config, monkeypatch=monkeypatch)


@pytest.mark.parametrize("description,call,error,text", ROWS, ids=[row[0] for row in ROWS])
def test_bad_input_gets_a_clear_error_before_training(description, call, error, text, bad, monkeypatch, tmp_path):
    runs = tmp_path / "runs"
    monkeypatch.setenv("FTLAB_RUNS", str(runs))
    cache_dir()  # the models the rows copy come from the user's cache, as a learner's would
    saved = RunCache().save(Run(config=RunConfig(model="tiny", seed=7), history=[{"step": 1, "loss": 1.0}], label="keep me"))
    before = saved.read_bytes()
    bad.tmp.mkdir()

    def no_training(*args, **kwargs):
        raise AssertionError(f"{description}: a trainer was built; the error must come before training")

    monkeypatch.setattr(sys.modules["ftlab.training.train"]._FtlabTrainer, "__init__", no_training)

    with pytest.raises(error) as info:
        call(bad)
    message = str(info.value)
    assert text in message, f"{description}: {message}"
    if description not in WIDGET_RANGE_ROWS:
        assert isinstance(info.value, FtlabError), f"{description}: {type(info.value).__name__} is not an FtlabError"
    assert [p.name for p in runs.iterdir()] == [saved.name] and saved.read_bytes() == before, \
        "the run cache must come out of a bad input as it went in"
