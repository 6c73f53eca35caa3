"""What every rank runs: ``torchrun --nproc-per-node N -m ftlab.distributed.worker plan.json --out DIR``.

Each rank joins the process group (NCCL on GPUs, one GPU per rank; gloo on CPUs), reads
the same rows of training data, and for each strategy of the :class:`~ftlab.distributed.plan.Plan`
loads the model afresh, wraps it, takes the plan's steps with every collective counted
(:mod:`ftlab.distributed.comm`) and its first step measured (:mod:`ftlab.distributed.measure`).
It then checks the from-scratch all-reduces of :mod:`ftlab.distributed.scratch` against
DDP's gradients, runs the averaging lesson on the prompt-masked rows (:func:`averaging_check`),
and writes everything to ``DIR/rank<N>.json``, the only thing the notebook reads back. Every collective times out after the plan's ``timeout_s``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist

from ftlab.config.run_config import RunConfig
from ftlab.errors import DataError
from ftlab.distributed.comm import CommCounter
from ftlab.distributed.plan import DistributedError, Plan
from ftlab.distributed.scratch import (average_gradients, flat_gradients, global_token_count, labelled_tokens,
                                      ring_all_reduce, token_mean_loss)
from ftlab.distributed.steps import rank_batch, sft_rows, train_steps, wrap
from ftlab.foundation.storage import write_json_atomic
from ftlab.setup.models import load_model


def join(timeout_s: float) -> torch.device:
    """Join the process group torchrun describes (its environment variables); this rank's device."""
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    return torch.device("cuda", local_rank) if cuda else torch.device("cpu")


def scratch_check(config: RunConfig, rows: torch.Tensor, device: torch.device) -> dict[str, Any]:
    """The first step's gradients averaged three ways, each compared with DDP's (largest
    absolute difference): this rank's own gradients unaveraged (the check is not vacuous),
    one all-reduce of the flattened gradients divided by the world size, and the written-out
    ring divided by it. Also the bytes the ring sent from this rank."""
    rank, nproc = dist.get_rank(), dist.get_world_size()
    batch = rank_batch(rows, 0, rank, nproc, config.per_device_train_batch_size, device)
    model = load_model(config)[0].to(device)
    model(**batch).loss.backward()
    own = flat_gradients(model)
    ring, sent = ring_all_reduce(own)
    average_gradients(model)
    by_hand = flat_gradients(model)
    model.zero_grad(set_to_none=True)
    ddp_model = wrap(model, "ddp", device)  # kept referenced: its reducer all-reduces during backward
    ddp_model(**batch).loss.backward()
    ddp = flat_gradients(model)
    return {"own_vs_ddp": (own - ddp).abs().max().item(), "all_reduce_vs_ddp": (by_hand - ddp).abs().max().item(),
            "ring_vs_ddp": (ring / nproc - ddp).abs().max().item(), "largest_gradient": ddp.abs().max().item(),
            "gradient_bytes": ddp.numel() * ddp.element_size(), "ring_sent_bytes": sent}


AVERAGING_BATCHES = 32
"""Whole batches of prompt-masked rows the averaging lesson reads, to find one where it shows."""


def masked_step(labels: torch.Tensor, nproc: int, per_rank: int) -> int:
    """The first batch of prompt-masked rows in which every rank has tokens with a loss, in
    different numbers: where averaging the ranks' mean losses goes wrong (a rank whose rows are
    all prompt has no mean at all). Rows cut from the stream start with long system prompts,
    so the very first batch may hold no answer."""
    for step in range(labels.shape[0] // (nproc * per_rank)):
        counts = [labelled_tokens(labels[(step * nproc + r) * per_rank:(step * nproc + r + 1) * per_rank])
                  for r in range(nproc)]
        if min(counts) > 0 and len(set(counts)) > 1:
            return step
    raise DataError(f"no batch among the first {labels.shape[0] // (nproc * per_rank)} gives every rank answer tokens "
                    f"in different numbers; raise max_seq_length or per_device_train_batch_size")


def averaging_check(config: RunConfig, rows: torch.Tensor, labels: torch.Tensor, device: torch.device
                    ) -> dict[str, Any]:
    """One prompt-masked batch (:func:`masked_step`) three ways: one process on the whole batch
    (the reference), each rank's mean loss averaged over ranks (what the unmasked demo gets
    away with), and token-count averaging (:func:`~ftlab.distributed.scratch.token_mean_loss`).
    The losses, the ranks' labelled tokens, and each averaged gradient's largest difference
    from the one-process gradient."""
    rank, nproc = dist.get_rank(), dist.get_world_size()
    per_rank = config.per_device_train_batch_size
    step = masked_step(labels, nproc, per_rank)
    mine = rank_batch(rows, step, rank, nproc, per_rank, device, labels)
    whole = rank_batch(rows, step, 0, 1, nproc * per_rank, device, labels)
    model = load_model(config)[0].to(device)
    reference = model(**whole).loss
    reference.backward()
    one = flat_gradients(model)
    model.zero_grad(set_to_none=True)
    results: dict[str, Any] = {"batch": step, "one_process_loss": reference.item(), "tokens": labelled_tokens(mine["labels"]),
                               "largest_gradient": one.abs().max().item()}
    total = global_token_count(mine["labels"])
    for name, loss in (("mean_of_means", model(**mine).loss), ("token_mean", token_mean_loss(model, mine, total, nproc))):
        loss.backward()
        average_gradients(model)
        summed = loss.detach().clone()
        dist.all_reduce(summed)
        results[f"{name}_loss"] = summed.item() / nproc
        results[f"{name}_vs_one"] = (flat_gradients(model) - one).abs().max().item()
        model.zero_grad(set_to_none=True)
    results["tokens_all_ranks"] = total
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftlab.distributed.worker", description=__doc__.splitlines()[0])
    parser.add_argument("plan", help="a Plan as JSON (Plan.to_json())")
    parser.add_argument("--out", required=True, help="folder for rank<N>.json")
    args = parser.parse_args(argv)
    started = time.time()  # after Python, torch, transformers and ftlab were imported
    plan = Plan.from_json(Path(args.plan).read_text(encoding="utf-8"))
    device = join(plan.timeout_s)
    rank, nproc = dist.get_rank(), dist.get_world_size()
    if nproc != plan.nproc:
        raise DistributedError("torchrun", "--nproc-per-node", nproc, f"{plan.nproc}, the plan's nproc: its batch "
                               f"of {plan.config.per_device_train_batch_size} is split for that many ranks")
    config = plan.rank_config
    rows = sft_rows(plan.config, plan.steps * plan.config.per_device_train_batch_size)[0]
    report: dict[str, Any] = {"rank": rank, "nproc": nproc, "backend": dist.get_backend(), "device": str(device),
                              "threads": torch.get_num_threads(), "strategies": {}}
    with CommCounter() as counter:
        for strategy in plan.strategies:
            report["strategies"][strategy] = train_steps(config, strategy, rows, plan.steps, rank, nproc, device, counter)
    report["scratch"] = scratch_check(config, rows, device)
    try:
        report["averaging"] = averaging_check(config, *sft_rows(plan.config, AVERAGING_BATCHES *
                                                                plan.config.per_device_train_batch_size), device)
    except DataError as why:  # e.g. 4 ranks of one short row each: no batch shows the lesson, which is then skipped,
        report["averaging"] = {"skipped": str(why)}  # saying why, while the strategies' measurements stand

    report["started_at"], report["finished_at"] = started, time.time()
    write_json_atomic(Path(args.out) / f"rank{rank}.json", report)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
