"""train(config) -> Run: a Hugging Face Trainer run with ftlab's measurements around it.

The Trainer does the training exactly as a learner would do it in their own script;
ftlab adds one callback that records what the notebooks plot (loss, the learning rate
actually used at each step, grad norm, weight norm, tokens/s, eval loss), measures the
memory breakdown exactly on the first optimizer step, scores exact match at the end, and
keeps everything it has when the run is interrupted (Ctrl-C or the notebook's stop
button), so a half-finished curve is never lost.
"""
from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import torch
import transformers
from transformers import EarlyStoppingCallback, PrinterCallback, Trainer, TrainerCallback, set_seed

from ftlab.config.profiles import profile_name
from ftlab.config.run_config import RunConfig
from ftlab.runs.cache import RunCache
from ftlab.runs.record import TRAIN_LOSS_WINDOW, Run
from ftlab.setup.data import Data, load_data
from ftlab.setup.models import check_device, count_parameters, load_model, load_tokenizer
from ftlab.training.arguments import training_arguments
from ftlab.training.calibration import answer_confidences, expected_calibration_error, reliability
from ftlab.training.divergence import flag_divergence, warn_if_diverged
from ftlab.training.evaluate import score_exact_match
from ftlab.training.heldout import score_answers
from ftlab.training.heap import freeze_heap_once
from ftlab.training.step import Recorder
from ftlab.version import __version__

__all__ = ["train", "environment"]


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


def train(config: RunConfig, *, retrain: bool = False, label: str = "", runs_dir: str | Path | None = None,
          callbacks: Iterable[TrainerCallback] = (), progress: bool = True, save: bool = True) -> Run:
    """Fine-tune as configured and return the Run (from the run cache if this config ran
    before on the same data and model: see :class:`~ftlab.runs.cache.RunCache`).

    ``retrain=True`` ignores the cache. ``callbacks`` are extra TrainerCallbacks (the
    Playground uses one to redraw its plot live). ``progress`` prints one line when training
    starts and one when it ends (see ``Recorder``); a cache hit prints nothing. An interrupt
    returns the Run so far with ``status='interrupted'`` and does not cache it.

    A run whose loss blew up (NaN/inf, or a runaway loss: see :func:`~ftlab.training.divergence.flag_divergence`) has
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
            warn_if_diverged(cached)
            return cached
    if save:
        cache.check_writable()
    check_device(config)  # before the data, which can take a while to read
    freeze_heap_once()
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
    warn_if_diverged(run)
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
