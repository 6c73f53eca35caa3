"""Run: what one experiment did, saved as JSON so it can be compared, plotted and reused.

A Run holds its config (so it is reproducible from the JSON alone), the per-step
history, the evaluations, the final metrics, the memory breakdown and a few sample
answers. Runs are stored under the runs folder as ``<config hash>.json``; writing goes
to a temp file first and is renamed into place, so a crash never leaves half a file
that a later cache lookup would trust.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import RunConfig
from .storage import cache_dir, write_json_atomic
from .memory import MemoryBreakdown


def runs_dir() -> Path:
    """FTLAB_RUNS, else <cache>/runs."""
    path = Path(os.environ.get("FTLAB_RUNS") or cache_dir() / "runs").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Run:
    config: RunConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    """One dict per optimizer step: step, loss, learning_rate, grad_norm, weight_norm, step_time, tokens, tokens_per_second."""
    evals: list[dict[str, Any]] = field(default_factory=list)
    """One dict per evaluation: step, eval_loss."""
    metrics: dict[str, Any] = field(default_factory=dict)
    memory: MemoryBreakdown | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    """Held-out prompts with the reference, the model's answer and whether it matched."""
    status: str = "completed"
    """'completed' or 'interrupted' (history kept up to the interrupt)."""
    env: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    from_cache: bool = field(default=False, compare=False)
    """True when :meth:`cached` loaded it instead of a training run making it: how a caller
    (the Playground's table, its status line) tells "instant, from the cache" from "trained".
    Not saved: it says where this object came from, not what the run did."""

    @property
    def config_hash(self) -> str:
        return self.config.hash()

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one history or eval key, skipping steps where it is missing."""
        rows = self.evals if key.startswith("eval_") else self.history
        pairs = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "config_hash": self.config_hash, "history": self.history,
                "evals": self.evals, "metrics": self.metrics,
                "memory": self.memory.to_dict() if self.memory else None, "samples": self.samples,
                "status": self.status, "env": self.env, "label": self.label}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Run":
        return cls(config=RunConfig.from_dict(d["config"]), history=d["history"], evals=d["evals"],
                   metrics=d["metrics"], memory=MemoryBreakdown.from_dict(d["memory"]) if d.get("memory") else None,
                   samples=d["samples"], status=d["status"], env=d.get("env", {}), label=d.get("label", ""))

    def save(self, path: str | Path | None = None) -> Path:
        """Write atomically (temp file + rename); default path: runs folder / <hash>.json."""
        return write_json_atomic(Path(path) if path else runs_dir() / f"{self.config_hash}.json", self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Run":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    @classmethod
    def cached(cls, config: RunConfig, folder: str | Path | None = None,
               data_sha256: str | None = None) -> "Run | None":
        """The completed Run saved for this exact config, if any, and only if it was trained
        on the same data (``data_sha256``, from :func:`ftlab.data.data_fingerprint`)."""
        path = Path(folder or runs_dir()) / f"{config.hash()}.json"
        if not path.is_file():
            return None
        run = cls.load(path)
        if run.status != "completed" or run.metrics.get("data_sha256") != data_sha256:
            return None
        run.from_cache = True
        return run

    def __repr__(self) -> str:
        m = self.metrics
        parts = [f"{k}={m[k]:.4g}" for k in ("final_train_loss", "final_eval_loss", "exact_match") if isinstance(m.get(k), float)]
        return f"Run({self.label or self.config_hash}, {self.status}, steps={len(self.history)}, {', '.join(parts)})"
