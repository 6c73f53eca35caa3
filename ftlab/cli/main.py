"""The ``ftlab`` command: prepare a workshop room, browse the run cache, predict memory, train.

Everything here is one plain function call of the package, reachable without a notebook::

    ftlab prepare [--profile cpu|gpu|ci] [--chapters 01 02 ...]   # before a workshop
    ftlab runs list | show ID | remove ID | export ID --format csv|json|tensorboard
    ftlab estimate --model 7B --method qlora --batch 1 --seq 2048 [--checkpointing] [--optim NAME] [--weights float32 [--bf16]]
    ftlab estimate ... --devices 8 --strategy fsdp      # one GPU's share of a data-parallel run
    ftlab fits [--batch 1 --seq 2048 --gpus 16 24 48 80] [--weights float32] [--loss chunked] [--devices 8 --strategy fsdp | --devices-needed]
    ftlab train CONFIG.json
    ftlab doctor                  # versions, device, precision, what fits, front end: paste into a bug report
    ftlab hosted notebooks/*.ipynb  # authoring: write the Colab/Kaggle first cell into the chapters

This module parses the arguments and dispatches; ``prepare`` lives in :mod:`ftlab.cli.prepare`
(how it executes the chapters and resumes), ``runs`` in :mod:`ftlab.cli.runs`, what they
share in :mod:`ftlab.cli.common`, ``doctor`` in :mod:`ftlab.cli.doctor`, ``hosted`` in :mod:`ftlab.cli.hosted`; ``estimate``, ``fits`` and ``train`` are here.

Errors ftlab raises on purpose (``FtlabError``) are printed as one line and exit with 1.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

from ftlab.errors import FtlabError
from ftlab.version import __version__

__all__ = ["build_parser", "main"]


def _command(target: str) -> Callable[[argparse.Namespace], int]:
    """The handler ``module:function``, imported when the command runs, not when it is parsed:
    ``ftlab --help`` and ``ftlab hosted`` then pay for no torch or transformers."""
    module, _, name = target.partition(":")

    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), name)(args)

    run.__name__ = name
    return run


# --- the parser -----------------------------------------------------------------------------------


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``ftlab`` parser: every command with all of its arguments, or, given ``command``,
    only that one's (the others keep their name and help, all ``ftlab --help`` shows). The
    arguments of ``prepare``, ``estimate`` and ``fits`` list choices read from the package
    (profiles, sizes, presets, optimizers, strategies), which costs the imports of torch and
    transformers; a command's handler is imported only when it runs (:func:`_command`)."""

    def wanted(name: str) -> bool:
        return command is None or command == name

    parser = argparse.ArgumentParser(prog="ftlab", description="ftlab: the fine-tuning workbook from a terminal.")
    parser.add_argument("--version", action="version", version=f"ftlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="before a workshop: build the models and train every chapter's runs",
                       description="Convert SmolLM2-135M, build the pretrained tiny base, and execute each chapter "
                                   "notebook headless (papermill) so every run it makes lands in the run cache "
                                   "(FTLAB_RUNS, else ~/.cache/ftlab/runs). Interrupted, it resumes: chapters done "
                                   "for this profile are skipped.")
    if wanted("prepare"):
        from ftlab.config.profiles import PROFILES

        p.add_argument("--profile", choices=PROFILES,
                       help="workload size (default: FTLAB_PROFILE, else gpu with CUDA, else cpu)")
        p.add_argument("--chapters", nargs="+", metavar="NN", help="only these chapters, e.g. 01 02 (default: all)")
        p.add_argument("--restart", action="store_true", help="execute every chosen chapter again, even if done before")
        p.add_argument("--notebooks", help=argparse.SUPPRESS)  # tests: a folder of small chapters
        p.add_argument("--models", nargs="*", help=argparse.SUPPRESS)  # tests: which models to build first
    p.set_defaults(func=_command("ftlab.cli.prepare:cmd_prepare"))

    runs = sub.add_parser("runs", help="the run cache: list, show, remove, export",
                          description="Saved runs (FTLAB_RUNS, else ~/.cache/ftlab/runs). ID is a config hash or a "
                                      "unique prefix of one, as `ftlab runs list` shows it.")
    rsub = runs.add_subparsers(dest="action", required=True, metavar="ACTION")
    r = rsub.add_parser("list", help="every saved run: hash, label, model, status, steps, final eval loss",
                        description="Every saved run: hash, label, model, status, steps, final eval loss.")
    r.set_defaults(func=_command("ftlab.cli.runs:cmd_runs_list"))
    r = rsub.add_parser("show", help="one run: metrics, eval losses, memory, config", description="One run in full.")
    r.add_argument("id", metavar="ID")
    r.set_defaults(func=_command("ftlab.cli.runs:cmd_runs_show"))
    r = rsub.add_parser("remove", help="delete one run from the cache", description="Delete one saved run.")
    r.add_argument("id", metavar="ID")
    r.set_defaults(func=_command("ftlab.cli.runs:cmd_runs_remove"))
    r = rsub.add_parser("export", help="one run's history as CSV, JSON or TensorBoard events",
                        description="Write one run's per-step history: CSV (one row per step), JSON (the saved run) "
                                    "or TensorBoard event files (train/loss, train/learning_rate, train/grad_norm, "
                                    "eval/loss).")
    r.add_argument("id", metavar="ID")
    r.add_argument("--format", choices=("csv", "json", "tensorboard"), default="csv")
    r.add_argument("--out", help="file (csv, json; '-' for stdout) or folder (tensorboard); default: <hash>.csv, "
                                 "<hash>.json, tensorboard/<hash>")
    r.set_defaults(func=_command("ftlab.cli.runs:cmd_runs_export"))

    e = sub.add_parser("estimate", help="predict the memory of one training step",
                       description="Predict weights, gradients, optimizer state and activations of one training step "
                                   "before loading anything (ftlab.memory.estimate).")
    if wanted("estimate"):
        from ftlab.config.run_config import OPTIMIZERS
        from ftlab.memory import MODEL_SIZES, STRATEGIES
        from ftlab.memory.fits import DEFAULT_WEIGHTS, LOSSES, WEIGHTS
        from ftlab.setup.presets import PRESETS

        e.add_argument("--model", default="smollm2-135m",
                       help=f"a size ({', '.join(MODEL_SIZES)}), a preset ({', '.join(PRESETS)}), a local folder or a cached "
                            f"hub id (default: smollm2-135m)")
        e.add_argument("--method", choices=("full", "lora", "qlora"), default="lora")
        e.add_argument("--batch", type=int, default=4, help="sequences per step (default 4)")
        e.add_argument("--seq", type=int, default=128, help="tokens per sequence (default 128)")
        e.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
        e.add_argument("--optim", choices=OPTIMIZERS, default="adamw_torch")
        e.add_argument("--weights", choices=tuple(WEIGHTS), default=DEFAULT_WEIGHTS,
                       help="bfloat16 (default): a bf16 base on a GPU, fp32 adapters and optimizer state, bf16 compute; "
                            "float32: the step as ftlab's own runs take it (fp32 weights)")
        e.add_argument("--bf16", action="store_true", help="bf16 autocast over fp32 weights (with --weights float32)")
        e.add_argument("--loss", choices=tuple(LOSSES), default="cross_entropy",
                       help="cross_entropy (default) or chunked: a chunked/fused loss (Liger, Cut Cross-Entropy)")
        e.add_argument("--lora-r", type=int, default=8, help="LoRA rank for lora/qlora (default 8)")
        e.add_argument("--devices", type=int, default=1, help="processes / GPUs training together, each on --batch "
                                                               "(default 1)")
        e.add_argument("--strategy", choices=tuple(STRATEGIES), default="ddp",
                       help="how the devices split the model: ddp (not at all), zero1, zero2, fsdp (default ddp)")
    e.set_defaults(func=_command("ftlab.cli.memory:cmd_estimate"))

    f = sub.add_parser("fits", help="which model size fits which GPU, full vs LoRA vs QLoRA",
                       description="The what-fits table (ftlab.memory.fits_table) for published architectures.")
    if wanted("fits"):
        from ftlab.memory import MODEL_SIZES, STRATEGIES
        from ftlab.memory.fits import DEFAULT_WEIGHTS, LOSSES, WEIGHTS

        f.add_argument("--batch", type=int, default=1)
        f.add_argument("--seq", type=int, default=2048)
        f.add_argument("--gpus", type=int, nargs="+", default=[16, 24, 48, 80], metavar="GIB")
        f.add_argument("--models", nargs="+", choices=list(MODEL_SIZES), default=list(MODEL_SIZES), metavar="SIZE")
        f.add_argument("--no-checkpointing", action="store_true")
        f.add_argument("--weights", choices=tuple(WEIGHTS), default=DEFAULT_WEIGHTS,
                       help="how the unquantized weights are stored: bfloat16, as practitioners load a base (default), "
                            "or float32, as ftlab's own runs load it")
        f.add_argument("--loss", choices=tuple(LOSSES), default="cross_entropy",
                       help="cross_entropy (default) or chunked: a chunked/fused loss (Liger, Cut Cross-Entropy)")
        f.add_argument("--devices", type=int, default=1, help="GPUs training together, each on --batch (default 1)")
        f.add_argument("--strategy", choices=tuple(STRATEGIES), default="ddp", help="how they split the model (default ddp)")
        f.add_argument("--devices-needed", action="store_true",
                       help="instead: how many GPUs a full fine-tune needs under each strategy, and whether LoRA or QLoRA "
                            "fits one")
    f.set_defaults(func=_command("ftlab.cli.memory:cmd_fits"))

    t = sub.add_parser("train", help="one run from a config file, printing its final metrics",
                       description="Train one run from a JSON config (RunConfig.to_json(), or a saved run's file); "
                                   "a config trained before is read from the run cache.")
    t.add_argument("config", metavar="CONFIG.json")
    t.add_argument("--retrain", action="store_true", help="train even if the run cache has this config")
    t.add_argument("--label", help="a name for the run")
    t.add_argument("--runs", help="run cache folder (default: FTLAB_RUNS, else ~/.cache/ftlab/runs)")
    t.set_defaults(func=_command("ftlab.cli.train:cmd_train"))

    d = sub.add_parser("doctor", help="check this machine: versions, device, precision, what fits, front end",
                       description="A preflight check, short enough to paste into a bug report: each problem is "
                                   "printed with the one thing to do; the exit status is 1 when there is one.")
    d.set_defaults(func=_command("ftlab.cli.doctor:cmd_doctor"))

    h = sub.add_parser("hosted", help="write the Colab/Kaggle first cell into chapters (authoring)",
                       description="Put the current hosted-notebook cell (ftlab.cli.hosted.CELL) into each notebook "
                                   "as its first code cell, replacing an older copy; every other cell is unchanged.")
    h.add_argument("notebooks", nargs="+", metavar="NOTEBOOK.ipynb")
    h.set_defaults(func=_command("ftlab.cli.hosted:cmd_hosted"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    named = next((a for a in argv if not a.startswith("-")), "")  # the top level takes no option with a value
    parser = build_parser(named)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except FtlabError as err:
        print(f"ftlab {args.command}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
