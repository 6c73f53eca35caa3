"""Transfer, measured: do the tiny base's three most-carried verdicts hold on SmolLM2-135M? (issue 39)

The knob chapters draw their verdicts on ``tiny-pretrained``, a 1.5M-parameter byte-level base, and their
takeaways say what should carry to a 7B LoRA fine-tune. This script runs three of those studies again, with
the same protocol, on LoRA over the real SmolLM2-135M-Instruct (preset ``smollm2-135m``: the shipped Q4_1
GGUF, de-quantized), and on the tiny base beside it (``--base tiny``), so that each verdict can be read on
both bases side by side.

The protocol is :mod:`ftlab.experiments.protocol`, used unchanged: the hyperparameters are named
(``Hyperparameters``), each arm is swept over a rate grid under ``SELECTION_SEED`` and chosen on the
validation split with the best interior (``tune_rates``, which widens a grid whose best sits at an end, twice
at most), and the verdicts come from ``report``: each arm at its chosen rate, retrained under fresh seeds,
scored on the test split, paired by seed, Bonferroni across arms, on the test loss and the answer-token
accuracy. On SmolLM2 (and in ``ci``) the report runs also score exact match (greedy answers to the first
``EXACT_MATCH`` test questions), compared the same way; the tiny base scores near 0 there, so it is not
scored. Every run lands in the run cache (``--runs``, default ftlab's), so a run that finished is never
trained again: after an interrupt, the same command resumes where it stopped.

Studies (``--study NAME``, default all):

* ``schedule`` (chapter 02, its arms exactly): linear decay to zero (the base, Trainer's default) against a
  constant rate, no warmup in either, each at its own best peak rate from its own grid (linear decay's one
  step higher: summed over the run it takes about half of constant's rate). The chosen rates are the
  "best rate" half of the study. Chapter 02's warmup question (its exercise) is not an arm here.
* ``batch`` (chapter 05, its arms exactly): batch 16 (the base) against batch 4 at equal data (the same
  examples read, so four times the optimizer steps), no accumulation, each batch at its own best rate
  (in place of a linear or square-root rule), linear decay over each arm's own steps.
* ``lora`` (chapter 06b, its arms exactly): at r=32, α=16, peft's scale α/r against rsLoRA's α/√r, each at
  its own best rate, linear decay without warmup (RunConfig's).

Every study is LoRA on the attention projections without LoRA dropout (``lora``: r=32 α=16; the others:
r=8 α=16, the knob chapters' recommended base).

Budget: the tiny base trains exactly as the protocol chapters do (``finished_knob_config``; ``cpu``: 128
examples, 128 steps of batch 8, 8 epochs, 4 evaluations of 48 validation examples). SmolLM2 is scaled
where its cost forces it, and only there. Measured on 2026-12-07 on the 2-core AMD EPYC with native bf16
(AVX512-BF16; bf16 autocast, as ``ftlab.config.precision`` chooses for SmolLM2 on such a CPU), one thread
per worker as the protocol's two workers run, with another process on the other core: a SmolLM2 LoRA
step of batch 8 (72 tokens an example on average, no system prompt) took 2.9-4.5 s (3.4 s on average over
4 steps), an evaluation of 48 validation examples about 10-20 s, and the end of a run (answer calibration
on validation, 100 test examples, 16 exact-match answers) 52 s. At 128 steps a run would take about 9
minutes and a study of 12 runs about an hour on two workers. So on the ``cpu`` profile SmolLM2 trains on
**64 examples for 32 steps of batch 8 (4 epochs)**: a quarter of the tiny base's sequences, half its
epochs, with the same batch, the same 4 evaluations of 48 validation examples, the whole test split (300)
for the verdicts, and exact match on 32 test questions. Every result records its budget in epochs and
whether each arm's curve had flattened (``flatness``: the last evaluation moved the validation loss by
less than the seed noise); ``--train-size`` and ``--steps`` change the SmolLM2 budget, recorded too. On the
``gpu`` profile nothing is scaled: ``finished_knob_config("gpu")``, the whole training split, 400 steps of
batch 16. ``ci`` replaces SmolLM2 by the tiny base and trains 2 steps, to check the code paths in seconds;
its numbers are no verdicts, and an arm whose best rate sits at an edge there gets the grid's middle rate
set by hand (labelled so) instead of a widened grid.

Cost (``--plan`` prints it for the chosen studies without training): on the ``cpu`` profile, 2 cores, a
SmolLM2 study is 6 selection runs (about 3 minutes each on one worker) and 6 report runs (about 5, with
the 300 test examples and the exact-match answers), about 25 minutes on two workers, about 28 with one
widened grid. The tiny base's version of a study takes 3-5 minutes.

Results: ``benchmarks/results/transfer_smollm2.json`` (through ``provenance.record``), one entry per study
with a slot per base (``smollm2``, ``tiny``): host and CPU, precision, the budget in epochs, each arm's rate
grid, scores and chosen rate, flatness, and each verdict (difference, interval, level, effect or can't
tell). A run of one base keeps the other base's slot from the file when both come from the same profile.
``benchmarks/results/transfer_smollm2.png`` draws every verdict on both bases side by side with its
interval (the loss as a share of the base arm's test loss, since nats per byte and per token differ).

    python benchmarks/transfer_smollm2.py --base tiny          # the tiny base's verdicts, a few minutes a study
    python benchmarks/transfer_smollm2.py                      # SmolLM2, about 30 minutes a study on 2 cores
    python benchmarks/transfer_smollm2.py --study lora --plan  # what would be trained, and an estimate
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from provenance import record  # benchmarks/provenance.py: the commit and processor measured
from provenance import cpu_model

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
NAME = "transfer_smollm2"
STUDIES = ("schedule", "batch", "lora")
BASES = ("smollm2", "tiny")
PROFILES = ("ci", "cpu", "gpu")

TINY = "tiny-pretrained"
SMOLLM2 = "smollm2-135m"

SMOLLM2_BUDGET = {"cpu": (64, 32)}
"""(training examples, steps of batch 8) of a SmolLM2 run per profile where its cost forces a smaller budget
than the tiny base's (see the module docstring); a profile not named here trains ``finished_knob_config``'s."""
CI_BUDGET = (8, 4, 2)
"""``ci``: (examples, steps, batch): a large-batch arm of one step (8 examples), a small-batch arm of four;
about a second a run."""
EVALUATIONS = 4
"""Evaluations per run, as the protocol's budget (``FINISHED_BUDGETS``); ``ci``: 2."""
EXACT_MATCH = {"ci": 4, "cpu": 32, "gpu": 300}
"""Test questions a SmolLM2 report run answers greedily for exact match (the tiny base: none, except in ci)."""
CI_TEST_SIZE = 8
"""Test examples a ``ci`` report run scores (the protocol's ci default is 32)."""
BATCHES = (16, 4)
"""The batch study's two batches, as chapter 05's (fewer where a ``ci`` run reads fewer examples)."""

