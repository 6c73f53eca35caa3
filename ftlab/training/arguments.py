"""A RunConfig translated into what Trainer takes: its ``TrainingArguments``, and the optimizer
Trainer builds from them.

Kept apart from :mod:`ftlab.training.train` because more than ``train`` needs it: the
distributed steps (:mod:`ftlab.distributed.steps`), the Trainer search example
(:mod:`ftlab.experiments.search.trainer`), the memory measurements of chapter 06 and the
benchmarks all build exactly what Trainer would build, without training.
"""
from __future__ import annotations

import tempfile
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from ftlab.config.optimizers import OPTIMIZER_TABLE
from ftlab.config.precision import probe
from ftlab.config.run_config import RunConfig

__all__ = ["training_arguments", "training_optimizer"]


def training_arguments(config: RunConfig, output_dir: str) -> TrainingArguments:
    """The TrainingArguments a learner would write for this config (same names, same values).

    Gradient (activation) checkpointing is the one knob not passed here: ``load_model``
    already switched it on for the model, non-reentrant, and Trainer would only call the
    same switch a second time. In a script of your own, ``activation_checkpointing=True``
    (``gradient_checkpointing=True`` before transformers v5) does it.
    """
    return TrainingArguments(
        output_dir=output_dir,
        max_steps=max(config.max_steps, 1),
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=16,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        lr_scheduler_kwargs=dict(config.lr_scheduler_kwargs),
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        optim=config.optim,
        optim_args=config.optim_args or None,
        adam_beta1=config.adam_beta1,
        adam_beta2=config.adam_beta2,
        adam_epsilon=config.adam_epsilon,
        max_grad_norm=config.max_grad_norm,
        neftune_noise_alpha=config.neftune_noise_alpha,
        label_smoothing_factor=config.label_smoothing_factor,
        bf16=config.bf16,
        fp16=config.fp16,
        seed=config.seed,
        data_seed=config.seed,
        eval_strategy="steps",
        eval_steps=config.eval_steps,
        logging_steps=1,
        **_early_stopping_arguments(config),
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=probe().device == "cpu",  # Trainer picks CUDA, else Apple MPS, where there is one
        log_level="error",
    )


def _early_stopping_arguments(config: RunConfig) -> dict[str, Any]:
    """What ``EarlyStoppingCallback`` needs from TrainingArguments: a checkpoint saved at
    every evaluation (weights only, safetensors, in the run's temporary folder) so that
    ``load_best_model_at_end`` can end the run with the best one; nothing is saved otherwise."""
    if not config.early_stopping_patience:
        return {"save_strategy": "no"}
    return dict(save_strategy="steps", save_steps=config.eval_steps, save_total_limit=1, save_only_model=True,
                load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False)


def training_optimizer(config: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer Trainer builds for ``config.optim`` (class and arguments asked of Trainer
    itself), over the trainable parameters in one group: Trainer splits them into decay and
    no-decay groups, which changes no state tensor.

    For measuring a training step outside Trainer (the memory predictor's tests, chapter 06,
    ``benchmarks/memory_predictor.py``): a hand-built optimizer could differ from Trainer's
    in exactly the state it keeps, which is what those measurements are about.
    """
    with tempfile.TemporaryDirectory() as out:
        args = training_arguments(config, out)
    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    optimizer = cls([p for p in model.parameters() if p.requires_grad], **kwargs)
    if OPTIMIZER_TABLE[config.optim].bitsandbytes and kwargs.get("optim_bits") == 8:
        # as Trainer.create_optimizer does: embeddings keep 32-bit state under 8-bit optimizers
        import bitsandbytes  # only here: importing it costs seconds and most runs never need it

        manager = bitsandbytes.optim.GlobalOptimManager.get_instance()
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding):
                manager.register_module_override(module, "weight", {"optim_bits": 32})
    return optimizer
