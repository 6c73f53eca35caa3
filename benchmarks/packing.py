"""When does packing pay? Padding, packing and naive packing on two data sets, side by side.

For the shipped finance data (examples of similar length) and the length-skewed mix
(:mod:`ftlab.setup.skewed_mix`: three short answers per long worked one), the same examples are
laid out three ways (:mod:`ftlab.lessons.packing`): dynamic padding, packing with restarted
``position_ids``, and naive packing under one causal mask. Each layout runs forward and
backward over the examples the packed layout fits into ``--steps`` batches; the layouts
are interleaved ``--repeats`` times and the fastest pass of each counts (load from other
processes only ever slows a pass down). Recorded per layout: real tokens per second,
padding fraction, loss per supervised token, exact activation bytes of the largest batch;
per data set: the contamination of one example's loss by the example packed before it,
over ``--pairs`` pairs. The load average before and after is recorded too: the machine
may be shared, and then ``--threads 1`` gives steadier timings than threads that wait on
each other.

Results go to ``benchmarks/results/packing_<device>.json``; the README in this folder
records them.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch

from ftlab import RunConfig, load_data, load_model
from ftlab.lessons.packing import LAYOUTS, contamination, measure_layout
from ftlab.setup.skewed_mix import skewed_mix
from ftlab.training.train import environment
from provenance import record  # benchmarks/provenance.py: the commit and processor measured


def bench_data_set(model: torch.nn.Module, tokenizer: Any, examples: list, args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list] = {layout: [] for layout in LAYOUTS}
    for _ in range(args.repeats):
        for layout in LAYOUTS:
            runs[layout].append(measure_layout(model, tokenizer, examples, layout, args.batch_size, args.seq_len,
                                               steps=args.steps))
    layouts = {}
    for layout, measured in runs.items():
        best = min(measured, key=lambda m: m.seconds)
        layouts[layout] = {**best.as_dict(), "all_seconds": [m.seconds for m in measured]}
    base = layouts["padding"]["tokens_per_second"]
    for row in layouts.values():
        row["speedup_over_padding"] = row["tokens_per_second"] / base
    pairs = [contamination(model, examples[2 * i], examples[2 * i + 1]) for i in range(args.pairs)]
    return {"layouts": layouts, "contamination": {
        "first_pair": pairs[0].as_dict(),
        "pairs": args.pairs,
        "mean_abs_naive_minus_alone": sum(abs(p.naive - p.alone) for p in pairs) / len(pairs),
        "max_abs_restarted_minus_alone": max(abs(p.restarted - p.alone) for p in pairs),
        "mean_abs_restarted_with_mask_minus_alone": sum(abs(p.restarted_with_mask - p.alone) for p in pairs) / len(pairs),
    }}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-pretrained")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=12, help="packed batches' worth of examples per layout")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default). On cores other processes share, 1 thread "
                             "measures steadily; more threads wait on each other and the timings scatter")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    start = time.perf_counter()
    config = RunConfig(model=args.model, lora_r=0, system_prompt="", max_seq_length=args.seq_len, eval_size=1,
                       exact_match_size=0)
    model, tokenizer = load_model(config)
    data_sets = {"finance": "finance", "skewed_mix": skewed_mix()}
    results = {}
    for name, dataset in data_sets.items():
        examples = list(load_data(config.replace(dataset=dataset), tokenizer).train)
        results[name] = bench_data_set(model, tokenizer, examples, args)
        row = results[name]["layouts"]
        print(f"{name}: " + ", ".join(f"{layout} {row[layout]['tokens_per_second']:.0f} tok/s "
                                      f"(x{row[layout]['speedup_over_padding']:.2f}, "
                                      f"pad {row[layout]['padding_fraction']:.0%})" for layout in LAYOUTS))
        print(f"  contamination, first pair: {results[name]['contamination']['first_pair']}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = {"args": vars(args), "config": config.to_dict(), "env": environment(),
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "cpu_count": os.cpu_count(), "wall_seconds": time.perf_counter() - start, "results": results}
    record(Path(__file__).resolve().parent / "results" / f"packing_{device}.json", result)


if __name__ == "__main__":
    main()
