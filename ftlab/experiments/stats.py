"""Comparing runs across seeds: when is a difference between two arms an effect?

Every chapter compares arms (the same run with one knob changed) that were each trained
under a few seeds. The old rule called a difference "an effect" when it exceeded the
baseline's max - min over its 2 seeds; with no true difference at all, that rule says
"effect" in roughly a third to a half of comparisons. This module is the one place a verdict
comes from, and its rule says "effect" in at most 5% (1 - confidence) of comparisons where
nothing changed, at any number of seeds from 2 up.

Why a Student t interval and not a bootstrap: with the 2-5 seeds a chapter can afford, a
bootstrap only resamples the handful of values it was given, so its interval is far too
narrow (with 2 seeds it has 3 possible means) and says "effect" far more often than its
nominal level. The t interval accounts for estimating the noise from so few values; it is
exact when the seed noise is normal and stays close to its level for the skewed or
heavy-tailed seed noise of final losses (tests/test_stats.py measures both).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, NamedTuple, Sequence

import numpy as np
from scipy.stats import norm
from scipy.stats import t as student_t

from ftlab.errors import FtlabError

SEEDS_CAP = 1000
"""``Comparison.seeds_needed`` looks no further than this many seeds per arm."""


class StatsError(FtlabError, ValueError):
    """An argument to a comparison cannot give an honest interval; the message names the
    argument and the fix."""


@dataclass(frozen=True)
class Comparison:
    """Arm ``b`` against arm ``a``: the difference of their means and how sure we are of it.

    ``low``/``high`` bound ``difference`` (mean(b) - mean(a)) at ``confidence``; ``effect``
    is True only when that interval excludes 0. ``detectable`` is the smallest true
    difference this many seeds, with this spread, would find in 80% of repeats: a "can't
    tell" with a large ``detectable`` says "buy more seeds", not "no effect".

    Zero spread (every seed gave the same value in each arm, or the same per-seed
    difference when paired) gives a standard error of 0: the interval is the point, so a
    nonzero difference is an effect and an exactly zero one is not, and ``detectable`` is 0.
    Real training runs never do this unless the seed did not reach the randomness.
    """

    difference: float
    low: float
    high: float
    effect: bool
    n_a: int
    n_b: int
    paired: bool
    confidence: float
    standard_error: float
    df: float
    detectable: float
    sd_a: float
    sd_b: float

    def detectable_with(self, seeds: int, power: float = 0.8) -> float:
        """The smallest true difference ``seeds`` seeds per arm (same design, same spread as
        observed) would detect with probability ``power``, two-sided at ``confidence``."""
        se, df = self._planned(seeds)
        return float(_detectable(se, df, self.confidence, _check_level("power", power)))

    def seeds_needed(self, difference: float, power: float = 0.8) -> int:
        """About how many seeds per arm (same design, same spread) would detect a true
        ``difference`` with probability ``power``.

        The spread is the observed one, itself uncertain with few seeds, so read the answer
        as an order of magnitude. It iterates n with t quantiles because the normal
        approximation, n = 2((z + z_power) sd / difference)^2, ignores that the noise is
        estimated too and asks for far too few seeds exactly where seeds are scarce. The
        search stops at SEEDS_CAP: a return of SEEDS_CAP means "SEEDS_CAP or more".
        """
        seeds = np.arange(2, SEEDS_CAP + 1)
        detectable = _detectable(*self._planned(seeds), self.confidence, _check_level("power", power))
        enough = np.flatnonzero(detectable <= abs(float(difference)))  # detectable falls as seeds grow
        return int(seeds[enough[0]]) if len(enough) else SEEDS_CAP

    def describe(self, unit: str = "nats/token", digits: int = 3, smallest_effect: float | None = None) -> str:
        """One line for a chapter to print: the difference, its interval and the verdict,
        with what it would take to decide when this budget cannot.

        A "can't tell" names the smallest difference this budget could detect. The seeds a
        larger budget would need are given only for ``smallest_effect``, an effect of
        interest fixed before the runs: seeds computed from the difference that happened to
        be observed ("815 seeds would detect 0.001") restate the p-value and plan nothing."""
        level = f"{self.confidence * 100:.4g}%"
        seeds = f"{self.n_a} paired seeds" if self.paired else f"{self.n_a} vs {self.n_b} seeds"
        head = (f"{_signed(self.difference, digits)} {unit} [{_signed(self.low, digits)}, "
                f"{_signed(self.high, digits)}], {level} interval, {seeds}")
        if self.effect:
            return f"{head}: an effect (b is {'higher' if self.difference > 0 else 'lower'})"
        advice = f"smallest detectable difference ≈ {self.detectable:.{digits}f}"
        if smallest_effect is not None:
            n = self.seeds_needed(smallest_effect)
            count = f"{SEEDS_CAP} or more" if n == SEEDS_CAP else f"about {n}"
            advice += (f"; {count} seeds per arm would detect the effect of interest "
                       f"{abs(smallest_effect):.{digits}f}")
        return f"{head}: can't tell at this budget ({advice})"

    def _planned(self, seeds):
        """Standard error and df of the same design with ``seeds`` (an int or an array of
        them) seeds per arm."""
        if self.paired:  # the per-seed differences' variance is se^2 * n
            return _paired_se_df(self.standard_error ** 2 * self.n_a, seeds)
        return _welch_se_df(self.sd_a ** 2, self.sd_b ** 2, seeds, seeds)


def compare(a: Sequence[float], b: Sequence[float], *, paired: bool = False,
            confidence: float = 0.95) -> Comparison:
    """Compare one metric (e.g. final eval loss) of arm ``b``'s runs with arm ``a``'s, where
    the runs within an arm differ only in their seed.

    Unpaired, it is Welch's t interval: the arms may have different seed-to-seed spreads
    (a higher learning rate can be noisier), so it does not pool their variances.
    ``paired=True`` when a[i] and b[i] were run under the same seed: the seed's share of
    the noise (data order, initialisation) then cancels in the per-seed differences b[i] -
    a[i], and the paired t interval on those differences is usually much narrower. See the
    module docstring for why a t interval and not a bootstrap.
    """
    values_a, values_b = _values("a", a), _values("b", b)
    if paired and len(values_a) != len(values_b):
        raise StatsError(
            f"paired=True needs one value per shared seed in each arm, got len(a)={len(values_a)} and "
            f"len(b)={len(values_b)}: pass both arms' runs in the same seed order, or paired=False "
            "if their seeds differ")
    found = _intervals(values_a, values_b, paired, _check_level("confidence", confidence))
    return Comparison(
        difference=float(found.difference), low=float(found.low), high=float(found.high),
        effect=bool(found.effect), n_a=len(values_a), n_b=len(values_b), paired=paired,
        confidence=float(confidence), standard_error=float(found.standard_error), df=float(found.df),
        detectable=float(_detectable(found.standard_error, found.df, confidence, 0.8)),
        sd_a=float(found.sd_a), sd_b=float(found.sd_b))


def compare_to_baseline(baseline: Sequence[float], arms: Mapping[str, Sequence[float]], *,
                        paired: bool = False, confidence: float = 0.95) -> dict[str, Comparison]:
    """Each arm against one baseline, as ``{name: compare(baseline, arm)}``.

    Comparing m arms at 95% each would let the chance of at least one false "effect" grow
    towards 1 - 0.95^m (19% for 4 arms), and a chapter's verdict is about the whole sweep.
    So each interval is Bonferroni-adjusted, at 1 - (1 - confidence) / m, which keeps the
    chance of any false "effect" across the family at or below 1 - confidence whatever the
    correlation between the comparisons (they share the baseline). Each Comparison records
    the per-comparison confidence it used, and its ``describe`` prints it.
    """
    if not arms:
        raise StatsError("arms is empty: pass at least one arm, e.g. arms={'lr=1e-4': [2.31, 2.35]}")
    each = 1 - (1 - _check_level("confidence", confidence)) / len(arms)
    baseline = _values("baseline", baseline)
    checked = {name: _values(f"arms[{name!r}]", values) for name, values in arms.items()}  # errors name the arm
    return {name: compare(baseline, values, paired=paired, confidence=each) for name, values in checked.items()}


def noise_band(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the t interval of one arm's mean over its seeds, for the band a
    plot draws around the arm's final value. Two bands that overlap do not mean "no
    effect"; use ``compare`` for verdicts."""
    found = _values("values", values)
    level = _check_level("confidence", confidence)
    centre = found[0] + np.mean(found - found[0])  # exact for identical values, so their band is the point
    half = student_t.ppf(0.5 + level / 2, len(found) - 1) * np.std(found - found[0], ddof=1) / math.sqrt(len(found))
    return float(centre), float(centre - half), float(centre + half)


