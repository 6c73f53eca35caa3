"""The tuning protocol of every knob chapter, with the bookkeeping done in code.

The Deep Learning Tuning Playbook's method, in the order a chapter runs it:

1. **Name** the scientific hyperparameter (the one studied), the nuisance ones (re-tuned
   for every arm, almost always the learning rate) and the fixed ones: :class:`Hyperparameters`.
2. **Budget**: runs train until the validation curve has flattened, which
   :func:`flatness` checks and every verdict line states in epochs.
3. **Each arm at its own best rate**: :func:`tune_rates` sweeps a grid of at least three
   rates per arm under one selection seed, extends the grid when the best sits at an end,
   and refuses to name a best that is still at an end (:class:`RateChoice`). A knob that
   changes the effective step size (batch size, α/r, rsLoRA, optimizer, schedule) compared
   at one shared rate measures the rate, not the knob.
4. **Choose on validation, report on test**: :func:`report` trains each chosen arm under
   fresh seeds and compares them on the test split, which nothing was chosen on. It
   refuses a verdict on the validation split or under a seed used for selection.
5. **Read it**: intervals from :mod:`ftlab.stats` (paired by seed, Bonferroni across arms),
   a task metric beside the loss, and the seeds a smallest effect of interest fixed in
   advance (:data:`SMALLEST_EFFECT`) would need at the measured spread.

A comparison that reads the validation split it selected on is biased towards the arm
whose rate happened to get lucky on that split and seed (the winner's curse); a best at a
grid's edge says only that the best lies further out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from ftlab.config.profiles import profile_name
from ftlab.config.run_config import RunConfig
from ftlab.errors import FtlabError
from ftlab.runs.record import Run
from ftlab.experiments.stats import SEEDS_CAP, Comparison, compare_to_baseline
from ftlab.experiments.sweep import arms
from ftlab.runs.table import metric
from ftlab.training.parallel import default_workers, train_in_workers
from ftlab.training.train import train

SELECTION_SEED = 7
"""The one seed rates are chosen under. No reporting seed equals it (:data:`REPORT_SEEDS`)."""

REPORT_SEEDS: dict[str, tuple[int, ...]] = {"ci": (101, 102), "cpu": (101, 102, 103), "gpu": (101, 102, 103)}
"""Fresh seeds the chosen arms are trained under for the verdict, per profile."""

TEST_SIZES: dict[str, int] = {"ci": 32, "cpu": 300, "gpu": 300}
"""Test examples a reported run scores, per profile: the whole shipped test split, except in
``ci``, which checks code paths."""

SELECTION_KEY = "final_eval_loss"
"""What a rate is chosen on: the validation loss of the weights a run ends with."""

REPORT_KEYS: dict[str, str] = {"test_loss": "nats/token", "test_token_accuracy": "accuracy"}
"""Metrics a verdict may read, with their unit: the test split's loss and task metric."""

SMALLEST_EFFECT = 0.02
"""The smallest effect of interest, fixed before any run: 2% of the baseline arm's test
loss. A chapter prints the seeds that would detect it at the spread it measured, rather
than a power statement computed from the difference it happened to observe."""


class ProtocolError(FtlabError, ValueError):
    """A step of the protocol was skipped or would bias the verdict; the message says which
    and how to fix it."""


@dataclass(frozen=True)
class Hyperparameters:
    """What a chapter studies, what it re-tunes per arm, and what it holds fixed, each with
    one line on why."""

    scientific: Mapping[str, str]
    nuisance: Mapping[str, str]
    fixed: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.scientific:
            raise ProtocolError("Hyperparameters(scientific=...) is empty: name the knob the chapter studies")
        clash = (set(self.scientific) & set(self.nuisance)) | (set(self.scientific) & set(self.fixed)) \
            | (set(self.nuisance) & set(self.fixed))
        if clash:
            raise ProtocolError(f"{sorted(clash)} named in two roles: a hyperparameter is scientific, nuisance "
                                "or fixed, not two of them")

    def table(self, base: RunConfig | None = None) -> str:
        """The three roles as text; with ``base``, each fixed knob's value in it."""
        lines = []
        for role, names in (("scientific", self.scientific), ("nuisance (re-tuned per arm)", self.nuisance),
                            ("fixed", self.fixed)):
            for name, why in names.items():
                value = f" = {getattr(base, name)!r}" if base is not None and role == "fixed" and hasattr(base, name) else ""
                lines.append(f"{role:28s} {name}{value}: {why}")
        return "\n".join(lines)


