"""What one optimizer step measures, owned by one object: :class:`Recorder`.

A step's time, its real tokens, the learning rate it used, its gradient norm, the weight
norm after it, the memory breakdown (on the first step) and the CUDA peaks are all filed
by the Recorder. The Trainer subclass only hands it what a callback cannot see (the batch:
:meth:`Recorder.count_batch`, :meth:`Recorder.meter_first`).

The weight norm is one fused reduction over every trainable tensor and one host sync per
step, so logging it costs nothing on a CPU and almost nothing on a GPU (a per-tensor
``float()`` would wait for the device once per tensor).
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

import torch
from torch import nn
from transformers import TrainerCallback

from ftlab.memory import ActivationMeter, MemoryBreakdown, gradient_bytes, optimizer_state_bytes, weight_bytes
from ftlab.runs.record import Run


@torch.no_grad()
def weight_norm(model: nn.Module, trainable_only: bool = True) -> float:
    """Global L2 norm ``sqrt(sum_i ||w_i||^2)`` of the model's weights (only those with
    ``requires_grad`` when ``trainable_only``); tied weights count once, since
    ``parameters()`` yields each tensor once.

    Decay pulls this norm down and the gradient pushes it up, which is why chapter 03 plots
    it: loss curves of a decay sweep often look alike while the norm curves separate. The
    per-tensor norms are taken in float32 by one ``torch._foreach_norm`` call, so bf16
    weights lose no precision in the sum, and read back to the host once.
    """
    tensors = [p.detach() for p in model.parameters() if p.requires_grad or not trainable_only]
    if not tensors:
        return 0.0
    norms = torch._foreach_norm(tensors, 2, dtype=torch.float32)
    return float(torch.linalg.vector_norm(torch.stack(norms)))


def count_tokens(batch: dict[str, torch.Tensor], pad_token_id: int) -> int:
    """Real (non-padding) tokens in a batch: the attention mask, or for packed rows the
    row minus its trailing padding."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    ids = batch["input_ids"]
    not_pad = (ids != pad_token_id).int()
    trailing = (not_pad.flip(-1).cumsum(-1) == 0).sum()
    return int(ids.numel() - trailing)