def proportion_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a proportion (``successes`` of ``trials``): exact match
    on a handful of questions. Chosen over the textbook p ± z·√(p(1−p)/n) because that
    interval collapses to a point at 0/n and n/n and leaves [0, 1] near them, exactly where
    small evaluation sets put a model; Wilson's stays inside [0, 1] and covers near its level."""
    if trials < 1 or not 0 <= successes <= trials:
        raise StatsError(f"proportion_interval needs 0 <= successes <= trials and trials >= 1, got {successes} of {trials}")
    z = float(norm.ppf(0.5 + _check_level("confidence", confidence) / 2))
    p, n = successes / trials, trials
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


class _Intervals(NamedTuple):
    difference: np.ndarray
    low: np.ndarray
    high: np.ndarray
    effect: np.ndarray
    standard_error: np.ndarray
    df: np.ndarray
    sd_a: np.ndarray
    sd_b: np.ndarray


def _intervals(a: np.ndarray, b: np.ndarray, paired: bool, confidence: float) -> _Intervals:
    """The interval and verdict for arms whose seeds run along the last axis, so that
    ``compare`` and the calibration tests (thousands of simulated comparisons at once) run
    this same code. Values are centred on their first seed before averaging: identical
    values then have a mean equal to that value and a variance of exactly 0."""
    a0, b0 = a[..., :1], b[..., :1]
    mean_a = a0[..., 0] + np.mean(a - a0, axis=-1)
    mean_b = b0[..., 0] + np.mean(b - b0, axis=-1)
    var_a, var_b = np.var(a - a0, axis=-1, ddof=1), np.var(b - b0, axis=-1, ddof=1)
    if paired:
        d = b - a
        se, df = _paired_se_df(np.var(d - d[..., :1], axis=-1, ddof=1), a.shape[-1])
    else:
        se, df = _welch_se_df(var_a, var_b, a.shape[-1], b.shape[-1])
    difference = mean_b - mean_a
    half = student_t.ppf(0.5 + confidence / 2, df) * se
    low, high = difference - half, difference + half
    return _Intervals(difference, low, high, (low > 0) | (high < 0), se, df, np.sqrt(var_a), np.sqrt(var_b))


