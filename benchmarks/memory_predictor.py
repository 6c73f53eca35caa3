"""Is the memory predictor right? ``ftlab.memory.estimate`` against one measured training step.

For each case (model x full / LoRA / QLoRA x checkpointing off / on, plus bf16 autocast on
a GPU) the script loads the model as a run would, builds the optimizer Trainer would build,
and takes two training steps on random token ids (batch x seq, no padding). The second
step is measured: by then the optimizer state exists, as it does for every step of a real
run after the first.

Two comparisons are recorded:

* ``accounting``: the exact breakdown (weights, gradients, optimizer state from the
  tensors; activations from ``saved_tensors_hooks``) against ``estimate(config)``, per
  field. Any device.
* ``cuda_peak`` (CUDA only): ``torch.cuda.max_memory_allocated`` during the measured step
  against the predicted peak, ``estimate(...).total + transient_bytes(...)`` (the logits'
  gradient and, with checkpointing, one recomputed layer; see ``ftlab.memory.fits``). The
  goal is within 10%.

Results go to ``benchmarks/results/memory_predictor_<device>.json``; the README in this
folder records them.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from ftlab import RunConfig, estimate, load_model
from ftlab.memory import MiB, measure_training_step, model_architecture, setup_for, transient_bytes
from ftlab.foundation.storage import write_json_atomic
from ftlab.training.arguments import training_optimizer
from ftlab.training.train import environment

METHODS = {"full": dict(lora_r=0), "lora": dict(lora_r=8), "qlora": dict(lora_r=8, load_in_4bit=True)}
FIELDS = ("weights", "gradients", "optimizer", "activations", "total")


def cases(models: list[str], cuda: bool) -> list[tuple[str, RunConfig]]:
    """Every (name, config) to measure; bf16 autocast only on a GPU (on a CPU without native
    bf16 it is slow and adds nothing the unit tests do not already check)."""
    out = []
    for model in models:
        for method, knobs in METHODS.items():
            for ckpt in (False, True):
                for bf16 in ((False, True) if cuda else (False,)):
                    name = f"{model} {method}{' ckpt' if ckpt else ''}{' bf16' if bf16 else ''}"
                    out.append((name, RunConfig(model=model, gradient_checkpointing=ckpt, bf16=bf16, **knobs)))
    return out


def measure(config: RunConfig, batch: int, seq: int, device: torch.device) -> dict[str, Any]:
    """Two steps, the second measured; the prediction made before loading anything."""
    config = config.replace(per_device_train_batch_size=batch, max_seq_length=seq)
    kind = device.type
    predicted = estimate(config, device=kind)
    transient = transient_bytes(model_architecture(config.model), setup_for(config, device=kind), batch, seq)
    model, _ = load_model(config)
    if not config.load_in_4bit:  # a 4-bit model is placed on the GPU by load_model itself
        model.to(device)
    optimizer = training_optimizer(config, model)
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(0))
    data = {"input_ids": ids, "labels": ids.clone()}
    with torch.autocast(kind, dtype=torch.bfloat16, enabled=config.bf16):  # what Trainer(bf16=True) does
        measure_training_step(model, data, optimizer)
        start = time.perf_counter()
        measured = measure_training_step(model, data, optimizer)
        seconds = time.perf_counter() - start
    row: dict[str, Any] = {"predicted": predicted.to_dict(), "measured": measured.to_dict(), "step_seconds": seconds,
                           "accounting_error": {f: getattr(predicted, f) / getattr(measured, f) - 1
                                                for f in FIELDS if getattr(measured, f)}}
    if measured.cuda_peak is not None:
        row["predicted_peak"] = predicted.total + transient
        row["cuda_peak_error"] = row["predicted_peak"] / measured.cuda_peak - 1
    del model, optimizer
    if kind == "cuda":
        torch.cuda.empty_cache()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "smollm2-135m"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    rows = {}
    print(f"{'case':28s}{'predicted MiB':>14s}{'measured MiB':>14s}{'error':>9s}" + (f"{'CUDA peak':>11s}{'error':>9s}" if cuda else ""))
    for name, config in cases(args.models, cuda):
        row = rows[name] = measure(config, args.batch, args.seq, device)
        line = (f"{name:28s}{row['predicted']['total'] / MiB:14.1f}{row['measured']['total'] / MiB:14.1f}"
                f"{row['accounting_error']['total']:9.2%}")
        if cuda:
            line += f"{row['measured']['cuda_peak'] / MiB:11.1f}{row['cuda_peak_error']:9.2%}"
        print(line, flush=True)
    worst = max(abs(e) for row in rows.values() for e in row["accounting_error"].values())
    result: dict[str, Any] = {"batch": args.batch, "seq": args.seq, "env": environment(), "cases": rows,
                              "worst_accounting_error": worst}
    print(f"worst accounting error (any field, any case): {worst:.3%}")
    if cuda:
        result["worst_cuda_peak_error"] = max(abs(row["cuda_peak_error"]) for row in rows.values())
        print(f"worst CUDA peak error: {result['worst_cuda_peak_error']:.2%}")
    write_json_atomic(Path(__file__).resolve().parent / "results" / f"memory_predictor_{device.type}.json", result)


if __name__ == "__main__":
    main()
