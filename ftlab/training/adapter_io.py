"""The model after training: keeping it, merging a LoRA adapter, reloading it, generating with it.

A run in ftlab's cache keeps its measurements, not its weights. :func:`trained_model` also
keeps the weights (safetensors, beside the runs: ``<runs folder>/weights/<run key>/``), so a
chapter can study the model a run ended with (what it forgot, what it writes) and find it
again instead of retraining.

What a learner checks before shipping an adapter, each a function here:

* :func:`merge_gap`: ``merge_and_unload()`` folds ``B @ A * scale`` into the base weights; the
  merged plain model must give the logits the adapter gave (up to float rounding);
* :func:`saved_bytes`: a LoRA adapter on disk against the whole merged model (safetensors);
* :func:`reload` / :func:`reload_gap`: the saved folder, read back, gives the same logits;
* :func:`generate_ways`: an answer written with the chat template and the right end token,
  without the template, and with a wrong end token (the model stops where the template says
  a turn ends; a generation loop waiting for another token runs on to ``max_new_tokens``).

Weights are read with ``safetensors`` / ``from_pretrained(use_safetensors=True)`` only, never
``torch.load`` (which can run code hidden in a pickle).
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from ftlab.config.run_config import RunConfig
from ftlab.runs.cache import RunCache
from ftlab.runs.record import Run
from ftlab.setup.data import chat_messages
from ftlab.setup.models import load_model

__all__ = ["WEIGHTS", "RUN_FILE", "KeepWeights", "weights_folder", "has_weights", "trained_model", "reload", "merge_gap", "reload_gap",
           "saved_bytes", "safetensors_bytes", "generate_ways"]

WEIGHTS = "weights"
"""Sub-folder of the runs folder where :func:`trained_model` keeps weights, one folder per run key."""
RUN_FILE = "run.json"
"""The Run whose weights a kept folder holds, beside them."""


class KeepWeights(TrainerCallback):
    """Saves the model Trainer ends with (the restored best under early stopping) to ``folder``:
    a PeftModel saves its adapter only, a plain model all its weights, as safetensors."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def on_train_end(self, args, state, control, model=None, **kw):
        if model is not None:
            model.save_pretrained(self.folder, safe_serialization=True)


def weights_folder(config: RunConfig, runs_dir: str | Path | None = None) -> Path:
    """Where :func:`trained_model` keeps the weights of ``config``'s run."""
    cache = RunCache(runs_dir)
    key, _ = cache.key_for(config)
    return cache.folder / WEIGHTS / key


def _saved(folder: Path) -> bool:
    return any(folder.glob("*.safetensors"))


def has_weights(folder: str | Path) -> bool:
    """Whether ``folder`` (a :func:`weights_folder`) holds kept weights and their Run."""
    return _saved(Path(folder)) and (Path(folder) / RUN_FILE).is_file()


