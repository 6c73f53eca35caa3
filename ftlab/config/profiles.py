"""Workload profiles: one notebook, three sizes.

``ci`` keeps a chapter to seconds on two CPU cores (nbval in CI), ``cpu`` is long enough
that the effect a chapter teaches is really visible on a laptop (a few minutes), ``gpu``
is the full lesson. The profile sets sizes (steps, batch, sequence length, how much is
evaluated) and, from the machine, the precision (:func:`ftlab.config.precision.choose_precision`:
bf16 or fp16 autocast where it pays, fp32 elsewhere); the knobs a chapter studies are never
changed by it, and a chapter that studies precision passes ``bf16``/``fp16`` itself, which
then win.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from ftlab.config.precision import Capabilities, choose_precision, probe
from ftlab.config.run_config import RunConfig
from ftlab.errors import ArgumentError, ConfigError

PROFILES = ("ci", "cpu", "gpu")


@dataclass(frozen=True)
class Workload:
    """The sizes one profile gives a run."""

    name: str
    max_steps: int
    per_device_train_batch_size: int
    max_seq_length: int
    eval_steps: int
    eval_size: int
    exact_match_size: int

    def fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "name"}


WORKLOADS: dict[str, Workload] = {
    "ci": Workload("ci", max_steps=6, per_device_train_batch_size=4, max_seq_length=128,
                   eval_steps=3, eval_size=8, exact_match_size=8),
    "cpu": Workload("cpu", max_steps=48, per_device_train_batch_size=4, max_seq_length=128,
                    eval_steps=12, eval_size=48, exact_match_size=48),
    "gpu": Workload("gpu", max_steps=400, per_device_train_batch_size=16, max_seq_length=128,
                    eval_steps=50, eval_size=300, exact_match_size=300),
}
"""``max_seq_length`` is 128 on every profile so that SmolLM2 sees every finance example whole
with the default system prompt (the longest is 104 tokens; chapter 00 counts it): at 96, 258
of the 3000 training examples were cut without a warning, 157 of them inside the answer.
The knob chapters' byte-level model sets its own (:func:`knob_config`)."""


def profile_name(env: Mapping[str, str] | None = None, caps: Capabilities | None = None) -> str:
    """FTLAB_PROFILE if set, else ``gpu`` when CUDA is present, else ``cpu`` (an Apple GPU
    runs the laptop workload). ``env`` and ``caps`` default to this process and machine."""
    name = (os.environ if env is None else env).get("FTLAB_PROFILE", "").strip().lower()
    if not name:
        return "gpu" if (caps or probe()).device == "cuda" else "cpu"
    if name not in PROFILES:
        raise ConfigError("FTLAB_PROFILE", name, f"one of {', '.join(PROFILES)} (environment variable)")
    return name


def _checked_profile(profile: str | None, function: str, argument: str) -> str:
    """``profile``, or the current one when None. An unknown name is an ArgumentError naming
    the function the learner called (``base_config("gpux")``), not a RunConfig field: no
    field is called ``profile``."""
    if not profile:
        return profile_name()
    if profile not in WORKLOADS:
        raise ArgumentError(function, argument, profile, f"one of {', '.join(PROFILES)}")
    return profile


def workload(name: str | None = None) -> Workload:
    """The workload of a profile (default: the current one)."""
    return WORKLOADS[_checked_profile(name, "workload", "name")]


def _sized(profile: str, fields: dict[str, Any]) -> RunConfig:
    """The RunConfig of ``fields`` with the precision this machine gives the profile and model,
    unless ``fields`` set ``bf16`` or ``fp16`` themselves."""
    if "bf16" not in fields and "fp16" not in fields:
        fields = {**fields, **choose_precision(probe(), profile, fields.get("model", RunConfig.model)).fields()}
    return RunConfig(**fields)


def base_config(profile: str | None = None, **overrides: Any) -> RunConfig:
    """A RunConfig sized for the profile, with the chapter's own knobs in ``overrides``."""
    name = _checked_profile(profile, "base_config", "profile")
    return _sized(name, {**WORKLOADS[name].fields(), **overrides})


KNOB_STEPS = {"ci": 6, "cpu": 60, "gpu": 400}
"""Steps per run in the knob chapters (02-05, and 07's optimizers). Every compared arm runs
under each of :data:`KNOB_SEEDS`, so a chapter trains 12-40 of these; 60 steps of batch 8
(ten epochs of a 48-example split) is where the fine-tuning curve has flattened (eval loss
3.01 before, 1.18-1.37 after at the base rate in the committed chapters) at about a third of a minute per run
on 2 cores. The chapters' minutes are in benchmarks/README.md."""

