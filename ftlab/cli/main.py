"""The ``ftlab`` command: prepare a workshop room, browse the run cache, predict memory, train.

Everything here is one plain function call of the package, reachable without a notebook::

    ftlab prepare [--profile cpu|gpu|ci] [--chapters 01 02 ...]   # before a workshop
    ftlab runs list | show ID | remove ID | export ID --format csv|json|tensorboard
    ftlab estimate --model 7B --method qlora --batch 1 --seq 2048 [--checkpointing] [--optim NAME] [--bf16]
    ftlab estimate ... --devices 8 --strategy fsdp      # one GPU's share of a data-parallel run
    ftlab fits [--batch 1 --seq 2048 --gpus 16 24 48 80] [--devices 8 --strategy fsdp | --devices-needed]
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
import json
import sys
import warnings
from pathlib import Path
from typing import Sequence

from ftlab.cli.common import CliError, run_steps, size, table
from ftlab.config.run_config import OPTIMIZERS, RunConfig
from ftlab.errors import ConfigFileError, FtlabError
from ftlab.memory.fits import WEIGHTS, assumptions
from ftlab.memory import (MODEL_SIZES, STRATEGIES, busiest_rank, communication_bytes, devices_needed, estimate,
                          fits_table, gathered_bytes, model_architecture, setup_for)
from ftlab.setup.presets import PRESETS, resolve_model
from ftlab.cli.prepare import cmd_prepare
from ftlab.cli.doctor import cmd_doctor
from ftlab.cli.hosted import cmd_hosted
from ftlab.config.profiles import PROFILES
from ftlab.runs.cache import RunCache
from ftlab.cli.runs import cmd_runs_export, cmd_runs_list, cmd_runs_remove, cmd_runs_show
from ftlab.training.train import train
from ftlab.version import __version__


# --- estimate and fits ----------------------------------------------------------------------------


def cmd_estimate(args: argparse.Namespace) -> int:
    config = RunConfig(model=args.model if args.model not in MODEL_SIZES else "smollm2-135m",
                       lora_r=0 if args.method == "full" else args.lora_r, lora_alpha=2 * max(args.lora_r, 1),
                       load_in_4bit=args.method == "qlora", optim=args.optim, bf16=args.bf16,
                       gradient_checkpointing=args.checkpointing, per_device_train_batch_size=args.batch,
                       max_seq_length=args.seq)
    if args.model in MODEL_SIZES:
        arch = MODEL_SIZES[args.model]
        what = f"{args.model} ({arch.source}, {arch.parameter_count() / 1e9:.2f}B parameters)"
    else:
        # tiny-pretrained is the tiny architecture: read it without pretraining it first
        name = "tiny" if args.model == "tiny-pretrained" else args.model
        resolve_model(name)  # a missing folder or an unreachable hub id: its own clear error
        arch = model_architecture(name)
        what = f"{args.model} ({arch.parameter_count() / 1e6:.1f}M parameters)"
    rank = busiest_rank(arch, setup_for(config), args.devices, args.strategy) if args.devices >= 1 else 0
    b = estimate(config, model_config=arch, devices=args.devices, strategy=args.strategy, rank=rank)
    method = {"full": "full fine-tune", "lora": f"LoRA r={config.lora_r} on {', '.join(config.lora_target_modules)}",
              "qlora": f"QLoRA (NF4 base) r={config.lora_r} on {', '.join(config.lora_target_modules)}"}[args.method]
    extras = [config.optim] + (["bf16 autocast"] if args.bf16 else []) + (["gradient checkpointing"] if args.checkpointing else [])
    print(f"one training step of {what}: {method}, batch {args.batch} x {args.seq} tokens, {', '.join(extras)}")
    for key in ("weights", "gradients", "optimizer", "activations"):
        print(f"  {key:12s}{size(getattr(b, key)):>12s}")
    print(f"  {'total':12s}{size(b.total):>12s}")
    if args.devices > 1 or args.strategy != "ddp":
        _print_scale_out(args, config, arch, rank)
    print("as ftlab trains it: fp32 weights (bf16 means autocast), no CUDA context or allocator slack; "
          "`ftlab fits` shows bf16 weights on a GPU")
    return 0


def _print_scale_out(args: argparse.Namespace, config: RunConfig, arch: object, rank: int) -> None:
    """What ``estimate --devices/--strategy`` adds: whose breakdown that was, the whole layers FSDP
    gathers beside its shards, and the collectives' payload per step."""
    setup = setup_for(config)
    print(f"the above is rank {rank} of {args.devices} (the busiest), each on batch {args.batch}: {STRATEGIES[args.strategy]}")
    print(f"  {'gathered':12s}{size(gathered_bytes(arch, setup, args.strategy)):>12s}   whole parameters held beside the "
          f"shards while they compute (on a GPU FSDP also prefetches the next layer)")
    comm = communication_bytes(arch, setup, args.devices, args.strategy)
    print("communication per step: " + ", ".join(f"{op} {size(n)}" for op, n in comm.items()))


