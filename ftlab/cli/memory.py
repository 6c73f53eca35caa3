"""``ftlab estimate`` and ``ftlab fits``: the memory predictor from a terminal, nothing loaded."""
from __future__ import annotations

import argparse

from ftlab.cli.common import CliError, size, table
from ftlab.config.run_config import RunConfig
from ftlab.memory import (MODEL_SIZES, STRATEGIES, busiest_rank, communication_bytes, devices_needed, estimate,
                          fits_table, gathered_bytes, model_architecture, setup_for)
from ftlab.memory.architecture import Architecture, Setup
from ftlab.memory.fits import DEFAULT_WEIGHTS, LOSSES, WEIGHTS, assumptions, gpu_setup
from ftlab.memory.predict import breakdown, check_strategy
from ftlab.setup.presets import resolve_model

__all__ = ["cmd_estimate", "cmd_fits"]


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
    setup = _estimate_setup(args, config)
    check_strategy("estimate", args.strategy, args.devices, setup)
    rank = busiest_rank(arch, setup, args.devices, args.strategy)
    b = (estimate(config, model_config=arch, devices=args.devices, strategy=args.strategy, rank=rank)
         if setup.device == "cpu" else
         breakdown(arch, setup, args.batch, args.seq, devices=args.devices, strategy=args.strategy, rank=rank))
    method = {"full": "full fine-tune", "lora": f"LoRA r={config.lora_r} on {', '.join(config.lora_target_modules)}",
              "qlora": f"QLoRA (NF4 base) r={config.lora_r} on {', '.join(config.lora_target_modules)}"}[args.method]
    compute = "bf16 weights and compute" if setup.device == "cuda" else "fp32 weights" + (", bf16 autocast" if args.bf16 else "")
    extras = [config.optim, compute] + (["gradient checkpointing"] if args.checkpointing else [])
    print(f"one training step of {what}: {method}, batch {args.batch} x {args.seq} tokens, {', '.join(extras)}")
    for key in ("weights", "gradients", "optimizer", "activations"):
        print(f"  {key:12s}{size(getattr(b, key)):>12s}")
    print(f"  {'total':12s}{size(b.total):>12s}")
    if args.devices > 1 or args.strategy != "ddp":
        _print_scale_out(args, setup, arch, rank)
    storage = (WEIGHTS[args.weights] if setup.device == "cuda" else
               "the step as ftlab's own runs take it (fp32 weights), exact to the byte on a CPU")
    print(f"assumed: {storage}; {LOSSES[args.loss]}; no transient buffers, CUDA context or headroom (`ftlab fits` "
          f"adds them; --weights {'float32' if setup.device == 'cuda' else DEFAULT_WEIGHTS} for the other accounting)")
    return 0


def _estimate_setup(args: argparse.Namespace, config: RunConfig) -> Setup:
    """What ``estimate`` predicts: a bf16 base on a GPU (the default, as TRL, axolotl and Unsloth
    fine-tune), or with ``--weights float32`` the step as ftlab's own runs take it (fp32 weights,
    ``--bf16`` for autocast), which the CPU measurement checks to the byte."""
    if args.weights == "float32":
        if args.loss != "cross_entropy":
            raise CliError("--loss chunked is predicted for the GPU accounting (--weights bfloat16): ftlab's own runs "
                           "compute transformers' plain cross-entropy")
        return setup_for(config)
    if args.bf16:
        raise CliError("--bf16 (autocast) goes with --weights float32: a bf16 base already computes in bf16")
    return gpu_setup(config, args.weights, args.loss)


def _print_scale_out(args: argparse.Namespace, setup: Setup, arch: Architecture, rank: int) -> None:
    """What ``estimate --devices/--strategy`` adds: whose breakdown that was, the whole layers FSDP
    gathers beside its shards, and the collectives' payload per step."""
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
                      weights=args.weights, loss=args.loss)
    header = ["model", "source", "method", "total GiB"] + [f"{g} GiB" for g in args.gpus]
    body = [[r["model"], r["source"], r["method"], r["total_gib"]] + [r[f"fits_{g}GiB"] for g in args.gpus] for r in rows]
    per_gpu = (f" on each of {args.devices} GPUs with {args.strategy} (the busiest one)"
               if args.devices > 1 or args.strategy != "ddp" else "")
    print(f"what fits: one step of batch {args.batch} x {args.seq} tokens{per_gpu}, "
          f"{'with' if not args.no_checkpointing else 'without'} gradient checkpointing, 10% of each card kept free")
    print(table(body, header))
    print(f"assumed: {assumptions(args.weights, loss=args.loss)} (ftlab.memory.fits; the MemoryPredictor widget uses "
          f"the same)")
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
