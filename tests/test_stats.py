"""ftlab.experiments.stats: its verdicts are calibrated, its power figures honest, its numbers right.

The simulations run ``_intervals``, the vectorised code ``compare`` itself returns (a test
checks that the two agree), so they test the real rule, thousands of comparisons at once.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from ftlab.experiments.stats import SEEDS_CAP, StatsError, _intervals, compare, compare_to_baseline, noise_band

N = 20_000
"""Simulated comparisons per case."""
ALPHA = 0.05
TOLERANCE = 3 * math.sqrt(ALPHA * (1 - ALPHA) / N)
"""Three Monte-Carlo standard errors of a rate of 5% measured on N comparisons."""
SEEDS = (2, 3, 4, 5)


def arms(rng: np.random.Generator, noise: str, seeds: int, paired: bool, shift: float = 0.0,
         count: int = N) -> tuple[np.ndarray, np.ndarray]:
    """``count`` simulated pairs of arms (rows) of final losses around 2.3, whose seeds run
    along the last axis; b is ``shift`` higher. Paired arms share a per-seed component
    (the seed's data order and initialisation) on top of each run's own noise; unpaired arms
    have the same total noise. "lognormal" is multiplicative noise: skewed, as losses are."""
    draw = {"normal": rng.standard_normal, "lognormal": rng.standard_normal,
            "t5": lambda shape: rng.standard_t(5, shape)}[noise]
    shared_sd, own_sd = 0.03, 0.02
    if paired:
        shared = shared_sd * draw((count, seeds))
        a, b = shared + own_sd * draw((count, seeds)), shared + own_sd * draw((count, seeds))
    else:
        a, b = (math.hypot(shared_sd, own_sd) * draw((count, seeds)) for _ in range(2))
    if noise == "lognormal":
        return 2.3 * np.exp(a), 2.3 * np.exp(b) + shift
    return 2.3 + a, 2.3 + b + shift


def old_rule(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The rule the chapters used: one run of each arm, an effect when their difference
    exceeds max - min over the baseline's seeds."""
    return np.abs(b[..., 0] - a[..., 0]) > a.max(axis=-1) - a.min(axis=-1)


def false_effect_rates(noise: str, paired: bool, seed: int = 0) -> dict[int, tuple[float, float]]:
    """{seeds: (new rule's rate, old rule's rate)} with no true difference."""
    rng = np.random.default_rng(seed)
    rates = {}
    for seeds in SEEDS:
        a, b = arms(rng, noise, seeds, paired)
        rates[seeds] = float(_intervals(a, b, paired, 0.95).effect.mean()), float(old_rule(a[..., :2], b).mean())
    return rates


@pytest.mark.parametrize("paired", [False, True], ids=["unpaired", "paired"])
@pytest.mark.parametrize("noise", ["normal", "t5", "lognormal"])
def test_no_true_difference_is_called_an_effect_at_most_5_percent_of_the_time(noise, paired):
    rates = false_effect_rates(noise, paired)
    new = {seeds: rate for seeds, (rate, _) in rates.items()}
    assert all(rate <= ALPHA + TOLERANCE for rate in new.values()), f"false-effect rates {new}"


def test_the_old_rule_says_effect_in_half_of_comparisons_with_no_difference():
    """The measurement that motivated ftlab.experiments.stats: one run per arm against the baseline's
    2-seed spread says "effect" about half the time when nothing changed (about a third when
    the arms share their seed, whose share of the noise then widens only the spread)."""
    unpaired, paired = (false_effect_rates("normal", p)[2][1] for p in (False, True))
    assert abs(unpaired - 0.5) < 0.02
    assert paired > 0.25


def test_compare_returns_what_the_simulations_test():
    rng = np.random.default_rng(7)
    for paired in (False, True):
        a, b = arms(rng, "normal", 3, paired, shift=0.04, count=50)
        found = _intervals(a, b, paired, 0.9)
        for i in range(len(a)):
            c = compare(list(a[i]), list(b[i]), paired=paired, confidence=0.9)
            assert (c.effect, c.low, c.high) == (found.effect[i], pytest.approx(found.low[i]), pytest.approx(found.high[i]))


def unit_spread(rng: np.random.Generator, seeds: int) -> np.ndarray:
    """Values whose sample SD is exactly 1, so compare's detectable is the true-sd one."""
    z = rng.standard_normal(seeds)
    return (z - z.mean()) / z.std(ddof=1)


@pytest.mark.parametrize("seeds", [3, 5])
@pytest.mark.parametrize("paired", [False, True], ids=["unpaired", "paired"])
def test_a_large_true_difference_is_found_and_detectable_is_honest(paired, seeds):
    rng = np.random.default_rng(3)
    a = np.zeros((N, seeds)) if paired else rng.standard_normal((N, seeds))  # paired: b holds the differences
    large = _intervals(a, rng.standard_normal((N, seeds)) + 6, paired, 0.95)
    assert large.effect.mean() >= 0.9
    x = unit_spread(rng, seeds)
    detectable = (compare(np.zeros(seeds), x, paired=True) if paired else compare(x, x)).detectable
    at_detectable = _intervals(a, rng.standard_normal((N, seeds)) + detectable, paired, 0.95)
    # honest from 5 seeds; Welch's conservative interval at 3 unpaired seeds finds it ~70% of the time
    low = 0.65 if (seeds, paired) == (3, False) else 0.75
    assert low <= at_detectable.effect.mean() <= 0.85


@pytest.mark.parametrize("paired", [False, True], ids=["unpaired", "paired"])
def test_compare_to_baseline_keeps_the_family_wise_false_effect_rate(paired):
    rng = np.random.default_rng(11)
    seeds, count = 3, 4
    shared = 0.03 * rng.standard_normal((N, seeds)) if paired else 0.0  # each seed's share, common to every arm
    own = 0.02 if paired else math.hypot(0.03, 0.02)
    baseline, *others = (2.3 + shared + own * rng.standard_normal((N, seeds)) for _ in range(count + 1))
    family = compare_to_baseline(baseline[0], {f"arm {i}": o[0] for i, o in enumerate(others)}, paired=paired)
    confidence = family["arm 0"].confidence
    assert confidence == pytest.approx(1 - 0.05 / count)
    assert list(family.values()) == [compare(baseline[0], o[0], paired=paired, confidence=confidence) for o in others]
    any_effect = np.zeros(N, dtype=bool)
    for other in others:
        any_effect |= _intervals(baseline, other, paired, confidence).effect
    assert any_effect.mean() <= ALPHA + TOLERANCE


def test_welch_interval_by_hand_and_against_scipy():
    a, b = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0]  # means 2 and 4, variances 1 and 4
    c = compare(a, b)
    se = math.sqrt(1 / 3 + 4 / 3)
    df = (5 / 3) ** 2 / ((1 / 3) ** 2 / 2 + (4 / 3) ** 2 / 2)  # = 50/17
    assert (c.difference, c.standard_error, c.df) == (pytest.approx(2.0), pytest.approx(se), pytest.approx(50 / 17))
    half = scipy_stats.t.ppf(0.975, df) * se
    assert (c.low, c.high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    reference = scipy_stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    assert (c.low, c.high) == (pytest.approx(reference.low), pytest.approx(reference.high))
    assert not c.effect and c.n_a == c.n_b == 3 and not c.paired


def test_paired_interval_by_hand_and_against_scipy():
    a, b = [1.0, 2.0, 3.0], [2.0, 4.0, 7.0]  # differences 1, 2, 4: mean 7/3, variance 7/3
    c = compare(a, b, paired=True, confidence=0.9)
    assert (c.difference, c.standard_error, c.df) == (pytest.approx(7 / 3), pytest.approx(math.sqrt(7 / 9)), 2)
    assert (c.low, c.high) == (pytest.approx(7 / 3 - 2.919985580 * math.sqrt(7 / 9)),  # t_{0.95, 2}
                               pytest.approx(7 / 3 + 2.919985580 * math.sqrt(7 / 9)))
    reference = scipy_stats.ttest_rel(b, a).confidence_interval(0.9)
    assert (c.low, c.high) == (pytest.approx(reference.low), pytest.approx(reference.high))
    # detectable: the difference the two-sided test finds with 80% power, on the noncentral t
    ncp = c.detectable / c.standard_error
    power = scipy_stats.nct.sf(2.919985580, 2, ncp) + scipy_stats.nct.cdf(-2.919985580, 2, ncp)
    assert power == pytest.approx(0.8, abs=0.005)
    assert c.detectable == pytest.approx((2.919985580 + 1.060660172) * math.sqrt(7 / 9))  # + t_{0.80, 2}


def test_noise_band_is_the_t_interval_of_the_mean():
    values = [2.31, 2.35, 2.30, 2.36]
    mean, low, high = noise_band(values, confidence=0.9)
    reference = scipy_stats.t.interval(0.9, 3, loc=np.mean(values), scale=scipy_stats.sem(values))
    assert (mean, low, high) == (pytest.approx(np.mean(values)), pytest.approx(reference[0]), pytest.approx(reference[1]))
    assert noise_band([0.1, 0.1, 0.1]) == (0.1, 0.1, 0.1)


def test_numpy_and_torch_scalars_are_accepted():
    plain = compare([2.31, 2.35, 2.33], [2.40, 2.38, 2.41])
    assert compare(np.array([2.31, 2.35, 2.33]), torch.tensor([2.40, 2.38, 2.41], dtype=torch.float64)) == plain
    assert compare([np.float32(1), torch.tensor(2.0)], [3, 4]).difference == 2.0


@pytest.mark.parametrize("call, message", [
    (lambda: compare([2.3], [2.4, 2.5]), r"a has 1 value.*at least 2 seeds per arm.*seeds=\(42, 43\)"),
    (lambda: compare([2.3, 2.4], []), r"b has 0 value.*at least 2 seeds per arm.*another seed"),
    (lambda: compare([2.3, 2.4, 2.5], [2.4, 2.5], paired=True), r"paired=True.*len\(a\)=3.*len\(b\)=2.*same seed order.*paired=False"),
    (lambda: compare([2.3, 2.4], [2.4, float("nan")]), r"b\[1\] is nan.*diverged.*rerun"),
    (lambda: compare([2.3, float("inf"), 2.4], [2.4, 2.5]), r"a\[1\] is inf.*diverged"),
    (lambda: compare([2.3, 2.4], [2.4, 2.5], confidence=95), r"confidence=95 must be strictly between 0 and 1.*0.95"),
    (lambda: compare([2.3, 2.4], [2.4, 2.5], confidence=0.0), r"confidence=0.0 must be strictly between 0 and 1"),
    (lambda: compare([2.3, "x"], [2.4, 2.5]), r"a must be a sequence of numbers"),
    (lambda: compare_to_baseline([2.3, 2.4], {}), r"arms is empty"),
    (lambda: compare_to_baseline([2.3, 2.4], {"lr": [2.5]}), r"arms\['lr'\] has 1 value.*at least 2 seeds per arm"),
    (lambda: compare_to_baseline([2.3, 2.4], {"lr": [2.5, 2.6]}, paired=True, confidence=2), r"confidence=2 must be"),
    (lambda: compare_to_baseline([2.3, float("nan")], {"lr": [2.5, 2.6]}), r"baseline\[1\] is nan.*diverged"),
    (lambda: noise_band([2.3]), r"values has 1 value.*at least 2 seeds"),
    (lambda: noise_band([2.3, 2.4], confidence=1.0), r"confidence=1.0 must be strictly between"),
    (lambda: compare([2.3, 2.4], [2.4, 2.5]).seeds_needed(0.1, power=80), r"power=80 must be strictly between 0 and 1"),
])
def test_bad_inputs_name_the_argument_and_the_fix(call, message):
    with pytest.raises(StatsError, match=message):
        call()
    assert issubclass(StatsError, ValueError)


def test_describe_an_effect():
    c = compare([2.31, 2.32, 2.30], [2.41, 2.42, 2.40])
    assert c.effect and c.describe().startswith("+0.100 nats/token [+0.")
    assert c.describe().endswith("95% interval, 3 vs 3 seeds: an effect (b is higher)")
    assert compare([2.41, 2.42, 2.40], [2.31, 2.32, 2.30], paired=True).describe(unit="loss", digits=2).endswith(
        "3 paired seeds: an effect (b is lower)")


def test_describe_a_cant_tell():
    c = compare([2.31, 2.35], [2.40, 2.38])
    line = c.describe()
    assert not c.effect and "can't tell at this budget" in line and "an effect" not in line
    assert f"smallest detectable difference ≈ {c.detectable:.3f}" in line
    assert "would detect" not in line  # no seeds computed from the difference that happened to be observed
    planned = c.describe(smallest_effect=0.05)
    assert f"about {c.seeds_needed(0.05)} seeds per arm would detect the effect of interest 0.050" in planned
    assert line.startswith("+0.060 nats/token [−0.078, +0.198], 95% interval, 2 vs 2 seeds: ")


def test_zero_spread_edges():
    same = compare([2.3, 2.3, 2.3], [2.3, 2.3])
    assert (same.difference, same.low, same.high, same.effect, same.detectable) == (0.0, 0.0, 0.0, False, 0.0)
    assert same.describe().endswith("can't tell at this budget (smallest detectable difference ≈ 0.000)")
    shifted = compare([2.3, 2.3], [2.4, 2.4])
    assert shifted.effect and shifted.low == shifted.high == shifted.difference
    assert compare([1.0, 2.0, 3.0], [1.5, 2.5, 3.5], paired=True).effect  # the same shift under every seed


def test_compare_to_baseline_records_its_adjusted_confidence():
    family = compare_to_baseline([2.31, 2.35], {"lr=1e-4": [2.40, 2.38], "lr=3e-4": [2.2, 2.25]})
    assert list(family) == ["lr=1e-4", "lr=3e-4"]
    assert all(c.confidence == pytest.approx(0.975) for c in family.values())
    assert "97.5% interval" in family["lr=1e-4"].describe()


def test_seeds_needed_is_monotone_and_agrees_with_detectable():
    for paired in (False, True):
        c = compare([2.31, 2.35, 2.30], [2.40, 2.38, 2.45], paired=paired)
        assert c.detectable_with(3) == pytest.approx(c.detectable)
        needed = [c.seeds_needed(d) for d in (0.5, 0.1, 0.05, 0.02, 0.01)]
        assert needed == sorted(needed) and needed[0] < needed[-1]
        for d, n in zip((0.5, 0.1, 0.05, 0.02, 0.01), needed):
            assert c.detectable_with(n) <= d and (n == 2 or c.detectable_with(n - 1) > d)
        assert c.seeds_needed(1e-6) == SEEDS_CAP
        assert c.seeds_needed(0.05, power=0.95) > c.seeds_needed(0.05)


def test_wilson_interval_matches_the_formula_and_stays_inside_zero_one():
    import pytest
    from ftlab.experiments.stats import StatsError, proportion_interval
    low, high = proportion_interval(5, 7)
    assert low == pytest.approx(0.3589, abs=1e-4) and high == pytest.approx(0.9178, abs=1e-4)
    zero = proportion_interval(0, 6)
    assert zero[0] == pytest.approx(0.0, abs=1e-12) and zero[1] == pytest.approx(0.3903, abs=1e-4)  # not a point, unlike p ± z·se
    assert proportion_interval(6, 6)[1] == 1.0
    with pytest.raises(StatsError, match="0 <= successes <= trials"):
        proportion_interval(3, 2)