@dataclass(frozen=True)
class RateChoice:
    """One arm's rate sweep under the selection seed, and the rate it chose (None at an edge)."""

    arm: str
    base: RunConfig
    field: str
    grid: tuple[float, ...]
    scores: tuple[float, ...]
    """The selection metric at each grid point (validation; a diverged run scores +inf)."""
    best: float | None
    seed: int = SELECTION_SEED

    @classmethod
    def fixed(cls, arm: str, base: RunConfig, value: float, field: str = "learning_rate") -> "RateChoice":
        """An arm at a rate set by hand, not chosen: for showing what one shared rate would
        have concluded. It has no sweep (``grid`` is the one value, ``scores`` empty)."""
        return cls(arm, base, field, (float(value),), (), float(value))

    @property
    def interior(self) -> bool:
        return self.best is not None

    def config(self) -> RunConfig:
        """The arm's config at its chosen rate; refuses when the best sat at an edge."""
        if self.best is None:
            edge = "lowest" if self.scores.index(min(self.scores)) == 0 else "highest"
            raise ProtocolError(f"arm {self.arm!r}: the best {self.field} is the {edge} of the grid "
                                f"{_values_text(self.grid)}, so the true best lies beyond it; extend the grid "
                                f"(tune_rates(..., max_extensions=...)) before comparing this arm")
        return self.base.replace(**{self.field: self.best})

    def describe(self) -> str:
        if not self.scores:
            return f"{self.arm}: {self.field} {self.best:g}, set by hand (no sweep)"
        tried = ", ".join(f"{v:g}: {s:.3f}" if math.isfinite(s) else f"{v:g}: diverged"
                          for v, s in zip(self.grid, self.scores))
        chosen = f"{self.best:g} (interior)" if self.best is not None else "none (best at the grid's edge)"
        return f"{self.arm}: {self.field} {chosen}; validation loss at seed {self.seed}: {tried}"


def interior_best(scores: Sequence[float]) -> int | None:
    """The index of the lowest score when it is neither end of the grid, else None.

    Ties go to the first lowest, and a grid of fewer than three points has no interior."""
    if len(scores) < 3:
        return None
    i = min(range(len(scores)), key=lambda k: scores[k])
    return i if 0 < i < len(scores) - 1 else None


def _score(run: Run, key: str) -> float:
    if run.metrics.get("diverged"):
        return math.inf
    value = metric(run, key)
    return float(value) if value is not None and math.isfinite(value) else math.inf


def _check_grid(grid: Sequence[float], name: str) -> tuple[float, ...]:
    values = tuple(sorted(float(v) for v in grid))
    if len(values) < 3 or len(set(values)) != len(values) or values[0] <= 0:
        raise ProtocolError(f"{name}={list(grid)!r}: give at least 3 distinct positive values, so that a best can "
                            "be interior (e.g. [1e-3, 3e-3, 1e-2])")
    return values


def _widened(grid: tuple[float, ...], scores: Sequence[float], limit: float) -> tuple[float, ...] | None:
    """The grid with one more point beyond the end that holds the best, at the grid's mean
    spacing in log space rounded to a round number (1, 2, 3 or 5 times a power of ten), or
    None when that point would reach ``limit``."""
    ratio = (grid[-1] / grid[0]) ** (1 / (len(grid) - 1))
    low = scores.index(min(scores)) == 0
    new = _round_number(grid[0] / ratio if low else grid[-1] * ratio)
    if new >= limit or new in grid:
        return None
    return tuple(sorted((*grid, new)))


def _round_number(x: float) -> float:
    """The number of the form m x 10^k, m in (1, 2, 3, 5, 10), nearest to ``x`` in log space."""
    k = math.floor(math.log10(x))
    return min((float(f"{m}e{k}") for m in (1, 2, 3, 5, 10)), key=lambda v: abs(math.log(v / x)))


