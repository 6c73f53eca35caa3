"""``ftlab runs``: browse the run cache from a terminal: list, show, remove, export.

A run is named by its cache key, a unique prefix of one, or the path of its file
(:meth:`RunCache.find <ftlab.runs.cache.RunCache.find>`); ``export`` writes its per-step history as CSV, JSON or TensorBoard events.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from ftlab.cli.common import CliError, cell, run_steps, size, table
from ftlab.errors import CacheError
from ftlab.runs.cache import RunCache
from ftlab.runs.record import Run


def find_run(ident: str) -> Path:
    """The saved run a command names: a file path, a run key, or a unique prefix of one."""
    try:
        return RunCache().find(ident)
    except CacheError as err:
        raise CliError(str(err)) from None


def cmd_runs_list(args: argparse.Namespace) -> int:
    cache = RunCache()
    listing = cache.listing()
    rows = []
    for path, run in listing.runs:
        status = run.status + (f" ({run.metrics['diverged']})" if run.metrics.get("diverged") else "")
        rows.append([path.stem, run.label, run.config.model, status, run_steps(run), run.metrics.get("final_eval_loss")])
    if rows:
        print(table(rows, ["run", "label", "model", "status", "steps", "final eval loss"]))
    for line in listing.skipped:
        print(f"skipped {line}")
    print(f"{len(rows)} runs in {cache.folder}" + ("" if rows or listing.skipped else
                                                    ": train one (ftlab train CONFIG.json, or a notebook)"))
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    path = find_run(args.id)
    run = Run.load(path)
    cfg = run.config
    print(f"run {path.stem}{f' ({run.label})' if run.label else ''}: {run.status}, {run_steps(run)} steps  [{path}]")
    print(f"model {cfg.model}, {cfg.method}, batch {cfg.per_device_train_batch_size} x {cfg.max_seq_length} tokens, "
          f"learning rate {cfg.learning_rate:g} ({cfg.lr_scheduler_type}), seed {cfg.seed}")
    if run.metrics:
        print("metrics:")
        for key, value in run.metrics.items():
            shown = f"{len(value)} rows (in: ftlab runs export --format json)" if isinstance(value, list) else cell(value)
            print(f"  {key:28s}{shown}")
    if run.evals:
        print("eval loss by step: " + ", ".join(f"{e['step']}: {e['eval_loss']:.4g}" for e in run.evals))
    if run.memory:
        parts = ("weights", "gradients", "optimizer", "activations")
        print("memory: " + ", ".join(f"{k} {size(getattr(run.memory, k))}" for k in parts)
              + f", total {size(run.memory.total)}")
    print("config (ftlab train reads it back):")
    print(cfg.to_json())
    return 0


def cmd_runs_remove(args: argparse.Namespace) -> int:
    path = find_run(args.id)
    path.unlink()  # a path named outside the cache folder is removed too: the user named it
    print(f"removed {path}")
    return 0


HISTORY_COLUMNS = ("step", "loss", "learning_rate", "grad_norm", "weight_norm", "tokens", "tokens_per_second",
                   "step_time", "eval_loss")

TENSORBOARD_SCALARS = {"loss": "train/loss", "learning_rate": "train/learning_rate", "grad_norm": "train/grad_norm",
                       "weight_norm": "train/weight_norm", "tokens_per_second": "train/tokens_per_second"}
"""History key -> TensorBoard tag, named as a Trainer run with ``report_to="tensorboard"`` names them."""


def history_rows(run: Run) -> list[dict[str, Any]]:
    """One row per step (step 0 too, for its eval loss), train and eval values side by side."""
    rows: dict[int, dict[str, Any]] = {r["step"]: dict(r) for r in run.history}
    for e in run.evals:
        rows.setdefault(e["step"], {"step": e["step"]})["eval_loss"] = e["eval_loss"]
    return [rows[s] for s in sorted(rows)]


def write_tensorboard(run: Run, folder: Path) -> Path:
    """Event files that ``tensorboard --logdir folder`` shows: train/loss, train/learning_rate,
    train/grad_norm (and weight norm, tokens/s) and eval/loss by step, plus the config as text."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise CliError(f"the TensorBoard export needs the tensorboard package ({err}); pip install tensorboard") from None
    writer = SummaryWriter(log_dir=str(folder))
    try:
        for row in run.history:
            for key, tag in TENSORBOARD_SCALARS.items():
                if row.get(key) is not None:
                    writer.add_scalar(tag, row[key], row["step"])
        for e in run.evals:
            writer.add_scalar("eval/loss", e["eval_loss"], e["step"])
        writer.add_text("config", "```\n" + run.config.to_json() + "\n```")
    finally:
        writer.close()
    return folder


def cmd_runs_export(args: argparse.Namespace) -> int:
    path = find_run(args.id)
    run = Run.load(path)
    default = {"csv": f"{path.stem}.csv", "json": f"{path.stem}.json", "tensorboard": f"tensorboard/{path.stem}"}
    out = args.out or default[args.format]
    if args.format == "tensorboard":
        folder = write_tensorboard(run, Path(out))
        print(f"wrote TensorBoard events to {folder}; view them with: tensorboard --logdir {folder.parent}")
        return 0
    if args.format == "json":
        text = json.dumps(run.to_dict(), indent=1) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(history_rows(run))
        text = buffer.getvalue()
    if out == "-":
        sys.stdout.write(text)
    else:
        Path(out).write_text(text, encoding="utf-8")
        print(f"wrote {out} ({args.format}, run {path.stem})")
    return 0
