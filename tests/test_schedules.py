"""The schedules module: the from-scratch warmup+cosine equals the library at every step, and the
library curves have the shapes the notebook claims."""
from __future__ import annotations

import io
import math

import pytest
from matplotlib.figure import Figure

from ftlab.ui.plot import plot_schedules
from ftlab.config.run_config import resolve_warmup_steps
from ftlab.lessons.schedules import (SCHEDULERS, default_scheduler_kwargs, lr_curve,
                             warmup_cosine_lr)

LR = 3e-4
# (warmup, total) pairs: no warmup, a step count, a float ratio, a ratio that rounds up, a long warmup
PAIRS = [(0, 50), (10, 100), (0.1, 73), (0.03, 40), (37, 41), (1, 1)]
WARMUP_SCHEDULERS = [n for n in SCHEDULERS if n != "constant"]


def _close(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= 1e-7 * max(abs(a), abs(b))


@pytest.mark.parametrize("warmup,total", PAIRS)
def test_scratch_cosine_equals_get_scheduler_cosine_at_every_step(warmup, total):
    library = lr_curve("cosine", num_training_steps=total, learning_rate=LR, warmup_steps=warmup, scheduler_kwargs={})
    mine = [warmup_cosine_lr(s, learning_rate=LR, warmup_steps=warmup, num_training_steps=total) for s in range(total)]
    assert len(library) == total
    bad = [(s, a, b) for s, (a, b) in enumerate(zip(mine, library)) if not _close(a, b)]
    assert not bad, bad[:5]


@pytest.mark.parametrize("warmup,total", PAIRS)
def test_scratch_cosine_with_floor_equals_get_scheduler_cosine_with_min_lr(warmup, total):
    library = lr_curve("cosine_with_min_lr", num_training_steps=total, learning_rate=LR, warmup_steps=warmup,
                       scheduler_kwargs={"min_lr_rate": 0.1})
    mine = [warmup_cosine_lr(s, learning_rate=LR, warmup_steps=warmup, num_training_steps=total, min_lr_rate=0.1)
            for s in range(total)]
    bad = [(s, a, b) for s, (a, b) in enumerate(zip(mine, library)) if not _close(a, b)]
    assert not bad, bad[:5]
    # after warmup the floor holds: never below 10% of the peak
    w = resolve_warmup_steps(warmup, total)
    assert all(x >= 0.1 * LR * (1 - 1e-12) for x in library[w:])


def test_scratch_cosine_matches_transformers_directly():
    """Same check without lr_curve in between, on get_scheduler exactly as the brief states it."""
    import torch
    from transformers import get_scheduler

    for name, kw, floor in [("cosine", None, 0.0), ("cosine_with_min_lr", {"min_lr_rate": 0.1}, 0.1)]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
        sched = get_scheduler(name, opt, num_warmup_steps=7, num_training_steps=60, scheduler_specific_kwargs=kw)
        for step in range(60):
            mine = warmup_cosine_lr(step, learning_rate=LR, warmup_steps=7, num_training_steps=60, min_lr_rate=floor)
            assert _close(mine, opt.param_groups[0]["lr"]), (name, step)
            opt.step()
            sched.step()


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_gives_one_float_per_step(name):
    lrs = lr_curve(name, num_training_steps=40, learning_rate=LR, warmup_steps=5)
    assert len(lrs) == 40
    assert all(isinstance(x, float) and math.isfinite(x) and 0 <= x <= LR * (1 + 1e-12) for x in lrs)


@pytest.mark.parametrize("name", WARMUP_SCHEDULERS)
def test_warmup_rises_linearly_from_zero(name):
    lrs = lr_curve(name, num_training_steps=50, learning_rate=LR, warmup_steps=8)
    assert lrs[0] == 0.0
    for s in range(8):
        assert lrs[s] == pytest.approx(LR * s / 8, rel=1e-9, abs=0)
    assert lrs[8] == pytest.approx(LR, rel=1e-9)  # the peak is reached right after warmup


def test_constant_is_flat_and_ignores_warmup():
    assert lr_curve("constant", num_training_steps=30, learning_rate=LR, warmup_steps=10) == [LR] * 30


def test_decaying_schedules_decay_and_floors_hold():
    n = 100
    cos = lr_curve("cosine", num_training_steps=n, learning_rate=LR)
    lin = lr_curve("linear", num_training_steps=n, learning_rate=LR)
    assert all(a >= b for a, b in zip(cos, cos[1:])) and all(a >= b for a, b in zip(lin, lin[1:]))
    assert cos[-1] < 0.01 * LR and lin[-1] < 0.02 * LR
    floor = lr_curve("cosine_with_min_lr", num_training_steps=n, learning_rate=LR)
    assert min(floor) == pytest.approx(0.1 * LR, rel=0.01)
    wsd = lr_curve("warmup_stable_decay", num_training_steps=n, learning_rate=LR, warmup_steps=10)
    assert wsd[10:80] == [LR] * 70  # stable until the last 20% (default num_decay_steps)
    assert wsd[-1] < 0.01 * LR
    restarts = lr_curve("cosine_with_restarts", num_training_steps=n, learning_rate=LR)
    assert restarts[50] == pytest.approx(LR)  # the restart halfway (num_cycles=2)


def test_float_ratio_warmup_uses_ceil_like_training_arguments():
    from transformers import TrainingArguments

    for ratio, total in [(0.1, 73), (0.03, 40), (0.5, 9), (0.0, 20)]:
        expected = math.ceil(total * ratio)
        assert resolve_warmup_steps(ratio, total) == expected
        args = TrainingArguments(output_dir="/tmp/ftlab-unused", warmup_steps=ratio, report_to=[])
        assert args.get_warmup_steps(total) == expected
        by_ratio = lr_curve("linear", num_training_steps=total, learning_rate=LR, warmup_steps=ratio)
        by_count = lr_curve("linear", num_training_steps=total, learning_rate=LR, warmup_steps=expected)
        assert by_ratio == by_count
    assert resolve_warmup_steps(12, 100) == 12


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        lr_curve("cosine_annealing", num_training_steps=10, learning_rate=LR)
    for name in SCHEDULERS:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="valid names"):
        default_scheduler_kwargs("nope", 10)


def test_default_kwargs():
    assert default_scheduler_kwargs("cosine_with_min_lr", 100) == {"min_lr_rate": 0.1}
    assert default_scheduler_kwargs("warmup_stable_decay", 100) == {"num_decay_steps": 20}
    assert default_scheduler_kwargs("cosine_with_restarts", 100) == {"num_cycles": 2}
    assert default_scheduler_kwargs("linear", 100) == {}


def test_plot_returns_figure_with_one_line_per_scheduler():
    curves = {n: lr_curve(n, num_training_steps=30, learning_rate=LR, warmup_steps=3) for n in SCHEDULERS}
    fig = plot_schedules(curves)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 9
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(SCHEDULERS)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")  # renders headless, no pyplot, no display
    assert buf.getvalue()[:4] == b"\x89PNG"