def tune_rates(configs: Sequence[tuple[str, RunConfig]], grid: Sequence[float] | Mapping[str, Sequence[float]], *,
               field: str = "learning_rate",
               seed: int = SELECTION_SEED, key: str = SELECTION_KEY, max_extensions: int = 2, limit: float = 1.0,
               retrain: bool = False, runs_dir: str | Path | None = None, progress: bool = True,
               workers: int | None = None) -> dict[str, RateChoice]:
    """Each (label, config) arm swept over ``grid`` values of ``field`` under ``seed``, chosen on
    ``key`` (validation): ``{label: RateChoice}``.

    ``grid`` is one grid for every arm, or ``{label: grid}`` where the arms' rates live on
    different scales (Lion's a few times below AdamW's): all arms still train together, so
    the workers never wait on one arm's sweep.

    Where an arm's best sits at an end of its grid, one point beyond that end is added, up to
    ``max_extensions`` times (never reaching ``limit``); an arm still best at an end gets
    ``best=None``, and :meth:`RateChoice.config` then refuses to compare it. Runs missing from
    the cache train in ``workers`` processes, all arms together.
    """
    if key in REPORT_KEYS:
        raise ProtocolError(f"key={key!r} reads the test split: choose rates on the validation split "
                            f"(key={SELECTION_KEY!r}) and keep the test split for the verdict")
    if isinstance(grid, Mapping):
        missing = [label for label, _ in configs if label not in grid]
        if missing:
            raise ProtocolError(f"grid has no rates for arms {missing}; give a grid for every arm, or one for all")
        grids = {label: _check_grid(grid[label], f"grid[{label!r}]") for label, _ in configs}
    else:
        grids = {label: _check_grid(grid, "grid") for label, _ in configs}
    bases = dict(configs)
    count = default_workers(profile_name(), timed=False) if workers is None else workers
    found: dict[str, RateChoice] = {}

    def point(label: str, value: float) -> tuple[str, RunConfig]:
        return f"{label}, {field}={value:g}, seed {seed}", bases[label].replace(seed=seed, **{field: value})

    for round_ in range(max_extensions + 1):
        pending = [label for label in grids if label not in found]
        trained = train_in_workers([point(label, v) for label in pending for v in grids[label]], workers=count,
                                   runs_dir=runs_dir, retrain=retrain, progress=progress)
        for label in pending:
            scores = tuple(_score(train(cfg, label=text, runs_dir=runs_dir, retrain=retrain and not trained,
                                        progress=progress), key)
                           for text, cfg in (point(label, v) for v in grids[label]))
            i = interior_best(scores)
            wider = None if i is not None or round_ == max_extensions else _widened(grids[label], scores, limit)
            if wider is None:
                found[label] = RateChoice(label, bases[label], field, grids[label], scores,
                                          None if i is None else grids[label][i], seed)
            else:
                grids[label] = wider
    return {label: found[label] for label, _ in configs}


@dataclass(frozen=True)
class Flatness:
    """Whether runs trained long enough: their last evaluation step changed the validation
    loss by less than the seed noise of its final value."""

    last_change: float
    """Mean over the runs of (second-to-last − last) validation loss: > 0 while it still falls."""
    seed_noise: float
    """Standard deviation of the final validation loss across the runs (seeds)."""
    epochs: float
    examples: int

    @property
    def flat(self) -> bool:
        return abs(self.last_change) < self.seed_noise

    def budget(self) -> str:
        return f"{self.epochs:.3g} epochs of {self.examples} examples"

    def describe(self) -> str:
        state = "flattened" if self.flat else "still moving"
        return (f"{self.budget()}: the last evaluation moved the validation loss by {-self.last_change:+.4f}, "
                f"against a seed noise of {self.seed_noise:.4f}: {state}")


def flatness(runs: Sequence[Run]) -> Flatness:
    """The flatness of one arm's seeds (at least two runs with at least two evaluations)."""
    if len(runs) < 2 or any(len(r.evals) < 2 for r in runs):
        raise ProtocolError("flatness needs at least two seeds, each with at least two evaluations")
    finals = [r.evals[-1]["eval_loss"] for r in runs]
    mean = sum(finals) / len(finals)
    noise = math.sqrt(sum((f - mean) ** 2 for f in finals) / (len(finals) - 1))
    change = sum(r.evals[-2]["eval_loss"] - r.evals[-1]["eval_loss"] for r in runs) / len(runs)
    return Flatness(last_change=change, seed_noise=noise, epochs=epochs(runs[0]),
                    examples=int(runs[0].metrics.get("data_train_examples", 0)))


def epochs(run: Run) -> float:
    """Passes over the training examples the run made (packing: over its packed rows)."""
    cfg = run.config
    rows = run.metrics.get("data_train_rows") or run.metrics.get("data_train_examples")
    if not rows:
        raise ProtocolError(f"run {run.name} records no training examples; train it with this ftlab again")
    return run.metrics.get("steps", cfg.max_steps) * cfg.per_device_train_batch_size \
        * cfg.gradient_accumulation_steps / rows