_DECADE = {1e-4: (1e-4, 3e-4, 1e-3), 3e-4: (3e-4, 1e-3, 3e-3), 1e-3: (1e-3, 3e-3, 1e-2), 3e-3: (3e-3, 1e-2, 3e-2)}
GRIDS: dict[tuple[str, str], dict[str, tuple[tuple[float, ...], ...]]] = {
    ("tiny", "any"): {"schedule": (_DECADE[3e-3], _DECADE[1e-3]), "batch": (_DECADE[1e-3],) * 2,
                      "lora": (_DECADE[1e-3],) * 2},
    ("smollm2", "cpu"): {"schedule": (_DECADE[1e-3], _DECADE[3e-4]), "batch": (_DECADE[3e-4],) * 2,
                         "lora": (_DECADE[1e-3],) * 2},
    ("smollm2", "gpu"): {"schedule": (_DECADE[3e-4], _DECADE[1e-4]), "batch": (_DECADE[1e-4],) * 2,
                         "lora": (_DECADE[3e-4],) * 2},
}
"""Each study's rate grid per arm (in the arms' order) per base (and profile, for SmolLM2), three points a
decade. The tiny base's are the chapters' own (02: linear decay one step above constant; 05 and 06b: 1e-3
to 1e-2). SmolLM2's: at r=8, α=16 a
rate of 1e-3 lowered its validation loss from 2.58 to 1.58 nats per token in 4 steps of the timing run, so
the cpu grid is centred there; r=32, α=16 scales the adapter by a quarter of that (α/r 0.5 against 2), so
its grid sits a half-decade higher, and rsLoRA's α/√r (2.8) may widen it downwards. The gpu budget is 12
times as many steps, so its grids sit a half-decade lower."""

