"""Run: the record of one experiment, with its metrics declared once.

A Run holds its config (so it is reproducible from the JSON alone), the per-step history,
the evaluations, the final metrics, the memory breakdown and a few sample answers. Its
metrics are the names in :data:`METRICS`, each with what it means, so a table, a progress
line and a chapter's prose can never mean two things by "final train loss". Where runs are
stored, and how they are found again, is :class:`ftlab.runs.cache.RunCache`'s alone.

A saved run carries :data:`SCHEMA_VERSION`. A reader understands every version up to its
own (older files are upgraded as they are read); a file from a newer version raises
:class:`UnknownSchema`, which the cache turns into one skipped line, never a lost file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ftlab.config.run_config import RunConfig
from ftlab.errors import CacheError
from ftlab.memory import MemoryBreakdown

SCHEMA_VERSION = 2
"""What a run file written by this ftlab looks like. 1: files before the schema was declared
(no ``schema`` entry, the data hash among the metrics). 2: ``schema``, ``key``, declared metrics."""

TRAIN_LOSS_WINDOW = 5
"""``train_loss`` averages the last steps' losses over this many steps (fewer in short runs:
a fifth of the steps, at least 1), so one noisy batch does not decide a comparison."""

METRICS: dict[str, str] = {
    "steps": "optimizer steps the run took (fewer than max_steps when early stopping or a pruner ended it)",
    "last_step_train_loss": "training loss of the last step alone (what the progress line's last step shows)",
    "train_loss": "mean training loss over the last train_loss_window steps",
    "train_loss_window": "how many final steps train_loss averages",
    "initial_eval_loss": "validation loss of the starting weights (step 0)",
    "best_eval_loss": "lowest validation loss of any evaluation",
    "best_eval_step": "the step of best_eval_loss",
    "final_eval_loss": "validation loss of the weights the run ends with (see weights)",
    "weights": "which weights the run ends with, and so what final_eval_loss and exact_match describe: "
               "'last step', or 'best step N (restored by early stopping)'",
    "stopped_early": "True when early stopping ended the run before max_steps",
    "exact_match": "fraction of held-out questions answered exactly, by the weights in 'weights'",
    "seconds_per_step": "mean wall time of a step, the first (warm-up, metering) excluded",
    "tokens_per_second": "real (non-padding) tokens trained per second, the first step excluded",
    "train_runtime": "seconds from the first to the last training step",
    "parameters": "parameters of the model",
    "trainable_parameters": "parameters the optimizer updates",
    "data_sha256": "hash of the data files' bytes (part of the run's cache key)",
    "data_train_examples": "training examples after tokenization",
    "data_train_rows": "training rows (fewer than examples when packing)",
    "data_dropped_too_long": "examples dropped because their answer did not fit max_seq_length",
    "data_mean_tokens": "mean tokens per training example",
    "data_max_tokens": "tokens of the longest training example",
    "data_supervised_tokens": "answer tokens the loss is computed on, over the training split",
    "cuda_peak_eval": "bytes: torch.cuda.max_memory_allocated over the evaluations, at the eval batch size (GPU; "
                      "the training steps' peak is memory.cuda_peak)",
    "diverged": "'non-finite' or 'runaway' when the loss blew up (absent otherwise)",
    "divergence_advice": "what to change when diverged",
    "pruned_step": "the step at which a search's pruner stopped the run",
    "answer_ece": "expected calibration error of the validation answer tokens, by the weights in 'weights' "
                  "(ftlab.training.calibration: 10 equal-width confidence bins)",
    "eval_token_accuracy": "fraction of validation answer tokens whose most likely next token is the label "
                           "(teacher forcing), by the weights in 'weights'",
    "test_loss": "mean cross-entropy per answer token over the first test_size test examples, by the weights in "
                 "'weights' (nats per token; the split nothing is selected on)",
    "test_token_accuracy": "fraction of those test answer tokens whose most likely next token is the label",
    "test_tokens": "answer tokens test_loss and test_token_accuracy average over",
    "reliability": "per confidence bin of the validation answer tokens: low, high, tokens, mean confidence, accuracy",
}
"""Every metric a Run may have, and what it means."""


class UnknownSchema(Exception):
    """A run file that a newer ftlab wrote (a later schema version, or config fields this
    version does not have): not damaged, only not readable here."""


def check_metrics(metrics: dict[str, Any]) -> None:
    """Refuse a metric name that is not declared in :data:`METRICS` (a typo or an undeclared
    meaning would otherwise be saved for good)."""
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise KeyError(f"undeclared run metrics {unknown}: declare them in ftlab.runs.record.METRICS")


def _upgrade(d: dict[str, Any]) -> dict[str, Any]:
    """A run file of an older schema, as this schema reads it."""
    version = d.get("schema", 1)
    if version == 1:
        m = dict(d.get("metrics", {}))
        if "final_train_loss" in m:
            m["train_loss"] = m.pop("final_train_loss")
        for old, new in (("stopped_step", "steps"), ("best_step", "best_eval_step")):
            if old in m:
                m[new] = m.pop(old)
        d = {**d, "metrics": {k: v for k, v in m.items() if k in METRICS}, "schema": SCHEMA_VERSION}
    return d


@dataclass
class Run:
    config: RunConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    """One dict per optimizer step: step, loss, learning_rate, grad_norm, weight_norm, step_time, tokens, tokens_per_second."""
    evals: list[dict[str, Any]] = field(default_factory=list)
    """One dict per evaluation: step, eval_loss."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Final metrics, named and meant as in :data:`METRICS`."""
    memory: MemoryBreakdown | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    """Held-out prompts with the reference, the model's answer and whether it matched."""
    status: str = "completed"
    """'completed', 'interrupted' (history kept up to the interrupt) or 'pruned'."""
    env: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    key: str = ""
    """The run's cache key (see :func:`ftlab.runs.cache.run_key`); empty until it is saved."""
    from_cache: bool = field(default=False, compare=False)
    """True when the cache loaded it instead of a training run making it: how a caller
    (the Playground's table, its status line) tells "instant, from the cache" from "trained".
    Not saved: it says where this object came from, not what the run did."""

    @property
    def config_hash(self) -> str:
        return self.config.hash()

    @property
    def name(self) -> str:
        """How lines and tables name the run: its label, else its config hash."""
        return self.label or f"run {self.config_hash}"

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one history or eval key, skipping steps where it is missing."""
        rows = self.evals if key.startswith("eval_") else self.history
        pairs = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def summary(self) -> str:
        """The run's final metrics in one line, the same names and figures wherever a run is
        summed up (its end-of-training line, ``ftlab train``, a search's trial line)."""
        m = self.metrics
        facts = []
        if m.get("train_loss") is not None:
            facts.append(f"train loss {m['train_loss']:.3f} (mean of last {m.get('train_loss_window', 1)} steps)")
        if m.get("final_eval_loss") is not None:
            text = f"eval loss {m['initial_eval_loss']:.3f} -> {m['final_eval_loss']:.3f}"
            if m.get("best_eval_loss") is not None and m["best_eval_loss"] < m["final_eval_loss"]:
                text += f" (best {m['best_eval_loss']:.3f} at step {m.get('best_eval_step')})"
            facts.append(text)
        if m.get("weights", "last step") != "last step":
            facts.append(f"weights: {m['weights']}")
        if m.get("exact_match") is not None:
            facts.append(f"exact match {m['exact_match']:.3g}")
        if m.get("seconds_per_step") is not None:
            facts.append(f"{m['seconds_per_step']:.3g} s/step")
        return " · ".join(facts)

    def to_dict(self) -> dict[str, Any]:
        check_metrics(self.metrics)
        return {"schema": SCHEMA_VERSION, "key": self.key, "config": self.config.to_dict(),
                "config_hash": self.config_hash, "history": self.history, "evals": self.evals,
                "metrics": self.metrics, "memory": self.memory.to_dict() if self.memory else None,
                "samples": self.samples, "status": self.status, "env": self.env, "label": self.label}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Run":
        """The run of a saved dict; :class:`UnknownSchema` when a newer ftlab wrote it."""
        version = d.get("schema", 1)
        wrote = d.get("env", {}).get("ftlab", "unknown")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise UnknownSchema(f"written by ftlab {wrote} (run schema {version}); this ftlab reads schema "
                                f"{SCHEMA_VERSION} and older: update ftlab to use it (the file is left as it is)")
        d = _upgrade(d)
        unknown = sorted(set(d["config"]) - {f.name for f in fields(RunConfig)}) if isinstance(d["config"], dict) else []
        if unknown:
            raise UnknownSchema(f"written by ftlab {wrote} with config fields this ftlab lacks ({', '.join(unknown)}); "
                                f"update ftlab to use it (the file is left as it is)")
        return cls(config=RunConfig.from_dict(d["config"]), history=d["history"], evals=d["evals"], metrics=d["metrics"],
                   memory=MemoryBreakdown.from_dict(d["memory"]) if d.get("memory") else None,
                   samples=d["samples"], status=d["status"], env=d.get("env", {}), label=d.get("label", ""),
                   key=d.get("key", ""))

    @classmethod
    def load(cls, path: str | Path) -> "Run":
        """The Run saved at ``path``: CacheError naming the file and what is wrong when it is
        not a run at all; :class:`UnknownSchema` when a newer ftlab wrote it."""
        path = Path(path)
        fix = f"remove it (ftlab runs remove {path.stem}) or move it out of the way; the run trains again when asked"
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as err:
            raise CacheError(f"{path} is not a readable run: not valid JSON at line {err.lineno}, column {err.colno} "
                             f"({err.msg}; a half-written or hand-edited file); {fix}") from None
        except (UnicodeDecodeError, KeyError, TypeError, AttributeError, ValueError) as err:
            what = f"no '{err.args[0]}' entry" if isinstance(err, KeyError) else str(err).splitlines()[0][:200]
            raise CacheError(f"{path} is not a readable run ({type(err).__name__}: {what}); {fix}") from None

    def __repr__(self) -> str:
        m = self.metrics
        parts = [f"{k}={m[k]:.4g}" for k in ("train_loss", "final_eval_loss", "exact_match") if isinstance(m.get(k), float)]
        return f"Run({self.label or self.config_hash}, {self.status}, steps={len(self.history)}, {', '.join(parts)})"