@dataclass
class Report:
    """The verdicts of one study: every arm at its chosen rate, trained under fresh seeds and
    compared with the baseline arm on the test split."""

    choices: dict[str, RateChoice]
    baseline: str
    seeds: tuple[int, ...]
    runs: dict[str, list[Run]]
    verdicts: dict[str, dict[str, Comparison]]
    """``{metric: {arm: Comparison against the baseline}}`` for each of :data:`REPORT_KEYS`."""

    def mean(self, arm: str, key: str = "test_loss") -> float:
        values = [float(r.metrics[key]) for r in self.runs[arm]]
        return sum(values) / len(values)

    def budget(self) -> str:
        return flatness(self.runs[self.baseline]).budget()

    def rates(self) -> str:
        """How the arms' rates were set: "each arm at its own best rate" only when every arm's
        came from its own sweep; otherwise each arm's rate and whether it was chosen or set
        by hand (a shared rate must be visible in every verdict line that rests on it)."""
        if all(c.scores for c in self.choices.values()):
            return "each arm at its own best rate"
        return "rates " + ", ".join(f"{arm} {c.best:g} ({'chosen' if c.scores else 'set by hand'})"
                                    for arm, c in self.choices.items())

    def seeds_for_smallest_effect(self, arm: str) -> tuple[float, int]:
        """(the smallest effect of interest in nats, the seeds per arm that would detect it in
        80% of repeats at this arm's measured spread against the baseline)."""
        effect = SMALLEST_EFFECT * self.mean(self.baseline)
        return effect, self.verdicts["test_loss"][arm].seeds_needed(effect)

    def lines(self, unit: str = "nats/token") -> list[str]:
        """One verdict line per arm and metric, each stating its budget and how the rate was set;
        ``unit`` names the loss's (``ftlab.ui.plot.loss_unit``: nats per byte on the byte-level base)."""
        where = (f"at {self.budget()}, {self.rates()}, on the test split under seeds "
                 f"{', '.join(map(str, self.seeds))}")
        out = [f"Verdicts against {self.baseline!r} ({where}):"]
        for arm in self.runs:
            if arm == self.baseline:
                continue
            for key, kind in REPORT_KEYS.items():
                out.append(f"  {arm} [{key}]: {self.verdicts[key][arm].describe(unit=unit if kind != 'accuracy' else kind)}")
            effect, seeds = self.seeds_for_smallest_effect(arm)
            count = f"{seeds} or more" if seeds >= SEEDS_CAP else f"about {seeds}"
            out.append(f"    smallest effect of interest, fixed in advance: {effect:.3f} {unit} ({SMALLEST_EFFECT:.0%} of the "
                       f"baseline's test loss); {count} seeds per arm would detect it at this spread")
        return out


def report(choices: Mapping[str, RateChoice], baseline: str, *, seeds: Sequence[int] | None = None,
           test_size: int | None = None, retrain: bool = False, runs_dir: str | Path | None = None,
           progress: bool = True, workers: int | None = None, keep_weights: bool = False) -> Report:
    """Each arm of ``choices`` at its chosen rate, trained under fresh ``seeds`` (default
    :data:`REPORT_SEEDS` of the profile) and scored on ``test_size`` test examples (default
    :data:`TEST_SIZES` of the profile), compared
    with ``baseline`` paired by seed on every metric of :data:`REPORT_KEYS`.
    ``keep_weights``: each arm's run under the first seed keeps its weights, for a chapter that
    studies those models afterwards (:func:`~ftlab.training.adapter_io.trained_model`).

    Refuses (:class:`ProtocolError`) an arm whose best sat at a grid's edge, and reporting
    seeds that include a seed a rate was chosen under.
    """
    if baseline not in choices:
        raise ProtocolError(f"baseline={baseline!r} is not an arm; the arms are {list(choices)}")
    seeds = tuple(REPORT_SEEDS[profile_name()] if seeds is None else seeds)
    test_size = TEST_SIZES[profile_name()] if test_size is None else test_size
    used = sorted({c.seed for c in choices.values()} & set(seeds))
    if used:
        raise ProtocolError(f"seeds {used} chose the rates: a verdict under them reads the luck the selection "
                            f"kept; report under fresh seeds (e.g. {REPORT_SEEDS['cpu']})")
    if test_size < 1:
        raise ProtocolError(f"test_size={test_size}: a verdict reads the test split, so score at least one example")
    configs = [(label, choice.config().replace(test_size=test_size)) for label, choice in choices.items()]
    count = default_workers(profile_name(), timed=False) if workers is None else workers
    trained = arms(configs, seeds, retrain=retrain, runs_dir=runs_dir, progress=progress, workers=count,
                   keep_first=keep_weights)
    verdicts = {key: compare_to_baseline([float(r.metrics[key]) for r in trained[baseline]],
                                         {a: [float(r.metrics[key]) for r in runs] for a, runs in trained.items()
                                          if a != baseline}, paired=True)
                for key in REPORT_KEYS}
    return Report(choices=dict(choices), baseline=baseline, seeds=seeds, runs=trained, verdicts=verdicts)


def verdict_on(values_by_arm: Mapping[str, Sequence[float]], baseline: str, key: str) -> dict[str, Comparison]:
    """Verdicts on values a chapter computed itself, refused unless ``key`` names a test-split
    metric: the guard for a comparison assembled by hand."""
    if key not in REPORT_KEYS:
        raise ProtocolError(f"key={key!r}: a verdict must read the test split ({', '.join(REPORT_KEYS)}), not the "
                            "validation split the rates were chosen on")
    if baseline not in values_by_arm:
        raise ProtocolError(f"baseline={baseline!r} is not an arm; the arms are {list(values_by_arm)}")
    return compare_to_baseline(values_by_arm[baseline], {a: v for a, v in values_by_arm.items() if a != baseline},
                               paired=True)


def _values_text(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"
