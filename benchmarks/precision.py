"""Does bf16 pay on this CPU? Matmul peaks, step times, model FLOPs utilisation and the loss it costs.

What ``ftlab.config.precision`` decides rests on these figures; run this on a CPU to see them
for that CPU (``python benchmarks/precision.py --threads 2``):

1. **peak**: the best of a few 2048 x 2048 matmuls, fp32 and bf16 (GFLOP/s).
2. **steps**: one optimizer step (forward, backward, AdamW, as ``load_model`` prepares the
   model and Trainer builds the optimizer) on random tokens without padding, fp32 vs bf16
   autocast, for the two models the chapters train on a CPU: ``tiny-pretrained`` (full
   fine-tune, batch 8 x 256, the knob chapters) and SmolLM2-135M with LoRA r=8 (batch
   4 x 128), plus SmolLM2 fully fine-tuned in fp32 and, where bf16 is native, LoRA with the
   frozen base kept in bf16 (adapters fp32), the way to stop autocast casting the frozen
   weights again every step, with and without LoRA's dropout (its random masks are drawn on
   the CPU at every step). The fastest of ``--steps`` timed steps after one warm-up counts
   (other processes only ever slow a step down); model FLOPs utilisation (MFU) is
   6 x parameters x tokens/s over the peak of the step's precision. Where bf16 is emulated a
   SmolLM2 bf16 step takes minutes: it is timed once.
3. **profile** (native bf16 only): where the time of the bf16-base LoRA step goes, the share
   of each of its costliest operators (torch.profiler), which says why a step stays far below
   the matmul peak.
4. **loss**: chapter 01's run (``base_config("cpu")`` with chapter 01's knobs: SmolLM2 LoRA r=8,
   48 steps of batch 4 x 96, eval loss on 48 validation questions every 12 steps; exact match
   left out, the loss is what is compared) in fp32 under seeds 42 and 43, and in bf16 under
   seed 42: the bf16 - fp32 difference printed beside the seed noise. On a CPU without native
   bf16 a real bf16 run would take over an hour, so bf16's numerics are emulated there: every
   operation autocast runs in bf16 gets its operands rounded to bf16 and its result rounded
   to bf16 and returned as bf16 (what a bf16 kernel accumulating in fp32 computes), on fp32
   kernels; backward then rounds the same gradients autocast would. A one-batch check against
   real bf16 autocast is recorded beside it (``emulation_check``).

The load average is recorded with each figure: the machine may be shared, and ``--parts``
measures some parts again (after a busy spell) while the file keeps the others. Results go to
``benchmarks/results/precision_<device>.json``; ``benchmarks/README.md`` records them.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

from ftlab import RunConfig, load_model, train
from ftlab.config.precision import probe
from ftlab.config.profiles import base_config, knob_config
from ftlab.foundation.storage import write_json_atomic
from ftlab.setup.models import count_parameters
from ftlab.training.arguments import training_optimizer
from ftlab.training.train import environment

AUTOCAST_BF16_OPS = frozenset({F.linear, F.scaled_dot_product_attention, torch.matmul, torch.Tensor.matmul,
                               torch.Tensor.__matmul__, torch.mm, torch.bmm, torch.addmm, torch.baddbmm})
"""The operations of a Llama step that CPU autocast runs in bf16 (its lower-precision list)."""


def _round_bf16(value: Any) -> Any:
    return value.to(torch.bfloat16).float() if isinstance(value, torch.Tensor) and value.is_floating_point() else value


class EmulatedBf16(TorchFunctionMode):
    """bf16 autocast's numerics on fp32 kernels (see the module docstring, 4.)."""

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func not in AUTOCAST_BF16_OPS:
            return func(*args, **(kwargs or {}))
        args, kwargs = tree_map(_round_bf16, (args, kwargs or {}))
        return func(*args, **kwargs).to(torch.bfloat16)


