"""ftlab.lessons.timing: arms timed in alternating rounds, a ratio a finding only when every round agrees."""
from __future__ import annotations

import pytest

from ftlab import ArgumentError
from ftlab.lessons.timing import Timings, interleaved


def test_the_rounds_alternate_and_every_call_is_timed():
    order = []
    timings = interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, rounds=4, warmup=1)
    assert order == ["a", "b"] + ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert {k: len(v) for k, v in timings.seconds.items()} == {"a": 4, "b": 4}


def test_a_ratio_is_a_finding_only_when_every_round_agrees():
    slower = Timings({"a": (1.0, 1.0, 1.0), "b": (1.5, 1.2, 1.3)})
    assert slower.ratios("b", "a") == (1.5, 1.2, 1.3)
    assert slower.finding("b", "a") and "slower in every round" in slower.describe("b", "a")
    mixed = Timings({"a": (1.0, 1.0, 1.0), "b": (1.5, 0.8, 1.3)})
    assert not mixed.finding("b", "a") and "can't tell" in mixed.describe("b", "a")
    assert not Timings({"a": (1.0, 1.0), "b": (2.0, 2.0)}).finding("b", "a")  # two rounds are too few


def test_bad_arguments_name_the_argument():
    with pytest.raises(ArgumentError, match="rounds"):
        interleaved({"a": lambda: None}, rounds=0)
