"""train(config) -> Run: a Hugging Face Trainer run with ftlab's measurements around it.

The Trainer does the training exactly as a learner would do it in their own script;
ftlab adds one callback that records what the notebooks plot (loss, the learning rate
actually used at each step, grad norm, weight norm, tokens/s, eval loss), measures the
memory breakdown exactly on the first optimizer step, scores exact match at the end, and
keeps everything it has when the run is interrupted (Ctrl-C or the notebook's stop
button), so a half-finished curve is never lost.
"""
from __future__ import annotations

import gc
import math
import platform
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterable

import bitsandbytes
import torch
import transformers
from transformers import EarlyStoppingCallback, PrinterCallback, Trainer, TrainerCallback, TrainingArguments, set_seed

from ftlab.config.precision import probe
from ftlab.config.profiles import profile_name
from ftlab.config.run_config import RunConfig
from ftlab.runs.cache import RunCache
from ftlab.runs.record import TRAIN_LOSS_WINDOW, Run
from ftlab.setup.data import Data, load_data
from ftlab.setup.models import check_device, count_parameters, load_model, load_tokenizer
from ftlab.training.calibration import answer_confidences, expected_calibration_error, reliability
from ftlab.training.evaluate import score_exact_match
from ftlab.training.heldout import score_answers
from ftlab.training.step import Recorder
from ftlab.version import __version__


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
    if "bitsandbytes" in str(cls) and kwargs.get("optim_bits") == 8:
        # as Trainer.create_optimizer does: embeddings keep 32-bit state under 8-bit optimizers
        manager = bitsandbytes.optim.GlobalOptimManager.get_instance()
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding):
                manager.register_module_override(module, "weight", {"optim_bits": 32})
    return optimizer