KNOB_MODELS = {"ci": "tiny-pretrained", "cpu": "tiny-pretrained", "gpu": "smollm2-135m"}
"""The model the knob chapters fine-tune, per profile (see :func:`knob_config`)."""

KNOB_SEEDS = {"ci": (42, 43), "cpu": (42, 43, 44), "gpu": (42, 43, 44)}
"""Seeds every arm of a knob chapter is trained under, the same in each arm so that arms are
compared paired (``ftlab.experiments.stats.compare(..., paired=True)``). Three is the fewest that gives
an interval narrow enough to find the effects these chapters teach (with two, the 95% t
interval is 12.7 standard errors wide each way); ``ci`` keeps two, since CI checks code
paths, not verdicts."""


def knob_config(profile: str | None = None, **overrides: Any) -> RunConfig:
    """The base run of the knob chapters: a fine-tune of pretrained weights on every profile.

    On the ``ci`` and ``cpu`` profiles it is a full fine-tune of ``tiny-pretrained``, the
    1.5M-parameter byte-level Llama that :mod:`ftlab.setup.pretrain` pretrains on money prose
    (about 0.2 s a step on two cores, so five runs and a second seed fit in a few minutes);
    on ``gpu`` it is LoRA on the real SmolLM2-135M. The tiny base reads bytes and knows the
    domain but not the task, so it learns the answer format and some digits and scores
    near 0 exact match: these chapters judge runs by loss, not exact match.
    """
    name = _checked_profile(profile, "knob_config", "profile")
    w = WORKLOADS[name]
    if name == "gpu":
        base = dict(model=KNOB_MODELS[name], lora_r=16, lora_alpha=32, learning_rate=1e-3)
    else:
        base = dict(model=KNOB_MODELS[name], lora_r=0, learning_rate=1e-3, system_prompt="", max_seq_length=256,
                    per_device_train_batch_size=8, exact_match_size=0)
    sizes = dict(max_steps=KNOB_STEPS[name], eval_steps=max(1, KNOB_STEPS[name] // 5), eval_size=w.eval_size,
                 per_device_train_batch_size=w.per_device_train_batch_size, exact_match_size=w.exact_match_size,
                 max_seq_length=w.max_seq_length)
    return _sized(name, {**sizes, **base, **overrides})


@dataclass(frozen=True)
class Budget:
    """How long a protocol run trains: ``train_size`` examples (0 = the whole split) for
    ``max_steps`` steps, evaluated ``evaluations`` times along the way."""

    train_size: int
    max_steps: int
    evaluations: int

    def fields(self) -> dict[str, Any]:
        return {"train_size": self.train_size, "max_steps": self.max_steps,
                "eval_steps": max(1, self.max_steps // self.evaluations)}


FINISHED_BUDGETS: dict[str, Budget] = {
    "ci": Budget(train_size=32, max_steps=6, evaluations=2),
    "cpu": Budget(train_size=128, max_steps=128, evaluations=8),
    "gpu": Budget(train_size=0, max_steps=400, evaluations=4),
}
"""The knob base run trained until its validation curve has flattened (the tuning protocol's
budget, :mod:`ftlab.experiments.protocol`). On the ``cpu`` profile the tiny base reaches
that on a smaller split rather than in more steps: a full fine-tune on 512 examples is
still falling after 384 steps (6 epochs), while LoRA r=8 at 3e-3 on 128 examples falls
until about step 128-144 (8-9 epochs of batch 8) and is flat from there to 192, and at each
arm's own (higher) best rate chapter 06b's seeds reached their lowest validation loss by step
96-128 (benchmarks/README.md has the curves). So 128 steps (8 epochs) with the linear decay
ending there; every chapter prints :func:`~ftlab.experiments.protocol.flatness` for its arms
rather than trusting this. It evaluates once an epoch (16 steps), so "flattened" reads: the last
epoch moved the validation loss by less than the seed noise. ``ci`` checks code paths only and names no verdict."""


def finished_knob_config(profile: str | None = None, **overrides: Any) -> RunConfig:
    """:func:`knob_config` at the :data:`FINISHED_BUDGETS` budget of the profile: the base run
    of a chapter that follows the tuning protocol."""
    name = _checked_profile(profile, "finished_knob_config", "profile")
    return knob_config(name, **{**FINISHED_BUDGETS[name].fields(), **overrides})