def cmd_fits(args: argparse.Namespace) -> int:
    if args.devices_needed:
        return _print_devices_needed(args)
    rows = fits_table(model_sizes=args.models, gpus_gib=args.gpus, batch=args.batch, seq_len=args.seq,
                      gradient_checkpointing=not args.no_checkpointing, devices=args.devices, strategy=args.strategy,
                      weights=args.weights)
    header = ["model", "source", "method", "total GiB"] + [f"{g} GiB" for g in args.gpus]
    body = [[r["model"], r["source"], r["method"], r["total_gib"]] + [r[f"fits_{g}GiB"] for g in args.gpus] for r in rows]
    per_gpu = (f" on each of {args.devices} GPUs with {args.strategy} (the busiest one)"
               if args.devices > 1 or args.strategy != "ddp" else "")
    print(f"what fits: one step of batch {args.batch} x {args.seq} tokens{per_gpu}, "
          f"{'with' if not args.no_checkpointing else 'without'} gradient checkpointing, 10% of each card kept free")
    print(table(body, header))
    print(f"assumed: {assumptions(args.weights)} (ftlab.memory.fits; the MemoryPredictor widget uses the same)")
    return 0


def _print_devices_needed(args: argparse.Namespace) -> int:
    rows = devices_needed(model_sizes=args.models, gpus_gib=args.gpus, batch=args.batch, seq_len=args.seq,
                          gradient_checkpointing=not args.no_checkpointing, weights=args.weights)
    header = ["model", "GPU GiB"] + [f"full {s}" for s in STRATEGIES] + ["LoRA on 1", "QLoRA on 1", "fewest GPUs"]
    body = [[r["model"], r["gpu_gib"]] + [r[f"full_{s}"] for s in STRATEGIES] + [r["lora_on_one"], r["qlora_on_one"],
                                                                                  r["answer"]] for r in rows]
    print(f"GPUs needed (a power of two, '-' = none up to 1024): batch {args.batch} x {args.seq} tokens per GPU, "
          f"{'with' if not args.no_checkpointing else 'without'} gradient checkpointing, 10% of each card kept free")
    print(table(body, header))
    print("sharding divides weights, gradients and optimizer state, never the activations or the gathered layers "
          "(ftlab.memory.fits.devices_needed)")
    print(f"assumed: {assumptions(args.weights)}")
    return 0


# --- train ----------------------------------------------------------------------------------------


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