class _FtlabTrainer(Trainer):
    """Trainer that hands the run's Recorder what a callback never sees: each micro-batch
    (its real tokens, and the first one's activation bytes) and each evaluation (so the CUDA
    peaks of training and evaluation stay apart). Eval loss is always plain cross-entropy,
    so runs with and without label smoothing are compared on the same scale."""

    def __init__(self, *args: Any, recorder: Recorder, **kwargs: Any) -> None:
        super().__init__(*args, callbacks=[recorder, *kwargs.pop("callbacks", [])], **kwargs)
        self.ftlab_recorder = recorder

    def training_step(self, model, inputs, num_items_in_batch=None):  # type: ignore[override]
        self.ftlab_recorder.count_batch(inputs)
        with self.ftlab_recorder.meter_first(model):
            return super().training_step(model, inputs, num_items_in_batch)

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        with self.ftlab_recorder.cuda.evaluating():
            return super().evaluate(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
        if model.training or self.label_smoother is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        smoother, self.label_smoother = self.label_smoother, None
        try:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            self.label_smoother = smoother


def environment() -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {"ftlab": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "device": torch.cuda.get_device_name(0) if cuda else "cpu",
            "cpu_threads": torch.get_num_threads(), "profile": profile_name()}


_heap_frozen = False


def _freeze_heap_once() -> None:
    """Collect, then move every object alive now out of the garbage collector's reach, once per process.

    Why: Trainer starts each run with ``gc.collect()`` (accelerate's ``free_memory``), which scans every
    object of the process, about 600,000 once torch, transformers and Optuna are imported: 0.24 s a run on
    two cores, 7% of a chapter 08 search trial. Frozen objects are never scanned again, so each later
    collection sees only what was made since. Memory freed by reference counting (a run's model and
    tensors) is freed as before; only a reference cycle already alive at the first run and dropped later
    stays in memory.
    """
    global _heap_frozen
    if not _heap_frozen:
        gc.collect()
        gc.freeze()
        _heap_frozen = True


def train(config: RunConfig, *, retrain: bool = False, label: str = "", runs_dir: str | Path | None = None,
          callbacks: Iterable[TrainerCallback] = (), progress: bool = True, save: bool = True) -> Run:
    """Fine-tune as configured and return the Run (from the run cache if this config ran
    before on the same data and model: see :class:`~ftlab.runs.cache.RunCache`).

    ``retrain=True`` ignores the cache. ``callbacks`` are extra TrainerCallbacks (the
    Playground uses one to redraw its plot live). ``progress`` prints one line when training
    starts and one when it ends (see ``Recorder``); a cache hit prints nothing. An interrupt
    returns the Run so far with ``status='interrupted'`` and does not cache it.

    A run whose loss blew up (NaN/inf, or a runaway loss: see :func:`flag_divergence`) has
    ``metrics["diverged"]`` and ``metrics["divergence_advice"]`` and raises a UserWarning
    with the advice, also when it comes from the cache. Every bad input (config, data,
    model folder, hub id without network, a runs folder that cannot be written) raises an
    ``FtlabError`` before any training starts; a save that fails after training anyway
    is a warning, and the trained run is still returned.
    """
    cache = RunCache(runs_dir)
    key, data_sha256 = cache.key_for(config)
    if not retrain:
        cached = cache.load_completed(key)
        if cached is not None:
            cached.label = label or cached.label
            flag_divergence(cached)  # runs saved before runaway losses were flagged get the flag too
            _warn_if_diverged(cached)
            return cached
    if save:
        cache.check_writable()
    check_device(config)  # before the data, which can take a while to read
    _freeze_heap_once()
    set_seed(config.seed)
    tokenizer = load_tokenizer(config)
    data = load_data(config, tokenizer)  # data errors surface before the model is loaded
    model, tokenizer = load_model(config, tokenizer)
    run = Run(config=config, label=label, env=environment(), key=key)
    total, trainable = count_parameters(model)
    run.metrics.update(parameters=total, trainable_parameters=trainable, data_sha256=data_sha256,
                       **{f"data_{k}": v for k, v in data.info.items()})
    recorder = Recorder(run, progress, tokenizer.pad_token_id)
    callbacks = list(callbacks)
    if config.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    with tempfile.TemporaryDirectory(prefix="ftlab-") as out:
        trainer = _FtlabTrainer(model=model, args=training_arguments(config, out), train_dataset=data.train,
                                eval_dataset=data.validation, data_collator=data.collator,
                                recorder=recorder, callbacks=callbacks)
        trainer.remove_callback(PrinterCallback)
        try:
            trainer.evaluate()  # eval loss at step 0: where every curve starts
            started = time.perf_counter()
            if config.max_steps > 0:
                trainer.train()
                if run.evals[-1]["step"] != trainer.state.global_step:
                    trainer.evaluate()  # the curve always ends with the final model
            run.metrics["train_runtime"] = time.perf_counter() - started
            _summarize(run, trainer.state.global_step, trainer.state.best_global_step)
            if recorder.cuda.enabled and run.memory is not None:
                recorder.cuda.finish()
                run.memory.cuda_peak = recorder.cuda.train
                run.metrics["cuda_peak_eval"] = recorder.cuda.eval
            _finish(run, trainer.model, tokenizer, data)
        except KeyboardInterrupt:
            run.status = "interrupted"
            _summarize(run, trainer.state.global_step, None)
        finally:
            recorder.close()
    if save and run.status == "completed":
        cache.save_or_warn(run)
    _warn_if_diverged(run)
    return run


def _finish(run: Run, model: torch.nn.Module, tokenizer: Any, data: Data) -> None:
    """Exact match and calibration of the weights the run ends with (the restored best under
    early stopping)."""
    cfg = run.config
    if len(data.validation):
        confidence, correct = answer_confidences(model, data.validation, data.collator)
        rows = reliability(confidence, correct)
        run.metrics.update(answer_ece=expected_calibration_error(rows), reliability=rows,
                           eval_token_accuracy=float(correct.float().mean()))
    if data.test_rows is not None and len(data.test_rows):
        test = score_answers(model, data.test_rows, data.collator)
        run.metrics.update(test_loss=test.loss, test_token_accuracy=test.token_accuracy, test_tokens=test.tokens)
    if cfg.exact_match_size:
        score, samples = score_exact_match(model, tokenizer, data.test, cfg.system_prompt, cfg.max_new_tokens)
        run.metrics["exact_match"] = score
        run.samples = samples


def _summarize(run: Run, steps: int, best_step: int | None) -> None:
    """The run's final metrics, as declared in :data:`ftlab.runs.record.METRICS`.

    Under early stopping Trainer ends with the best evaluation's weights restored
    (``load_best_model_at_end``), so ``final_eval_loss`` is that evaluation's loss and
    ``weights`` says so; the later evaluations of weights that were discarded stay in the
    curve, where they show why the run stopped.
    """
    m = run.metrics
    m["steps"] = steps
    losses = [r["loss"] for r in run.history if "loss" in r]
    if losses:
        window = max(1, min(TRAIN_LOSS_WINDOW, len(losses) // 5))
        m.update(last_step_train_loss=losses[-1], train_loss=sum(losses[-window:]) / window, train_loss_window=window)
    if run.evals:
        best = min(run.evals, key=lambda e: e["eval_loss"])
        m.update(initial_eval_loss=run.evals[0]["eval_loss"], final_eval_loss=run.evals[-1]["eval_loss"],
                 best_eval_loss=best["eval_loss"], best_eval_step=best["step"], weights="last step")
        cfg = run.config
        if cfg.early_stopping_patience and best_step is not None:
            m["stopped_early"] = steps < cfg.max_steps
            if best_step != steps:
                kept = next(e for e in run.evals if e["step"] == best_step)
                m.update(final_eval_loss=kept["eval_loss"], weights=f"best step {best_step} (restored by early stopping)")
    timed = [r for r in run.history[1:] if r.get("step_time")]  # step 1 includes warm-up and metering
    if timed:
        m["seconds_per_step"] = sum(r["step_time"] for r in timed) / len(timed)
        m["tokens_per_second"] = sum(r["tokens"] for r in timed) / sum(r["step_time"] for r in timed)
    flag_divergence(run)


RUNAWAY_EVAL_FACTOR = 1.5
"""A run whose final eval loss ends above this multiple of its step-0 eval loss, while its
train loss did not fall either, ran away."""
RUNAWAY_TRAIN_FACTOR = 2.0
"""A run whose train loss at the end averages above this multiple of its first steps' ran away."""


def flag_divergence(run: Run) -> None:
    """Set ``metrics["diverged"]`` ("non-finite" or "runaway") and ``metrics["divergence_advice"]``
    when the loss blew up; remove both otherwise (absent means it did not).

    * non-finite: a train or eval loss became NaN or infinite;
    * runaway: the train loss at the end averages more than 2x its first steps, or the final
      eval loss is more than 1.5x the step-0 one while the train loss did not fall either
      (full fine-tuning at learning rate 0.9: eval loss 5.6 -> 28.5). A train loss that
      falls while the eval loss rises is overfitting, not divergence, and is not flagged.

    The head and tail of the train loss are means over the same window as ``train_loss``
    (1 to 5 steps), so one noisy step does not decide.
    """
    m = run.metrics
    m.pop("diverged", None)
    m.pop("divergence_advice", None)
    losses = [float(r["loss"]) for r in run.history if r.get("loss") is not None]
    evals = [float(e["eval_loss"]) for e in run.evals if e.get("eval_loss") is not None]
    k = max(1, min(TRAIN_LOSS_WINDOW, len(losses) // 5))
    head = sum(losses[:k]) / k if losses else math.nan
    tail = sum(losses[-k:]) / k if losses else math.nan
    if any(not math.isfinite(x) for x in losses + evals):
        kind, what = "non-finite", "the loss became NaN or infinite"
    elif len(losses) >= 2 and tail > RUNAWAY_TRAIN_FACTOR * head:
        kind, what = "runaway", f"the train loss rose from {head:.3g} to {tail:.3g}"
    elif len(evals) >= 2 and evals[-1] > RUNAWAY_EVAL_FACTOR * evals[0] and not (tail < head):
        kind, what = "runaway", f"the eval loss rose from {evals[0]:.3g} at step 0 to {evals[-1]:.3g}"
    else:
        return
    cfg = run.config
    fixes = [f"lower the learning rate (this run: {cfg.learning_rate:g}; try 3-10x lower)"]
    if not cfg.warmup_steps:
        fixes.append("add warmup (warmup_steps=0.1)")
    if not cfg.max_grad_norm or cfg.max_grad_norm > 1:
        fixes.append("clip gradients (max_grad_norm=1.0)")
    m["diverged"] = kind
    m["divergence_advice"] = f"{what}: {', '.join(fixes[:-1]) + ' or ' + fixes[-1] if len(fixes) > 1 else fixes[0]}"


def _warn_if_diverged(run: Run) -> None:
    if run.metrics.get("diverged"):
        warnings.warn(f"{run.name} diverged ({run.metrics['diverged']}): {run.metrics['divergence_advice']}",
                      UserWarning, stacklevel=3)
