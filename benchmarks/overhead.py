"""How much does ftlab's measuring cost? The same tiny run three ways, steps/s side by side.

1. ``ftlab.train``: HF Trainer + ftlab's recorder (per-step lr, grad norm, weight norm,
   tokens/s, exact memory on step 1, progress bar);
2. a bare HF ``Trainer`` with the same TrainingArguments, data and collator;
3. a plain PyTorch loop: AdamW, the same scheduler, the same batches, clipping.

Each variant runs ``--repeats`` times, interleaved, and the median training-loop time is
reported (model loading and data preparation are excluded from every variant). Results go
to benchmarks/results/overhead.json; the README in this folder records them.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import PrinterCallback, Trainer, get_scheduler, set_seed

from ftlab import RunConfig, load_data, load_model
from ftlab import train
from ftlab.foundation.storage import write_json_atomic
from ftlab.training.arguments import training_arguments
from ftlab.training.train import environment


def bare_trainer(config: RunConfig) -> float:
    set_seed(config.seed)
    model, tokenizer = load_model(config)
    data = load_data(config, tokenizer)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model=model, args=training_arguments(config, out), train_dataset=data.train,
                          eval_dataset=data.validation, data_collator=data.collator)
        trainer.remove_callback(PrinterCallback)
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start


def plain_loop(config: RunConfig) -> float:
    set_seed(config.seed)
    model, tokenizer = load_model(config)
    data = load_data(config, tokenizer)
    loader = torch.utils.data.DataLoader(data.train, batch_size=config.per_device_train_batch_size, shuffle=True,
                                         collate_fn=data.collator, generator=torch.Generator().manual_seed(config.seed))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    sched = get_scheduler(config.lr_scheduler_type, opt, num_warmup_steps=0, num_training_steps=config.max_steps)
    model.train()
    start = time.perf_counter()
    step = 0
    while step < config.max_steps:
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step == config.max_steps:
                break
    return time.perf_counter() - start


def ftlab_run(config: RunConfig) -> float:
    with tempfile.TemporaryDirectory() as runs:
        run = train(config, runs_dir=runs, retrain=True, progress=False)
    return run.metrics["train_runtime"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="tiny")
    args = parser.parse_args()
    config = RunConfig(model=args.model, dataset="finance", system_prompt="", lora_r=0, learning_rate=1e-3,
                       max_steps=args.steps, per_device_train_batch_size=16, max_seq_length=256,
                       eval_steps=args.steps, eval_size=16, exact_match_size=0)
    variants = {"ftlab.train": ftlab_run, "bare Trainer": bare_trainer, "plain PyTorch loop": plain_loop}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            times[name].append(fn(config))
    medians = {k: statistics.median(v) for k, v in times.items()}
    rows = {k: {"median_s": medians[k], "steps_per_s": args.steps / medians[k], "all_s": times[k]} for k in variants}
    base = rows["bare Trainer"]["steps_per_s"]
    for row in rows.values():
        row["ratio_to_bare_trainer"] = row["steps_per_s"] / base
    result = {"config": config.to_dict(), "steps": args.steps, "repeats": args.repeats, "env": environment(), "results": rows,
              "note": "bare Trainer and ftlab include one final evaluation of 16 examples; the plain loop none"}
    write_json_atomic(Path(__file__).resolve().parent / "results" / "overhead.json", result)
    print(f"{'variant':20s} {'steps/s':>8s} {'ratio':>7s}")
    for name, row in rows.items():
        print(f"{name:20s} {row['steps_per_s']:8.3f} {row['ratio_to_bare_trainer']:7.3f}")


if __name__ == "__main__":
    main()