class CudaPeaks:
    """``torch.cuda.max_memory_allocated`` split by phase: the training steps' peak and the
    evaluations' peak, never mixed (an evaluation at a large eval batch would otherwise set
    the "training" peak). Does nothing without CUDA."""

    def __init__(self) -> None:
        self.enabled = torch.cuda.is_available()
        self.train = 0
        self.eval = 0

    def start(self) -> None:
        if self.enabled:
            torch.cuda.reset_peak_memory_stats()

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Around one evaluation: what came before counts as training, the evaluation as eval."""
        if not self.enabled:
            yield
            return
        self.train = max(self.train, int(torch.cuda.max_memory_allocated()))
        torch.cuda.reset_peak_memory_stats()
        try:
            yield
        finally:
            self.eval = max(self.eval, int(torch.cuda.max_memory_allocated()))
            torch.cuda.reset_peak_memory_stats()

    def finish(self) -> None:
        if self.enabled:
            self.train = max(self.train, int(torch.cuda.max_memory_allocated()))


class Recorder(TrainerCallback):
    """Fills a Run's history while the Trainer runs; with ``progress``, prints one line when
    training starts and one when it ends (``close``).

    Two plain lines, not a progress bar: a bar redraws itself (carriage returns, or a widget
    in Jupyter), and a saved notebook or log keeps only a frame of it, such as ``0%| | 0/80``
    for a run that finished. The Playground passes ``progress=False``: its status line and
    live plot show the same.
    """

    def __init__(self, run: Run, progress: bool, pad_token_id: int = 0) -> None:
        self.run = run
        self.pad_token_id = pad_token_id
        self.tokens = 0
        """Real tokens since the last optimizer step (:meth:`count_batch`)."""
        self.activation_bytes: int | None = None
        """Bytes saved for backward by the first micro-batch (:meth:`meter_first`)."""
        self.cuda = CudaPeaks()
        self._progress = progress
        self._t0 = 0.0
        self._started: float | None = None
        """When training began (None before, and after ``close`` reported the end)."""
        self._seconds: float | None = None
        """Training time, set when training reaches its end (an interrupted run never does)."""
        self._steps = 0
        self._max_steps = 0
        self._rows: dict[int, dict[str, Any]] = {}

    # --- what the trainer hands over (callbacks never see the batch) ---------------------------
    def count_batch(self, batch: dict[str, torch.Tensor]) -> None:
        self.tokens += count_tokens(batch, self.pad_token_id)

    @contextlib.contextmanager
    def meter_first(self, model: nn.Module) -> Iterator[None]:
        """Around a micro-batch's forward and backward: the first one's activation bytes."""
        if self.activation_bytes is not None:
            yield
            return
        with ActivationMeter(model) as meter:
            yield
        self.activation_bytes = meter.bytes

    # --- the Trainer's events -------------------------------------------------------------------
    def _row(self, step: int) -> dict[str, Any]:
        if step not in self._rows:
            self._rows[step] = {"step": step}
            self.run.history.append(self._rows[step])
        return self._rows[step]

    def on_train_begin(self, args, state, control, **kw):
        self._started = time.perf_counter()
        self._max_steps = state.max_steps
        self.cuda.start()
        if self._progress:
            print(f"{self.run.name}: training {state.max_steps} steps", flush=True)

    def on_train_end(self, args, state, control, **kw):
        if self._started is not None:
            self._seconds = time.perf_counter() - self._started

    def on_step_begin(self, args, state, control, optimizer=None, **kw):
        self._t0 = time.perf_counter()
        row = self._row(state.global_step + 1)
        if optimizer is not None:  # the lr this step really uses (logs report the next one)
            row["learning_rate"] = float(optimizer.param_groups[0]["lr"])

    def on_optimizer_step(self, args, state, control, optimizer=None, model=None, **kw):
        if self.run.memory is None and model is not None:
            self.run.memory = MemoryBreakdown(
                weights=weight_bytes(model), gradients=gradient_bytes(model),
                optimizer=optimizer_state_bytes(optimizer), activations=self.activation_bytes or 0)

    def on_step_end(self, args, state, control, model=None, **kw):
        dt = time.perf_counter() - self._t0
        row = self._row(state.global_step)
        row.update(step_time=dt, tokens=self.tokens, tokens_per_second=self.tokens / dt if dt else None)
        self.tokens = 0
        if model is not None:
            row["weight_norm"] = weight_norm(model, trainable_only=True)
        self._steps = state.global_step

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        if "eval_loss" in logs:
            self.run.evals.append({"step": state.global_step, "eval_loss": float(logs["eval_loss"])})
        if "loss" in logs and state.global_step > 0:
            row = self._row(state.global_step)
            row["loss"] = float(logs["loss"])
            if logs.get("grad_norm") is not None:
                row["grad_norm"] = float(logs["grad_norm"])

    def close(self) -> None:
        """Print the end line (once, and only if training began): called when the run is over
        and summarized, so the figures it shows are the run's own metrics (``Run.summary``)."""
        self.cuda.finish()
        if not self._progress or self._started is None:
            return
        if self._seconds is not None:
            done = f"{self._steps} steps in {self._seconds:.1f} s"
        else:  # training never reached its end: Ctrl-C, or an error on its way up
            why = "interrupted" if self.run.status == "interrupted" else "stopped"
            done = f"{why} after {self._steps} of {self._max_steps} steps ({time.perf_counter() - self._started:.1f} s)"
        self._started = None
        facts = self.run.summary()
        print(f"{self.run.name}: {done}" + (f" · {facts}" if facts else ""), flush=True)