def _welch_se_df(var_a, var_b, n_a: int, n_b: int):
    """Welch's standard error and Welch-Satterthwaite df; with zero spread in both arms
    the df is undefined but irrelevant (se = 0), so it falls back to n_a + n_b - 2."""
    share_a, share_b = np.asarray(var_a) / n_a, np.asarray(var_b) / n_b
    spread = share_a ** 2 / (n_a - 1) + share_b ** 2 / (n_b - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(spread > 0, (share_a + share_b) ** 2 / spread, n_a + n_b - 2)
    return np.sqrt(share_a + share_b), df


def _paired_se_df(var_d, n):
    se = np.sqrt(np.asarray(var_d) / n)
    return se, np.broadcast_to(np.asarray(n, dtype=float) - 1, se.shape)


def _detectable(se, df, confidence: float, power: float):
    """Smallest true difference found with probability ``power`` by a two-sided test at
    ``confidence``: (t_{1-alpha/2} + t_power) * se, which matches the noncentral t's exact
    answer to about 0.1% for the paired test. For the unpaired test at 2-3 seeds it is
    optimistic (about 70% power instead of 80% at 3 seeds, measured in tests/test_stats.py):
    Welch's interval is conservative there, so read ``detectable`` as a lower bound."""
    return (student_t.ppf(0.5 + confidence / 2, df) + student_t.ppf(power, df)) * se


def _values(name: str, values: Sequence[float]) -> np.ndarray:
    """One arm as floats (ints, numpy or torch scalars accepted), checked for what the
    interval needs: two seeds at least, and no diverged (non-finite) run."""
    try:
        found = np.array([float(v) for v in values], dtype=float)
    except (TypeError, ValueError) as error:
        raise StatsError(f"{name} must be a sequence of numbers, one per seed ({error})") from None
    if len(found) < 2:
        raise StatsError(
            f"{name} has {len(found)} value(s): needs at least 2 seeds per arm to estimate the noise; "
            "run the arm under another seed, e.g. seeds=(42, 43)")
    bad = np.flatnonzero(~np.isfinite(found))
    if len(bad):
        raise StatsError(
            f"{name}[{bad[0]}] is {found[bad[0]]}: that run diverged (or never recorded the metric); "
            "fix or rerun it (e.g. a lower learning rate), or drop that seed (from both arms when paired)")
    return found


def _check_level(name: str, level: float) -> float:
    if not 0 < level < 1:
        raise StatsError(f"{name}={level!r} must be strictly between 0 and 1, e.g. {name}=0.95 for 95%")
    return float(level)


def _signed(x: float, digits: int) -> str:
    return f"{x:+.{digits}f}".replace("-", "−")