# --- the parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ftlab", description="ftlab: the fine-tuning workbook from a terminal.")
    parser.add_argument("--version", action="version", version=f"ftlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="before a workshop: build the models and train every chapter's runs",
                       description="Convert SmolLM2-135M, build the pretrained tiny base, and execute each chapter "
                                   "notebook headless (papermill) so every run it makes lands in the run cache "
                                   "(FTLAB_RUNS, else ~/.cache/ftlab/runs). Interrupted, it resumes: chapters done "
                                   "for this profile are skipped.")
    p.add_argument("--profile", choices=PROFILES, help="workload size (default: FTLAB_PROFILE, else gpu with CUDA, else cpu)")
    p.add_argument("--chapters", nargs="+", metavar="NN", help="only these chapters, e.g. 01 02 (default: all)")
    p.add_argument("--restart", action="store_true", help="execute every chosen chapter again, even if done before")
    p.add_argument("--notebooks", help=argparse.SUPPRESS)  # tests: a folder of small chapters
    p.add_argument("--models", nargs="*", help=argparse.SUPPRESS)  # tests: which models to build first
    p.set_defaults(func=cmd_prepare)

    runs = sub.add_parser("runs", help="the run cache: list, show, remove, export",
                          description="Saved runs (FTLAB_RUNS, else ~/.cache/ftlab/runs). ID is a config hash or a "
                                      "unique prefix of one, as `ftlab runs list` shows it.")
    rsub = runs.add_subparsers(dest="action", required=True, metavar="ACTION")
    r = rsub.add_parser("list", help="every saved run: hash, label, model, status, steps, final eval loss",
                        description="Every saved run: hash, label, model, status, steps, final eval loss.")
    r.set_defaults(func=cmd_runs_list)
    r = rsub.add_parser("show", help="one run: metrics, eval losses, memory, config", description="One run in full.")
    r.add_argument("id", metavar="ID")
    r.set_defaults(func=cmd_runs_show)
    r = rsub.add_parser("remove", help="delete one run from the cache", description="Delete one saved run.")
    r.add_argument("id", metavar="ID")
    r.set_defaults(func=cmd_runs_remove)
    r = rsub.add_parser("export", help="one run's history as CSV, JSON or TensorBoard events",
                        description="Write one run's per-step history: CSV (one row per step), JSON (the saved run) "
                                    "or TensorBoard event files (train/loss, train/learning_rate, train/grad_norm, "
                                    "eval/loss).")
    r.add_argument("id", metavar="ID")
    r.add_argument("--format", choices=("csv", "json", "tensorboard"), default="csv")
    r.add_argument("--out", help="file (csv, json; '-' for stdout) or folder (tensorboard); default: <hash>.csv, "
                                 "<hash>.json, tensorboard/<hash>")
    r.set_defaults(func=cmd_runs_export)

    e = sub.add_parser("estimate", help="predict the memory of one training step",
                       description="Predict weights, gradients, optimizer state and activations of one training step "
                                   "before loading anything (ftlab.memory.estimate).")
    e.add_argument("--model", default="smollm2-135m",
                   help=f"a size ({', '.join(MODEL_SIZES)}), a preset ({', '.join(PRESETS)}), a local folder or a cached "
                        f"hub id (default: smollm2-135m)")
    e.add_argument("--method", choices=("full", "lora", "qlora"), default="lora")
    e.add_argument("--batch", type=int, default=4, help="sequences per step (default 4)")
    e.add_argument("--seq", type=int, default=128, help="tokens per sequence (default 128)")
    e.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    e.add_argument("--optim", choices=OPTIMIZERS, default="adamw_torch")
    e.add_argument("--bf16", action="store_true", help="bf16 autocast")
    e.add_argument("--lora-r", type=int, default=8, help="LoRA rank for lora/qlora (default 8)")
    e.add_argument("--devices", type=int, default=1, help="processes / GPUs training together, each on --batch "
                                                           "(default 1)")
    e.add_argument("--strategy", choices=tuple(STRATEGIES), default="ddp",
                   help="how the devices split the model: ddp (not at all), zero1, zero2, fsdp (default ddp)")
    e.set_defaults(func=cmd_estimate)

    f = sub.add_parser("fits", help="which model size fits which GPU, full vs LoRA vs QLoRA",
                       description="The what-fits table (ftlab.memory.fits_table) for published architectures.")
    f.add_argument("--batch", type=int, default=1)
    f.add_argument("--seq", type=int, default=2048)
    f.add_argument("--gpus", type=int, nargs="+", default=[16, 24, 48, 80], metavar="GIB")
    f.add_argument("--models", nargs="+", choices=list(MODEL_SIZES), default=list(MODEL_SIZES), metavar="SIZE")
    f.add_argument("--no-checkpointing", action="store_true")
    f.add_argument("--weights", choices=tuple(WEIGHTS), default="float32",
                   help="how the unquantized weights are stored: float32, as ftlab loads them (default), or bfloat16")
    f.add_argument("--devices", type=int, default=1, help="GPUs training together, each on --batch (default 1)")
    f.add_argument("--strategy", choices=tuple(STRATEGIES), default="ddp", help="how they split the model (default ddp)")
    f.add_argument("--devices-needed", action="store_true",
                   help="instead: how many GPUs a full fine-tune needs under each strategy, and whether LoRA or QLoRA "
                        "fits one")
    f.set_defaults(func=cmd_fits)

    t = sub.add_parser("train", help="one run from a config file, printing its final metrics",
                       description="Train one run from a JSON config (RunConfig.to_json(), or a saved run's file); "
                                   "a config trained before is read from the run cache.")
    t.add_argument("config", metavar="CONFIG.json")
    t.add_argument("--retrain", action="store_true", help="train even if the run cache has this config")
    t.add_argument("--label", help="a name for the run")
    t.add_argument("--runs", help="run cache folder (default: FTLAB_RUNS, else ~/.cache/ftlab/runs)")
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("doctor", help="check this machine: versions, device, precision, what fits, front end",
                       description="A preflight check, short enough to paste into a bug report: each problem is "
                                   "printed with the one thing to do; the exit status is 1 when there is one.")
    d.set_defaults(func=cmd_doctor)

    h = sub.add_parser("hosted", help="write the Colab/Kaggle first cell into chapters (authoring)",
                       description="Put the current hosted-notebook cell (ftlab.cli.hosted.CELL) into each notebook "
                                   "as its first code cell, replacing an older copy; every other cell is unchanged.")
    h.add_argument("notebooks", nargs="+", metavar="NOTEBOOK.ipynb")
    h.set_defaults(func=cmd_hosted)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
