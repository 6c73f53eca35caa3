"""``ftlab train CONFIG.json``: one run from a config file, printing its final metrics."""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from ftlab.cli.common import CliError, run_steps
from ftlab.config.run_config import RunConfig
from ftlab.errors import ConfigFileError
from ftlab.runs.cache import RunCache
from ftlab.training.train import train

__all__ = ["read_config", "cmd_train"]


def read_config(path: Path) -> RunConfig:
    """A RunConfig from a JSON file: ``RunConfig.to_json()`` output, or a saved run (its config)."""
    if not path.is_file():
        raise CliError(f"{path}: no such config file; write one with RunConfig(...).to_json(), or copy the config "
                       f"that `ftlab runs show ID` prints")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigFileError(f"{path}: not UTF-8 text; save the config as UTF-8 JSON") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return RunConfig.from_json(text, source=str(path))  # raises ConfigFileError naming line and column
    if isinstance(data, dict) and "config" in data and "history" in data:
        print(f"{path} is a saved run: training its config again", flush=True)
        data = data["config"]
    return RunConfig.from_dict(data)


def cmd_train(args: argparse.Namespace) -> int:
    config = read_config(Path(args.config))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".* diverged \(")  # said below, as one plain line
        run = train(config, retrain=args.retrain, label=args.label or "", runs_dir=args.runs)
    source = "from the run cache" if run.from_cache else run.status
    print(f"run {run.key}{f' ({run.label})' if run.label else ''}: {source}, {run_steps(run)} steps · {run.summary()}")
    if run.metrics.get("diverged"):
        print(f"diverged ({run.metrics['diverged']}): {run.metrics['divergence_advice']}")
    if run.status == "completed":
        where = RunCache(args.runs).path(run.key)
        print(f"saved: {where}" if where.is_file() else "not saved")
    return 0 if run.status == "completed" else 130
