"""Run: what one experiment did, saved as JSON so it can be compared, plotted and reused.

A Run holds its config (so it is reproducible from the JSON alone), the per-step
history, the evaluations, the final metrics, the memory breakdown and a few sample
answers. Runs are stored under the runs folder as ``<config hash>.json``; writing goes
to a temp file first and is renamed into place, so a crash never leaves half a file
that a later cache lookup would trust.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import RunConfig
from .errors import CacheError
from .storage import cache_dir, folder_from_env, move_aside, write_json_atomic
from .memory import MemoryBreakdown


def runs_dir() -> Path:
    """FTLAB_RUNS, else <cache>/runs."""
    return folder_from_env("FTLAB_RUNS", lambda: cache_dir() / "runs")


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
        """The Run saved at ``path``; CacheError naming the file and what is wrong when it is
        not a readable run (half-written, edited by hand, not a run at all)."""
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

    @classmethod
    def cached(cls, config: RunConfig, folder: str | Path | None = None,
               data_sha256: str | None = None) -> "Run | None":
        """The completed Run saved for this exact config, if any, and only if it was trained
        on the same data (``data_sha256``, from :func:`ftlab.data.data_fingerprint`).

        A file there that cannot be read (half-written, edited by hand) is a cache miss: it is
        moved aside to ``<hash>.json.corrupt-<time>`` with one warning naming both paths, so
        the run trains again and the damaged file is kept for a look.
        """
        path = Path(folder or runs_dir()) / f"{config.hash()}.json"
        if not path.is_file():
            return None
        try:
            run = cls.load(path)
        except CacheError as err:
            moved = move_aside(path, "corrupt")
            warnings.warn(f"run cache: {err}. Moved it to {moved.name}; this config trains again.", stacklevel=3)
            return None
        if run.status != "completed" or run.metrics.get("data_sha256") != data_sha256:
            return None
        run.from_cache = True
        return run

    def __repr__(self) -> str:
        m = self.metrics
        parts = [f"{k}={m[k]:.4g}" for k in ("final_train_loss", "final_eval_loss", "exact_match") if isinstance(m.get(k), float)]
        return f"Run({self.label or self.config_hash}, {self.status}, steps={len(self.history)}, {', '.join(parts)})"