COST_PER_RUN = {
    # base, profile: (seconds a step of batch 8 on one worker, a forward example, an exact-match answer, a run's start)
    ("smollm2", "cpu"): (3.4, 0.25, 1.3, 8.0),
    ("tiny", "cpu"): (0.26, 0.01, 0.0, 3.0),
}
"""What ``--plan`` estimates with: one-thread worker seconds measured on the 2-core AMD EPYC (SmolLM2: the
timing run of the module docstring; tiny base: benchmarks/README.md, a protocol LoRA step 0.23-0.30 s)."""


@dataclass(frozen=True)
class Study:
    """One of the three studies: its question, its arms built from a base config, and its roles."""

    name: str
    chapters: str
    question: str
    scientific: dict[str, str]
    fixed: dict[str, str]
    arms: Callable[[Any], list[tuple[str, Any]]]
    """The (label, RunConfig) arms from the study's base config; the first is the baseline."""
    lora: tuple[int, int] = (8, 16)
    schedule: dict[str, Any] = dataclasses.field(default_factory=dict)


NUISANCE = {"learning_rate": "moves with every knob studied here (the step's size), so each arm gets its own"}


def _schedule_arms(base: Any) -> list[tuple[str, Any]]:
    return [("linear decay", base), ("constant", base.replace(lr_scheduler_type="constant"))]


