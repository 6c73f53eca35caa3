"""The training step every rank takes, and the one process it is compared with.

One step is Trainer's inner step without its extras: forward (under bf16 autocast when the
config asks), backward, the optimizer Trainer would build for ``config.optim`` (over every
trainable weight in one group, at ``config.weight_decay``), its learning-rate schedule, and
zero the gradients. Gradient clipping is left out: under FSDP it needs one more all-reduce
(of the norm), which would blur the byte count of what each strategy itself moves.

The data are the run's own training examples, chat template applied, laid end to end and
cut into rows of ``max_seq_length`` tokens with the loss on every token: no padding, so
every rank's loss averages the same number of tokens, the mean of the ranks' losses is
exactly the loss of the whole batch, and the memory is the padding-free step the predictor
models.
"""
from __future__ import annotations

import math
import tempfile
import time
from contextlib import nullcontext
from typing import Any

import torch
from torch.distributed.fsdp import fully_shard
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel
from transformers import Trainer, get_scheduler

from ftlab.config.run_config import RunConfig, resolve_warmup_steps
from ftlab.distributed.comm import CommCounter, count_ddp
from ftlab.distributed.measure import RankActivationMeter, rank_breakdown
from ftlab.errors import DataError
from ftlab.memory.predict import SHARDED
from ftlab.setup.data import load_data
from ftlab.setup.models import load_model
from ftlab.training.arguments import training_arguments

WHOLE = 32768
"""The longest ``max_seq_length`` RunConfig allows: examples are read whole."""
EXAMPLE_TOKENS = 32
"""Fewer tokens than any templated training example has (the system prompt alone is more):
how many examples to read is worked out from it."""


def token_rows(config: RunConfig, count: int) -> torch.Tensor:
    """``count`` rows of ``config.max_seq_length`` tokens from the run's training examples."""
    seq = config.max_seq_length
    examples = min(3000, 8 + math.ceil(count * seq / EXAMPLE_TOKENS))
    # read whole examples (none cut or dropped at the run's length), then cut the stream into rows
    data = load_data(config.replace(train_size=examples, eval_size=1, exact_match_size=0, max_seq_length=WHOLE))
    stream = [token for example in data.train for token in example["input_ids"]]
    if len(stream) < count * seq:
        raise DataError(f"data set {config.dataset!r} has {len(stream)} training tokens in its first {examples} "
                        f"examples, fewer than the {count} x {seq} a distributed measurement of this plan takes; "
                        f"lower the steps, the batch or max_seq_length")
    return torch.tensor(stream[: count * seq]).view(count, seq)


def rank_batch(rows: torch.Tensor, step: int, rank: int, nproc: int, per_rank: int,
               device: torch.device) -> dict[str, torch.Tensor]:
    """The sequences ``rank`` trains on at ``step``: its slice of that step's ``nproc * per_rank`` rows
    (rank 0 the first ``per_rank``; one process, ``nproc=1``, all of them)."""
    start = (step * nproc + rank) * per_rank
    ids = rows[start: start + per_rank].clone().to(device)  # its own storage, as a data loader's batch has
    return {"input_ids": ids, "labels": ids.clone()}


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's decoder blocks (``LlamaDecoderLayer``...), each one FSDP unit."""
    return [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]


def wrap(model: torch.nn.Module, strategy: str | None, device: torch.device) -> torch.nn.Module:
    """``model`` as ``strategy`` trains it (None: one process), returning what to call.

    ddp / zero1: DistributedDataParallel, its buckets counted (:func:`~ftlab.distributed.comm.count_ddp`);
    constant buffers (the rotary frequencies) are not re-broadcast every forward.
    zero2 / fsdp: FSDP2's ``fully_shard`` on every decoder layer, then on the root (the
    embedding, the final norm and the head stay in the root's group); ``zero2`` keeps each
    layer gathered from its forward until its backward.
    """
    if strategy in ("ddp", "zero1"):
        ids = [device.index] if device.type == "cuda" else None
        return count_ddp(DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False))
    if strategy in SHARDED:
        for layer in decoder_layers(model):
            fully_shard(layer, reshard_after_forward=strategy == "fsdp")
        fully_shard(model, reshard_after_forward=strategy == "fsdp")
    return model


def optimizer_for(config: RunConfig, model: torch.nn.Module, strategy: str | None, steps: int
                  ) -> tuple[torch.optim.Optimizer, Any]:
    """The optimizer Trainer builds for ``config.optim`` (ZeroRedundancyOptimizer around it for
    zero1) and the learning-rate schedule over ``steps``."""
    with tempfile.TemporaryDirectory() as out:
        cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(training_arguments(config, out), model)
    kwargs = {"weight_decay": config.weight_decay, **kwargs}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = (ZeroRedundancyOptimizer(params, optimizer_class=cls, **kwargs) if strategy == "zero1"
                 else cls(params, **kwargs))
    schedule = get_scheduler(config.lr_scheduler_type, optimizer, resolve_warmup_steps(config.warmup_steps, steps),
                             steps, scheduler_specific_kwargs=dict(config.lr_scheduler_kwargs))
    return optimizer, schedule


def prepare(config: RunConfig, strategy: str | None, steps: int, device: torch.device
            ) -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer, Any]:
    """The model (as loaded, for measuring), what to call (wrapped), the optimizer and schedule."""
    model = load_model(config)[0].to(device)
    call = wrap(model, strategy, device)
    return (model, call, *optimizer_for(config, model, strategy, steps))


def train_steps(config: RunConfig, strategy: str | None, rows: torch.Tensor, steps: int, rank: int, nproc: int,
                device: torch.device, counter: CommCounter | None = None) -> dict[str, Any]:
    """``steps`` steps of ``config`` as ``strategy`` takes them on ``rank`` of ``nproc``.

    The first step is measured (:mod:`ftlab.distributed.measure`: the rank's memory breakdown
    after it, and the whole parameters gathered during it); every step records its loss (this
    rank's share of the batch), its seconds and, with a ``counter``, the bytes and calls of
    each collective it made.
    """
    model, call, optimizer, schedule = prepare(config, strategy, steps, device)
    record: dict[str, Any] = {"losses": [], "seconds": [], "comm": [], "calls": []}
    for step in range(steps):
        batch = rank_batch(rows, step, rank, nproc, config.per_device_train_batch_size, device)
        meter = RankActivationMeter(model, sharded=strategy in SHARDED)
        if counter is not None:
            counter.reset()
        started = time.perf_counter()
        with meter if step == 0 else nullcontext(), torch.autocast(device.type, torch.bfloat16, enabled=config.bf16):
            loss = call(**batch).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        if step == 0:  # the gradients are still there: zero_grad comes next
            record["memory"] = rank_breakdown(model, optimizer, meter).to_dict()
            record["gathered"] = meter.gathered
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        record["seconds"].append(time.perf_counter() - started)
        record["losses"].append(loss.item())
        if counter is not None:
            record["comm"].append(dict(counter.bytes))
            record["calls"].append(dict(counter.calls))
    return record