def trained_model(config: RunConfig, *, label: str = "", runs_dir: str | Path | None = None,
                  progress: bool = True, retrain: bool = False) -> tuple[Run, PreTrainedModel]:
    """The model a run of ``config`` ends with, and that run (its metrics are of these weights).

    Trained the first time, its weights and its Run kept in ``weights_folder(config)``;
    afterwards both are read from there. A run of ``config`` already in the cache (trained in a
    worker process, which keeps no weights) is trained once more for its weights, and left in
    the cache as it was: the kept Run is the retrained one, the same run up to floating-point
    summation order (another thread count can change the last digits of its metrics).
    A config not yet in the cache is cached too, so ``train(config)`` finds it afterwards.
    ``retrain`` trains again even where weights are kept, and replaces both the kept weights
    and the cached run, so a report retrained with ``keep_weights`` reads the run whose
    weights were kept."""
    from ftlab.training.train import train  # train imports the whole training stack

    cache = RunCache(runs_dir)
    key, _ = cache.key_for(config)
    folder = cache.folder / WEIGHTS / key
    if not retrain and has_weights(folder):
        run = Run.load(folder / RUN_FILE)
        run.label, run.from_cache = label or run.label, True
        return run, reload(config, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{key}-", dir=folder.parent) as tmp:
        run = train(config, retrain=True, label=label, runs_dir=runs_dir, progress=progress,
                    callbacks=[KeepWeights(tmp)], save=retrain or cache.load_completed(key) is None)
        if run.status != "completed" or not _saved(Path(tmp)):
            raise RuntimeError(f"{run.name} ended {run.status} without weights to keep")
        run.key = key
        (Path(tmp) / RUN_FILE).write_text(json.dumps(run.to_dict(), indent=1), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        os.rename(tmp, folder)  # whole or not at all: a reader never sees half a folder
        Path(tmp).mkdir()  # for TemporaryDirectory's own clean-up
    return run, reload(config, folder)


def reload(config: RunConfig, folder: str | Path) -> PreTrainedModel:
    """The model saved in ``folder`` for ``config``: the base with the adapter read on top (LoRA),
    or the whole saved model (full fine-tune); in eval mode."""
    folder = Path(folder)
    if config.is_lora:
        from peft import PeftModel

        base, _ = load_model(config.replace(lora_r=0, load_in_4bit=False, load_in_8bit=False, gradient_checkpointing=False))
        model = PeftModel.from_pretrained(base, folder)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True, use_kernels=False)
    return model.eval()


@torch.no_grad()
def _logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return model(input_ids=input_ids.to(next(model.parameters()).device)).logits.float().cpu()
    finally:
        model.train(was_training)


def merge_gap(peft_model: torch.nn.Module, input_ids: torch.Tensor) -> float:
    """Largest |logit| difference between the adapter model and its merged copy
    (``merge_and_unload`` on a deep copy: the model given is left as it is)."""
    merged = copy.deepcopy(peft_model).merge_and_unload()
    return float((_logits(peft_model, input_ids) - _logits(merged, input_ids)).abs().max())


def reload_gap(model: torch.nn.Module, config: RunConfig, input_ids: torch.Tensor) -> float:
    """Largest |logit| difference between ``model`` and the same model saved and read back."""
    with tempfile.TemporaryDirectory(prefix="ftlab-reload-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        again = reload(config, tmp)
        return float((_logits(model, input_ids) - _logits(again, input_ids)).abs().max())


def safetensors_bytes(folder: str | Path) -> int:
    """Bytes of the ``.safetensors`` files in a folder (the weights; configs are a few kB)."""
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))


def saved_bytes(peft_model: torch.nn.Module) -> dict[str, int]:
    """``{"adapter": bytes, "full model": bytes}``: the adapter as saved, and the merged model
    a learner would ship without peft, both as safetensors."""
    with tempfile.TemporaryDirectory(prefix="ftlab-bytes-") as tmp:
        peft_model.save_pretrained(Path(tmp) / "adapter", safe_serialization=True)
        copy.deepcopy(peft_model).merge_and_unload().save_pretrained(Path(tmp) / "full", safe_serialization=True)
        return {"adapter": safetensors_bytes(Path(tmp) / "adapter"), "full model": safetensors_bytes(Path(tmp) / "full")}


@torch.no_grad()
def generate_ways(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompt: str, system_prompt: str,
                  max_new_tokens: int = 32, wrong_eos: str = "<|endoftext|>") -> dict[str, dict[str, Any]]:
    """Greedy generations of one prompt three ways, each ``{"text", "tokens", "stopped"}`` (the
    text keeps special tokens, so a turn's end shows as ``<|im_end|>``; ``stopped``: it ended on
    its end token before ``max_new_tokens``):

    * ``"chat template"``: the prompt as in training, stopping at the tokenizer's EOS (``<|im_end|>``);
    * ``"no chat template"``: the bare question text, no system turn, no assistant header;
    * ``"wrong EOS"``: as in training, but stopping only at ``wrong_eos``, a token that ends a
      document in pretraining, not a chat turn.
    """
    templated = tokenizer.apply_chat_template(chat_messages(prompt, system_prompt), add_generation_prompt=True,
                                              tokenize=False)
    right, wrong = tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(wrong_eos)
    if wrong is None or wrong == tokenizer.unk_token_id or wrong == right:
        raise ValueError(f"wrong_eos={wrong_eos!r} must be a special token of the tokenizer other than its EOS "
                         f"{tokenizer.eos_token!r}")
    ways = {"chat template": (templated, right), "no chat template": (prompt, right), "wrong EOS": (templated, wrong)}
    was_training = model.training
    model.eval()
    out: dict[str, dict[str, Any]] = {}
    try:
        device = next(model.parameters()).device
        for name, (text, eos) in ways.items():
            enc = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(device)
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)[0, enc["input_ids"].shape[1]:]
            out[name] = {"text": tokenizer.decode(ids, skip_special_tokens=False), "tokens": len(ids),
                         "stopped": bool(len(ids)) and int(ids[-1]) == eos}
    finally:
        model.train(was_training)
    return out
