"""Do worker processes train a chapter's arms faster? Runs per minute, one process vs several.

The same ``--runs`` knob runs, each under its own seed, are trained twice from an empty run
cache. ``--base knob`` is the old short full fine-tune (60 steps of ``knob_config``);
``--base protocol`` is the tuning protocol's LoRA run (``finished_knob_config``, r=8), the
run the protocol chapters train dozens of:

1. one after another in this process, with every core's thread (what a chapter did before);
2. by :func:`ftlab.training.parallel.train_in_workers` in ``--workers`` one-thread processes,
   including the workers' start (each imports torch and transformers once).

The wall time of each, and their ratio, go to benchmarks/results/workers_<base>_cpu.json; the
README in this folder records them. Nothing else may run on the machine meanwhile.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from ftlab import train
from ftlab.config.profiles import finished_knob_config, knob_config
from ftlab.training.parallel import train_in_workers
from ftlab.training.train import environment
from provenance import record  # benchmarks/provenance.py: the commit and processor measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6, help="knob runs trained each way")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--base", choices=("knob", "protocol"), default="protocol")
    args = parser.parse_args()
    base = knob_config("cpu") if args.base == "knob" else finished_knob_config("cpu", lora_r=8, lora_alpha=16)
    jobs = [(f"seed {s}", base.replace(seed=s)) for s in range(100, 100 + args.runs)]
    train(base.replace(max_steps=1), save=False, progress=False)  # load the base once, outside the timings
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as many:
        start = time.perf_counter()
        for label, config in jobs:
            train(config, label=label, runs_dir=one, progress=False)
        sequential = time.perf_counter() - start
        start = time.perf_counter()
        train_in_workers(jobs, workers=args.workers, runs_dir=many)
        parallel = time.perf_counter() - start
    result = {"base": args.base, "runs": args.runs, "steps_per_run": base.max_steps, "workers": args.workers,
              "threads_in_one_process": torch.get_num_threads(), "sequential_s": round(sequential, 1),
              "workers_s": round(parallel, 1), "speedup": round(sequential / parallel, 3), "env": environment()}
    print(result)
    record(Path(__file__).parent / "results" / f"workers_{args.base}_cpu.json", result)


if __name__ == "__main__":
    main()
