"""The batch-size lessons: Power Lines' optimal batch (ftlab.lessons.weight_decay.batch_size_for)
against hand-computed values, and learning-rate scaling with batch size."""
from __future__ import annotations

import math

import pytest

import ftlab.lessons.batch_size
import ftlab.lessons.weight_decay
from ftlab.errors import ArgumentError
from ftlab.lessons.batch_size import at_equal_data, batch_size_for, batch_tokens_for, scaled_learning_rate


def test_batch_size_for_by_hand():
    # ln(3,260,252,160) = ln 3.26025216 + 9 ln 10 = 1.181805 + 20.723266 = 21.905070
    # * 0.383 = 8.389642; exp(8.389642) = 4401.24; * 0.0306 = 134.68 sequences
    assert batch_size_for(3_260_252_160) == pytest.approx(134.68, abs=0.005)
    # ln(3,183,840) = ln 3.18384 + 6 ln 10 = 1.158088 + 13.815511 = 14.973599
    # * 0.383 = 5.734888; exp(5.734888) = 309.478; * 0.0306 = 9.470 sequences
    assert batch_size_for(3_183_840) == pytest.approx(9.470, abs=0.0005)


def test_batch_tokens_are_sequences_of_2048_tokens():
    # 9.470039 sequences * 2048 tokens = 19,394.6 tokens per step
    assert batch_tokens_for(3_183_840) == pytest.approx(19_394.6, abs=0.05)
    assert ftlab.lessons.weight_decay.POWER_LINES_SEQUENCE_LENGTH == 2048


def test_twice_the_data_wants_a_1_3x_larger_batch():
    assert batch_size_for(2e9) / batch_size_for(1e9) == pytest.approx(2 ** 0.383) == pytest.approx(1.304, abs=1e-3)


def test_one_implementation():
    """The law lives beside the weight-decay time scale (same paper); batch_size re-exports it."""
    assert ftlab.lessons.batch_size.batch_size_for is ftlab.lessons.weight_decay.batch_size_for
    assert not hasattr(ftlab.lessons.weight_decay, "power_lines_batch_size")


@pytest.mark.parametrize("bad", [0, -1e6, math.nan, math.inf, "1e9", True])
def test_batch_size_for_rejects_bad_tokens(bad):
    with pytest.raises(ValueError, match="tokens"):
        batch_size_for(bad)


@pytest.mark.parametrize("rule, to_batch, expected", [
    ("linear", 32, 4e-3),   # 4x the batch, 4x the learning rate
    ("sqrt", 32, 2e-3),     # 4x the batch, sqrt(4) = 2x
    ("linear", 2, 2.5e-4),  # a smaller batch scales down by the same rule
    ("sqrt", 2, 5e-4),
    ("sqrt", 8, 1e-3),      # the same batch keeps the learning rate
])
def test_scaled_learning_rate_by_hand(rule, to_batch, expected):
    assert scaled_learning_rate(1e-3, 8, to_batch, rule) == pytest.approx(expected, rel=1e-12)


def test_scaling_round_trips_and_takes_any_unit():
    lr = scaled_learning_rate(3e-4, 16, 48, "sqrt")
    assert scaled_learning_rate(lr, 48, 16, "sqrt") == pytest.approx(3e-4, rel=1e-12)
    # tokens per step instead of sequences: the ratio is what counts
    assert scaled_learning_rate(3e-4, 16 * 256, 48 * 256) == pytest.approx(scaled_learning_rate(3e-4, 16, 48))
    assert scaled_learning_rate(1e-3, 8, 9.47) == pytest.approx(1e-3 * 9.47 / 8)  # a Power Lines batch is a float


@pytest.mark.parametrize("kwargs, argument", [
    (dict(lr=0.0), "lr"),
    (dict(lr=-1e-3), "lr"),
    (dict(lr=math.nan), "lr"),
    (dict(lr="1e-3"), "lr"),
    (dict(from_batch=0), "from_batch"),
    (dict(from_batch=True), "from_batch"),
    (dict(to_batch=-4), "to_batch"),
    (dict(to_batch=math.inf), "to_batch"),
    (dict(rule="Linear"), "rule"),
    (dict(rule="log"), "rule"),
])
def test_scaled_learning_rate_names_the_bad_argument(kwargs, argument):
    args = dict(lr=1e-3, from_batch=8, to_batch=32, rule="linear") | kwargs
    with pytest.raises(ArgumentError, match=rf"^scaled_learning_rate\({argument}=") as err:
        scaled_learning_rate(**args)
    assert err.value.argument == argument


def test_at_equal_data_reads_the_same_examples_in_its_own_steps_evaluated_as_often(tiny_config):
    base = tiny_config.replace(max_steps=128, per_device_train_batch_size=8, eval_steps=16)
    small, big = at_equal_data(base, 4), at_equal_data(base, 16)
    assert (small.max_steps, small.eval_steps, big.max_steps, big.eval_steps) == (256, 32, 64, 8)
    for arm in (small, big):
        assert arm.max_steps * arm.per_device_train_batch_size == 1024 and arm.max_steps // arm.eval_steps == 8
    accumulated = base.replace(per_device_train_batch_size=4, gradient_accumulation_steps=2)
    assert at_equal_data(accumulated, 16).max_steps == 64 and at_equal_data(accumulated, 16).gradient_accumulation_steps == 1
    with pytest.raises(ArgumentError, match=r"at_equal_data\(batch=3\).*divides the 1024 examples"):
        at_equal_data(base, 3)