def precision_context(kind: str) -> contextlib.AbstractContextManager:
    """``fp32``: nothing; ``bf16``: CPU autocast as Trainer(bf16=True) enters it; ``emulated``: :class:`EmulatedBf16`."""
    if kind == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return EmulatedBf16() if kind == "emulated" else contextlib.nullcontext()


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5, budget_s: float = 20.0) -> dict[str, Any]:
    """GFLOP/s of the fastest n x n matmul; a matmul slower than 1 s is timed once, without warm-up."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < repeats + 1 and time.perf_counter() - started < budget_s:
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
        if times[0] > 1.0:
            break
    timed = times[1:] or times
    return {"gflops": 2 * n ** 3 / min(timed) / 1e9, "seconds": min(timed), "samples": len(timed), "load": load()}


def training_step(config: RunConfig, kind: str, bf16_base: bool = False) -> tuple[Callable[[], None], torch.nn.Module, int]:
    """One optimizer step (forward, backward, AdamW, as ``load_model`` prepares the model and Trainer builds the
    optimizer) on a fixed batch of random tokens without padding, as a function to call; with the model and
    the batch's token count."""
    model, _ = load_model(config)
    if bf16_base:
        for p in model.parameters():
            if not p.requires_grad:
                p.data = p.data.to(torch.bfloat16)
    optimizer = training_optimizer(config, model)
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (config.per_device_train_batch_size, config.max_seq_length),
                        generator=torch.Generator().manual_seed(0))

    def step() -> None:
        with precision_context(kind):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step, model, ids.numel()


def step_time(config: RunConfig, kind: str, steps: int, bf16_base: bool = False) -> dict[str, Any]:
    """The fastest of ``steps`` optimizer steps after one warm-up (see the module docstring, 2.)."""
    step, model, tokens = training_step(config, kind, bf16_base)
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    parameters = count_parameters(model)[0]
    tokens_per_s = tokens / min(times[1:])
    return {"seconds": min(times[1:]), "all_seconds": times, "parameters": parameters, "tokens_per_second": tokens_per_s,
            "model_flops_per_second": 6 * parameters * tokens_per_s, "load": load()}


def step_profile(config: RunConfig, kind: str, bf16_base: bool, top: int = 8) -> dict[str, Any]:
    """Where one step's time goes: the share of the step of each of the ``top`` operators by their own CPU
    time (torch.profiler), after one warm-up step. Why a step stays far below the matmul peak."""
    step, _, _ = training_step(config, kind, bf16_base)
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    return {"total_seconds": total / 1e6, "load": load(),
            "shares": {e.key: round(e.self_cpu_time_total / total, 4) for e in ops[:top]},
            "calls": {e.key: e.count for e in ops[:top]}}


def step_cases(native: bool, steps: int) -> dict[str, tuple[RunConfig, str, int, bool]]:
    """name -> (config, precision, timed steps, frozen base in bf16)."""
    tiny = knob_config("cpu", bf16=False)  # tiny-pretrained, full fine-tune, batch 8 x 256
    lora = RunConfig(model="smollm2-135m", lora_r=8, lora_alpha=16, per_device_train_batch_size=4, max_seq_length=128)
    slow = steps if native else 1  # emulated bf16: a SmolLM2 step takes minutes
    cases = {"tiny-pretrained full fp32": (tiny, "fp32", steps, False),
             "tiny-pretrained full bf16": (tiny, "bf16", steps, False),
             "smollm2-135m lora fp32": (lora, "fp32", steps, False),
             "smollm2-135m lora bf16": (lora, "bf16", slow, False),
             "smollm2-135m full fp32": (lora.replace(lora_r=0), "fp32", steps, False)}
    if native:
        cases["smollm2-135m lora bf16, bf16 base"] = (lora, "bf16", steps, True)
        cases["smollm2-135m lora bf16, bf16 base, no dropout"] = (lora.replace(lora_dropout=0.0), "bf16", steps, True)
        cases["smollm2-135m full bf16"] = (lora.replace(lora_r=0), "bf16", steps, False)
    return cases


def emulation_check(config: RunConfig) -> dict[str, Any]:
    """Loss and gradients of one batch in fp32, real bf16 autocast and emulated bf16: how close
    the emulation comes to real bf16, beside how far fp32 is from it."""
    model, _ = load_model(config)
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (config.per_device_train_batch_size, config.max_seq_length),
                        generator=torch.Generator().manual_seed(1))
    out = {}
    for kind in ("fp32", "bf16", "emulated"):
        model.zero_grad()
        with precision_context(kind):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        out[kind] = (loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))

    def gap(a: str, b: str) -> dict[str, float]:
        return {"loss": abs(out[a][0] - out[b][0]),
                "gradient_relative": float((out[a][1] - out[b][1]).norm() / out[b][1].norm())}

    return {"model": config.model, "batch": [config.per_device_train_batch_size, config.max_seq_length],
            "loss": {k: v[0] for k, v in out.items()}, "fp32_vs_bf16": gap("fp32", "bf16"),
            "emulated_vs_bf16": gap("emulated", "bf16"), "load": load()}