def _batch_arms(base: Any) -> list[tuple[str, Any]]:
    """Chapter 05's arms: each batch reads the base's examples (steps x batch), in its own number of steps,
    evaluated as often as the base (``at_equal_data``)."""
    from ftlab.lessons.batch_size import at_equal_data

    examples = base.max_steps * base.per_device_train_batch_size
    big = min(BATCHES[0], examples)
    small = max(1, big * BATCHES[1] // BATCHES[0])
    return [(f"batch {b}, {examples // b} steps", at_equal_data(base, b)) for b in (big, small)]


def _lora_arms(base: Any) -> list[tuple[str, Any]]:
    return [("r=32, α=16 (α/r)", base), ("r=32, α=16, rsLoRA", base.replace(use_rslora=True))]


LORA_FIXED = {"lora_target_modules": "the attention projections, RunConfig's default",
              "lora_dropout": "off: a regulariser is a study of its own",
              "train_size": "the budget's split (SmolLM2: scaled to its cost, see the budget)",
              "max_steps": "the budget's steps, for the validation curve to flatten (flatness is recorded)"}

STUDY = {
    "schedule": Study(
        "schedule", "02", "Linear decay or a constant rate, each at its own best peak rate: does the schedule matter?",
        {"lr_scheduler_type": "linear decay to zero (Trainer's default) or a constant rate"},
        {"warmup_steps": "0 in both arms, as chapter 02", "lora_r": "8", "lora_alpha": "16", **LORA_FIXED},
        _schedule_arms),
    "batch": Study(
        "batch", "05", "Batch 16 or batch 4 at equal data (four times the steps), each batch at its own best rate?",
        {"per_device_train_batch_size": "16 or 4, no accumulation, the same examples read"},
        {"max_steps": "set by the batch: each arm reads the base's examples", "lr_scheduler_type":
         "RunConfig's linear decay, over each arm's own steps", "lora_r": "8", "lora_alpha": "16", **LORA_FIXED},
        _batch_arms),
    "lora": Study(
        "lora", "06b", "At r=32, α=16: rsLoRA's α/√r or peft's α/r, each at its own best rate?",
        {"use_rslora": "the scale α/√r instead of α/r"},
        {"lora_r": "32, where the two scales differ most in chapter 06b's range",
         "lora_alpha": "16: α/r is then 0.5 and α/√r about 2.8", "lr_scheduler_type": "RunConfig's linear decay", **LORA_FIXED},
        _lora_arms, lora=(32, 16)),
}


def model_of(base: str, profile: str) -> str:
    """The model a base trains: SmolLM2, except in ``ci`` (the tiny base stands in for it: seconds, not minutes)."""
    return TINY if base == "tiny" or profile == "ci" else SMOLLM2


def budget_of(base: str, profile: str, train_size: int | None = None, steps: int | None = None) -> dict[str, Any]:
    """The budget fields of a base's runs: the protocol's (``finished_knob_config``) unless SmolLM2's cost
    scales them (:data:`SMOLLM2_BUDGET`) or ``ci`` shrinks them; ``train_size``/``steps`` override SmolLM2's."""
    if profile == "ci":
        size, count, batch = CI_BUDGET
        return {"train_size": size, "max_steps": count, "eval_steps": 1, "per_device_train_batch_size": batch}
    if base != "smollm2" or not (profile in SMOLLM2_BUDGET or train_size or steps):
        return {}
    default = SMOLLM2_BUDGET.get(profile)
    size = train_size or (default[0] if default else 0)
    count = steps or (default[1] if default else 400)
    return {"train_size": size, "max_steps": count, "eval_steps": max(1, count // EVALUATIONS)}


def study_base(study: Study, base: str, profile: str, **budget: Any) -> Any:
    """The config every arm of ``study`` on ``base`` starts from."""
    from ftlab.config.profiles import finished_knob_config

    model = model_of(base, profile)
    fields: dict[str, Any] = dict(model=model, lora_r=study.lora[0], lora_alpha=study.lora[1], lora_dropout=0.0,
                                  exact_match_size=0,  # the report runs alone answer (run_study), not the sweeps
                                  **study.schedule, **budget_of(base, profile, **budget))
    if model == TINY:
        fields.update(system_prompt="", max_seq_length=256)  # as knob_config's ci and cpu base: bytes, no system turn
    return finished_knob_config(profile, **fields)


def grids_of(study: str, arms: Sequence[tuple[str, Any]], base: str, profile: str) -> dict[str, tuple[float, ...]]:
    """Each arm's rate grid: ``{label: grid}``."""
    key = ("tiny", "any") if model_of(base, profile) == TINY else ("smollm2", "gpu" if profile == "gpu" else "cpu")
    return {label: grid for (label, _), grid in zip(arms, GRIDS[key][study])}


def exact_match_size(base: str, profile: str) -> int:
    return EXACT_MATCH[profile] if base == "smollm2" or profile == "ci" else 0


# --- the progress bar ------------------------------------------------------------------------------------------

class RunBar:
    """A tqdm bar over one phase's runs, ticking as finished runs land in the run cache: the protocol's helpers
    train them (here or in worker processes) and print nothing while it runs. Runs found in the cache at the
    start count as done (a resumed study; with ``retrain`` none does); a run the phase adds (a widened grid)
    raises the total when its file appears."""

    def __init__(self, cache: Any, configs: Sequence[Any], desc: str, enabled: bool = True,
                 retrain: bool = False) -> None:
        from tqdm.auto import tqdm

        self.cache, self.retrain = cache, retrain
        self.names = {f"{cache.key_for(c)[0]}.json" for c in configs}
        self.start = time.time() - 1.0
        self.found = 0 if retrain else len(self.names & set(self._files()))
        self.bar = tqdm(total=len(self.names), desc=desc, unit="run", disable=not enabled, file=sys.stdout,
                        dynamic_ncols=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _files(self) -> dict[str, float]:
        """The cache's run files and their modification times."""
        return {p.name: p.stat().st_mtime for p in self.cache.files()}

    def done(self) -> int:
        files = self._files()
        fresh = {name for name, mtime in files.items() if mtime >= self.start}
        planned = self.names & (fresh if self.retrain else set(files))
        return len(planned) + len(fresh - self.names)

    def _update(self) -> None:
        done = self.done()
        self.bar.total = max(self.bar.total, done)
        self.bar.n = done
        self.bar.refresh()

    def _poll(self) -> None:
        while not self._stop.wait(2.0):
            self._update()

    def __enter__(self) -> "RunBar":
        self._update()
        if self.found:
            self.bar.set_postfix_str(f"{self.found} from the run cache")
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._update()
        self.bar.close()


# --- one study on one base -------------------------------------------------------------------------------------

def _comparison(c: Any, unit: str) -> dict[str, Any]:
    return {"difference": c.difference, "low": c.low, "high": c.high, "confidence": c.confidence, "effect": bool(c.effect),
            "verdict": "an effect" if c.effect else "can't tell", "seeds": c.n_a, "describe": c.describe(unit=unit)}


def _changed(cfg: Any, base: Any) -> dict[str, Any]:
    """The fields an arm changes from the study's base config."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(base, f.name)}


def run_study(name: str, base: str, profile: str, *, runs_dir: str | None, retrain: bool = False, bar: bool = True,
              train_size: int | None = None, steps: int | None = None) -> dict[str, Any]:
    """One study on one base, the protocol's three steps: name, tune on validation, report on test."""
    from ftlab.config.precision import choose_precision, probe
    from ftlab.experiments.protocol import (REPORT_SEEDS, SELECTION_SEED, SMALLEST_EFFECT, TEST_SIZES, Hyperparameters,
                                            RateChoice, epochs, flatness, report, tune_rates)
    from ftlab.experiments.stats import compare_to_baseline
    from ftlab.runs.cache import RunCache
    from ftlab.ui.plot import loss_unit

    study = STUDY[name]
    started = time.perf_counter()
    base_cfg = study_base(study, base, profile, train_size=train_size, steps=steps)
    arms = study.arms(base_cfg)
    baseline = arms[0][0]
    roles = Hyperparameters(scientific=study.scientific, nuisance=NUISANCE, fixed=study.fixed)
    grids = grids_of(name, arms, base, profile)
    unit = loss_unit([base_cfg])
    cache = RunCache(runs_dir)
    precision = choose_precision(probe(), profile, base_cfg.model)
    print(f"\n== {name} on {base} ({base_cfg.model}, {precision.name}, profile {profile}): {study.question}")
    print(roles.table(base_cfg))

    # Step 1: each arm's rate, chosen on validation under the selection seed
    planned = [cfg.replace(seed=SELECTION_SEED, learning_rate=v) for label, cfg in arms for v in grids[label]]
    with RunBar(cache, planned, f"{name}/{base}: rates", bar, retrain) as phase:
        choices = tune_rates(arms, grids, max_extensions=0 if profile == "ci" else 2, retrain=retrain,
                             runs_dir=runs_dir, progress=False)
    found = phase.found
    ready: dict[str, Any] = {}
    by_hand: list[str] = []
    for arm, choice in choices.items():
        if choice.interior:
            ready[arm] = choice
        elif profile == "ci":  # code paths only: the grid's middle, labelled as set by hand
            ready[arm] = RateChoice.fixed(arm, choice.base, choice.grid[len(choice.grid) // 2])
            by_hand.append(arm)
    exact = exact_match_size(base, profile)
    if exact:  # exact match scored at the end of the report runs only: it changes no step of training
        ready = {arm: dataclasses.replace(c, base=c.base.replace(exact_match_size=exact)) for arm, c in ready.items()}
    for choice in choices.values():
        print(choice.describe())

    result: dict[str, Any] = {
        "model": base_cfg.model, "precision": precision.name, "precision_reason": precision.reason,
        "question": study.question, "hyperparameters": roles.table(base_cfg), "unit": unit, "baseline": baseline,
        "budget": {"train_size": base_cfg.train_size, "max_steps": base_cfg.max_steps,
                   "batch": base_cfg.per_device_train_batch_size, "evaluations": base_cfg.max_steps // base_cfg.eval_steps,
                   "eval_size": base_cfg.eval_size},
        "scaled": bool(budget_of(base, profile, train_size, steps)) and base == "smollm2" and profile != "ci",
        "selection_seed": SELECTION_SEED, "grid": {arm: list(g) for arm, g in grids.items()},
        "arms": {arm: {"changes": _changed(cfg, base_cfg), "grid": list(choices[arm].grid),
                       "scores": [s if math.isfinite(s) else None for s in choices[arm].scores],
                       "chosen_rate": choices[arm].best, "interior": choices[arm].interior,
                       "set_by_hand": arm in by_hand, "describe": choices[arm].describe()} for arm, cfg in arms},
        "verdicts": {}, "lines": [],
    }

    # Step 2: the verdicts, on the test split under fresh seeds
    if baseline not in ready or len(ready) < 2:
        missing = [a for a, _ in arms if a not in ready]
        result["not_reported"] = (f"no interior best rate for {', '.join(missing)}: widen the grid (GRIDS) and run "
                                  f"the study again; its runs so far stay in the run cache")
        print(result["not_reported"])
    else:
        seeds = REPORT_SEEDS[profile]
        test_size = CI_TEST_SIZE if profile == "ci" else TEST_SIZES[profile]
        planned = [c.config().replace(test_size=test_size, seed=s) for c in ready.values() for s in seeds]
        with RunBar(cache, planned, f"{name}/{base}: report", bar, retrain) as phase:
            rep = report(ready, baseline, seeds=seeds, test_size=test_size, retrain=retrain, runs_dir=runs_dir,
                         progress=False)
        found += phase.found
        verdicts = {key: {arm: _comparison(c, "accuracy" if key == "test_token_accuracy" else unit)
                          for arm, c in per_arm.items()} for key, per_arm in rep.verdicts.items()}
        if exact:
            em = compare_to_baseline([float(r.metrics["exact_match"]) for r in rep.runs[baseline]],
                                     {a: [float(r.metrics["exact_match"]) for r in runs] for a, runs in rep.runs.items()
                                      if a != baseline}, paired=True)
            verdicts["exact_match"] = {arm: _comparison(c, "exact match") for arm, c in em.items()}
        lines = rep.lines(unit) + [f"  {arm} [exact_match, {exact} questions]: {v['describe']}"
                                   for arm, v in verdicts.get("exact_match", {}).items()]
        for arm, runs in rep.runs.items():
            flat = flatness(runs)
            means = {key: sum(float(r.metrics[key]) for r in runs) / len(runs)
                     for key in ("test_loss", "test_token_accuracy", "exact_match", "final_eval_loss") if key in runs[0].metrics}
            result["arms"][arm].update(flatness=flat.describe(), flat=flat.flat, report_means=means,
                                       seconds_per_step=sum(r.metrics.get("seconds_per_step", 0) for r in runs) / len(runs))
        effect, _ = rep.seeds_for_smallest_effect(next(a for a in rep.runs if a != baseline))
        result.update(verdicts=verdicts, lines=lines, report_seeds=list(seeds), test_size=test_size,
                      exact_match_size=exact, budget_text=rep.budget(), rates=rep.rates(),
                      smallest_effect={"share": SMALLEST_EFFECT, "value": effect,
                                       "seeds": {a: rep.seeds_for_smallest_effect(a)[1] for a in rep.runs if a != baseline}})
        result["budget"]["epochs"] = epochs(rep.runs[baseline][0])
        print("\n".join(f"{arm}: {result['arms'][arm]['flatness']}" for arm in rep.runs))
        print("\n".join(lines))
    result["runs_from_cache"] = found
    result["minutes"] = round((time.perf_counter() - started) / 60, 2)
    return result


# --- cost, results, figure -------------------------------------------------------------------------------------

def plan(name: str, base: str, profile: str, **budget: Any) -> dict[str, Any]:
    """The runs a study would train at least (no widened grid), and an estimate of its minutes on two
    one-thread workers where :data:`COST_PER_RUN` has figures for this base and profile."""
    from ftlab.experiments.protocol import REPORT_SEEDS, TEST_SIZES

    study = STUDY[name]
    base_cfg = study_base(study, base, profile, **budget)
    arms = study.arms(base_cfg)
    grids = grids_of(name, arms, base, profile)
    seeds = REPORT_SEEDS[profile]
    out: dict[str, Any] = {"selection_runs": sum(len(g) for g in grids.values()), "report_runs": len(arms) * len(seeds),
                           "model": base_cfg.model, "train_size": base_cfg.train_size, "max_steps": base_cfg.max_steps}
    cost = COST_PER_RUN.get((base, profile))
    if cost:
        step, forward, answer, start = cost

        def seconds(cfg: Any, test: int, exact: int) -> float:
            evaluations = cfg.max_steps // cfg.eval_steps + 1 + 1  # step 0, every eval_steps, calibration at the end
            return (start + cfg.max_steps * cfg.gradient_accumulation_steps * step * cfg.per_device_train_batch_size / 8
                    + evaluations * cfg.eval_size * forward + test * forward + exact * answer)

        test, exact = TEST_SIZES[profile], exact_match_size(base, profile)
        worker = sum(seconds(cfg, 0, 0) * len(grids[label]) + seconds(cfg, test, exact) * len(seeds)
                     for label, cfg in arms)
        widened = max(seconds(cfg, 0, 0) for _, cfg in arms)
        out.update(worker_minutes=round(worker / 60, 1), minutes_two_workers=round(worker / 120, 1),
                   minutes_with_one_widened_grid=round((worker / 2 + widened) / 60, 1))
    return out


def scaling_text(profile: str, train_size: int | None = None, steps: int | None = None) -> str:
    """How SmolLM2's budget differs from the tiny base's on this profile, in words for the results."""
    if profile == "ci":
        return "ci: the tiny base stands in for SmolLM2, 2 steps; code paths only, no verdicts"
    scaled = budget_of("smollm2", profile, train_size, steps)
    if not scaled:
        return f"none: SmolLM2 trains the protocol's {profile} budget (finished_knob_config), as the tiny base does"
    epochs = scaled["max_steps"] * 8 / scaled["train_size"] if scaled["train_size"] else float("nan")
    return (f"SmolLM2 on {profile}: {scaled['train_size']} examples, {scaled['max_steps']} steps of batch 8 "
            f"({epochs:.3g} epochs) against the tiny base's 128 examples, 128 steps (8 epochs); same batch, "
            f"evaluations, validation and test splits; chosen for its cost (see the script's docstring)")


def _load(path: Path, profile: str) -> dict[str, Any]:
    import json

    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return old if old.get("profile") == profile else {}


def host() -> dict[str, Any]:
    from ftlab.config.precision import probe
    from ftlab.training.parallel import default_workers, usable_cores
    from ftlab.training.train import environment

    caps = probe()
    return {"cpu": cpu_model(), "cores": usable_cores(), "cpu_bf16": caps.cpu_bf16, "cpu_capability": caps.cpu_capability,
            "device": caps.device, "device_name": caps.device_name, "environment": environment(),
            "workers": default_workers(os.environ.get("FTLAB_PROFILE", "cpu"), timed=False),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def figure(studies: dict[str, Any], path: Path, profile: str) -> Path:
    """Every verdict on both bases side by side: the loss as a share of the base arm's test loss, the accuracy
    and exact match in points; a filled marker is an effect, an open one can't tell."""
    from matplotlib.figure import Figure

    panels = [("test_loss", "test loss, % of the base arm's", True), ("test_token_accuracy", "answer-token accuracy, points", False),
              ("exact_match", "exact match, points", False)]
    fig = Figure(figsize=(15, 4.2), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True)
    rows = [(name, k, arm) for name in STUDIES for k, arm in enumerate(_arms_of(studies.get(name, {})))]
    for ax, (key, title, relative) in zip(axes, panels):
        for i, (name, k, _) in enumerate(rows):
            for j, base in enumerate(BASES):
                slot = (studies.get(name) or {}).get(base) or {}
                per_arm = list(slot.get("verdicts", {}).get(key, {}).values())  # arms pair by position across bases
                v = per_arm[k] if k < len(per_arm) else None
                if not v:
                    continue
                scale = 100 / slot["arms"][slot["baseline"]]["report_means"]["test_loss"] if relative else 100
                y = i + (0.15 if j == 0 else -0.15)
                x, lo, hi = v["difference"] * scale, v["low"] * scale, v["high"] * scale
                ax.errorbar([x], [y], xerr=[[x - lo], [hi - x]], fmt="o" if j == 0 else "s", color=f"C{j}", capsize=3,
                            mfc=f"C{j}" if v["effect"] else "white", label=f"{base} ({slot['model']})")
        ax.axvline(0, color="0.5", lw=1)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_yticks(range(len(rows)), [f"{name}: {arm}\nminus {studies[name][_first(studies[name])]['baseline']}"
                                          for name, _, arm in rows], fontsize=8)
    axes[0].invert_yaxis()
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        axes[0].legend(unique.values(), unique.keys(), fontsize=8, loc="best")
    fig.suptitle(f"Each verdict on the tiny base and on SmolLM2-135M LoRA ({profile} profile), each arm at its own best "
                 "rate (interval: family-wise, paired by seed; filled: an effect, open: can't tell)", fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def table(studies: dict[str, Any]) -> str:
    """The results as a Markdown table, one row per study, arm and base (what benchmarks/README.md and the
    closing note show), with whether each tiny-base verdict held on SmolLM2 (``ftlab.experiments.transfer``)."""
    from ftlab.experiments.transfer import held_verdict

    rows = ["| study | arm minus baseline | base | budget | chosen rates | test loss | answer-token accuracy | "
            "exact match | held on SmolLM2? |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    cell = lambda v, unit: f"{v['difference']:+.3f} {unit} [{v['low']:+.3f}, {v['high']:+.3f}], {v['verdict']}" if v else "–"
    for name in STUDIES:
        entry = studies.get(name) or {}
        tiny_arms = list(((entry.get("tiny") or {}).get("verdicts") or {}).get("test_loss", {}))
        for base in BASES:
            slot = entry.get(base) or {}
            verdicts = slot.get("verdicts") or {}
            # arms pair by position: SmolLM2's scaled budget renames them ("batch 4, 64 steps" for 256)
            for i, arm in enumerate(verdicts.get("test_loss", {})):
                rates = ", ".join(f"{a} {v['chosen_rate']:g}" + (" (set by hand)" if v.get("set_by_hand") else "")
                                  if v.get("chosen_rate") is not None else f"{a}: no interior best"
                                  for a, v in slot["arms"].items())
                held = ""
                if base == "smollm2" and i < len(tiny_arms):
                    held = "; ".join(f"{k.replace('test_', '').replace('_', ' ')}: "
                                     f"{held_verdict(entry['tiny']['verdicts'][k][tiny_arms[i]], verdicts[k][arm])}"
                                     for k in ("test_loss", "test_token_accuracy"))
                rows.append(f"| {name} | {arm} minus {slot['baseline']} | {base} ({slot['precision']}) | "
                            f"{slot['budget_text']} | {rates} | {cell(verdicts['test_loss'].get(arm), slot['unit'])} | "
                            f"{cell(verdicts['test_token_accuracy'].get(arm), 'accuracy')} | "
                            f"{cell(verdicts.get('exact_match', {}).get(arm), 'exact match')} | {held} |")
    return "\n".join(rows)


def _first(entry: dict[str, Any]) -> str:
    return next(b for b in BASES if entry.get(b))


def _arms_of(entry: dict[str, Any]) -> list[str]:
    """The compared arms of a study, named as on the first base measured; the bases' arms pair by position
    (SmolLM2's scaled budget renames an arm: "batch 4, 64 steps" for the tiny base's 256)."""
    for base in BASES:
        arms = list(((entry.get(base) or {}).get("verdicts") or {}).get("test_loss", {}))
        if arms:
            return arms
    return []


@contextmanager
def _profile(name: str) -> Iterator[None]:
    """FTLAB_PROFILE set to ``name`` for the protocol's defaults (seeds, test size, workers) and the workers it
    starts; the caller's value is put back afterwards."""
    old = os.environ.get("FTLAB_PROFILE")
    os.environ["FTLAB_PROFILE"] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FTLAB_PROFILE", None)
        else:
            os.environ["FTLAB_PROFILE"] = old


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", choices=(*STUDIES, "all"), default="all")
    parser.add_argument("--profile", choices=PROFILES, default="cpu",
                        help="ci: the tiny base for SmolLM2 and 2 steps (seconds); cpu: 2 cores; gpu: the full budget")
    parser.add_argument("--base", choices=(*BASES, "both"), default="smollm2",
                        help="smollm2 (default), tiny (the tiny base's verdicts, cheap) or both")
    parser.add_argument("--runs", default=None, help="run cache folder (default: FTLAB_RUNS or ftlab's)")
    parser.add_argument("--out", default=str(RESULTS), help="folder of the JSON and the figure")
    parser.add_argument("--train-size", type=int, default=None, help="SmolLM2's training examples (cpu default 64)")
    parser.add_argument("--steps", type=int, default=None, help="SmolLM2's steps of batch 8 (cpu default 32)")
    parser.add_argument("--retrain", action="store_true", help="ignore the run cache")
    parser.add_argument("--plan", action="store_true", help="print the runs and the estimated minutes; train nothing")
    parser.add_argument("--no-bar", action="store_true", help="no progress bar")
    parser.add_argument("--table", action="store_true", help="print the results file as a Markdown table; train nothing")
    args = parser.parse_args(argv)
    if args.table:
        text = table(_load(Path(args.out) / f"{NAME}.json", args.profile).get("studies", {}))
        print(text)
        return {"table": text}
    studies = list(STUDIES) if args.study == "all" else [args.study]
    bases = list(BASES) if args.base == "both" else [args.base]
    budget = dict(train_size=args.train_size, steps=args.steps)
    with _profile(args.profile):
        if args.plan:
            plans = {f"{s}/{b}": plan(s, b, args.profile, **budget) for s in studies for b in bases}
            for key, value in plans.items():
                print(key, value)
            return {"plan": plans}
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{NAME}.json"
        result = _load(path, args.profile)
        entries = result.get("studies", {})
        for name in studies:
            for base in bases:
                entry = entries.setdefault(name, {"chapters": STUDY[name].chapters, "question": STUDY[name].question,
                                                  "smollm2": None, "tiny": None})
                entry[base] = run_study(name, base, args.profile, runs_dir=args.runs, retrain=args.retrain,
                                        bar=not args.no_bar, **budget)
                result = {"issue": 39, "profile": args.profile, "host": host(),
                          "protocol": "ftlab.experiments.protocol: tune_rates (interior best, validation, seed 7), "
                                      "report (test split, fresh seeds, paired, Bonferroni)",
                          "smollm2_budget_scaling": scaling_text(args.profile, **budget),
                          "studies": entries}
                record(path, result)  # after every study, so an interrupt keeps what finished
        figure(entries, out / f"{NAME}.png", args.profile)
        print(f"\nwrote {path} and {out / f'{NAME}.png'}")
    return result


if __name__ == "__main__":
    from ftlab.foundation.jupyter import quiet_libraries

    quiet_libraries()  # no datasets/transformers bars between the runs' bar (not on import: a test imports main)
    main()