@contextlib.contextmanager
def _timed(label: str) -> Iterator[None]:
    t = time.perf_counter()
    yield
    print(f"  {label}: {time.perf_counter() - t:.0f} s, load {load()}", flush=True)


def chapter01_runs(bf16_kind: str) -> dict[str, Any]:
    """Chapter 01's run in fp32 at two seeds and in bf16 (real or emulated) at the first."""
    config = base_config("cpu", model="smollm2-135m", learning_rate=1e-3, lora_r=8, lora_alpha=16,
                         lr_scheduler_type="linear", warmup_steps=0.1, exact_match_size=0, bf16=False)
    arms = {"fp32 seed 42": (config, "fp32"), "fp32 seed 43": (config.replace(seed=43), "fp32"),
            f"{bf16_kind} seed 42": (config.replace(bf16=bf16_kind == "bf16"), bf16_kind)}
    runs = {}
    for label, (cfg, kind) in arms.items():
        with _timed(label), (EmulatedBf16() if kind == "emulated" else contextlib.nullcontext()):
            run = train(cfg, retrain=True, save=False, progress=False)
        runs[label] = {"final_eval_loss": run.metrics["final_eval_loss"], "train_loss": run.metrics["train_loss"],
                       "evals": [(e["step"], e["eval_loss"]) for e in run.evals],
                       "seconds_per_step": run.metrics.get("seconds_per_step"), "load": load()}
    fp32, other, bf16 = (runs[k]["final_eval_loss"] for k in arms)
    return {"config": config.to_dict(), "bf16_numerics": bf16_kind, "runs": runs,
            "seed_noise_final_eval_loss": abs(fp32 - other), "bf16_minus_fp32_final_eval_loss": bf16 - fp32}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2, as the figures quoted)")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per case, after one warm-up")
    parser.add_argument("--parts", nargs="+", choices=("peak", "steps", "profile", "loss"),
                        default=["peak", "steps", "profile", "loss"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    caps = probe()
    native = bool(caps.cpu_bf16)
    path = Path(__file__).resolve().parent / "results" / f"precision_{caps.device}.json"
    # a part measured again replaces its old figures; the others are kept (each figure has its own load)
    result: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    result.update(env=environment(), capabilities=dataclasses.asdict(caps), cpu_count=os.cpu_count())
    session = {"args": vars(args), "date": time.strftime("%Y-%m-%d %H:%M"), "load_before": load()}
    start = time.perf_counter()
    if "peak" in args.parts:
        result["peak"] = {str(d).removeprefix("torch."): matmul_peak(d) for d in (torch.float32, torch.bfloat16)}
        print({k: f"{v['gflops']:.1f} GFLOP/s" for k, v in result["peak"].items()}, flush=True)
    if "steps" in args.parts:
        result["steps"] = {}
        for name, (config, kind, steps, bf16_base) in step_cases(native, args.steps).items():
            row = result["steps"][name] = step_time(config, kind, steps, bf16_base)
            if "peak" in result and (kind == "fp32" or native):  # emulated bf16 has no ceiling to speak of:
                peak = result["peak"]["float32" if kind == "fp32" else "bfloat16"]["gflops"]  # its rate varies by shape
                row["mfu"] = row["model_flops_per_second"] / 1e9 / peak
            print(f"{name}: {row['seconds']:.3f} s/step, MFU {row.get('mfu', float('nan')):.0%}, load {row['load']}",
                  flush=True)
    if "profile" in args.parts and native:
        lora = step_cases(native, 1)["smollm2-135m lora bf16, bf16 base"][0]
        result["profile"] = {"case": "smollm2-135m lora bf16, bf16 base", **step_profile(lora, "bf16", True)}
        print({k: f"{v:.0%}" for k, v in result["profile"]["shares"].items()}, flush=True)
    if "loss" in args.parts:
        result["emulation_check"] = [emulation_check(knob_config("cpu", bf16=False, per_device_train_batch_size=4)),
                                     emulation_check(RunConfig(model="smollm2-135m", per_device_train_batch_size=1,
                                                               max_seq_length=96))]
        result["loss"] = chapter01_runs("bf16" if native else "emulated")
        loss = result["loss"]
        print(f"chapter 01, final eval loss: bf16 - fp32 {loss['bf16_minus_fp32_final_eval_loss']:+.4f}, "
              f"seed noise {loss['seed_noise_final_eval_loss']:.4f}", flush=True)
    session.update(load_after=load(), wall_seconds=time.perf_counter() - start)
    result["sessions"] = [*result.get("sessions", []), session]
    write_json_atomic(path, result)


if __name__ == "__main__":
    main()
