"""Exact-match scoring of generated answers.

Exact match is strict on purpose: "15%" is not "15.00%", and no rounding ever turns a
wrong number into a right one. Normalization only removes what carries no meaning for
the answer: surrounding whitespace, a trailing period, a currency symbol before a number,
thousands separators, letter case of currency codes, and anything the model writes after
the first line (it keeps talking; the answer is the first line).
"""
from __future__ import annotations

import re
from typing import Sequence

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?:\D|$))")
_SYMBOL = re.compile(r"(?<![\w])[$€£](?=\s?-?\d)")


def normalize_answer(text: str) -> str:
    """The comparable form of an answer (see the module docstring for what is dropped)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    first = first.rstrip(".").strip()
    first = _SYMBOL.sub("", first)
    while _THOUSANDS.search(first):
        first = _THOUSANDS.sub("", first)
    return " ".join(first.split()).upper()


def exact_match(prediction: str, reference: str) -> bool:
    """True when the two answers are the same after normalization.

    The reference goes through the same normalization as the prediction, so a reference
    written as "$1,284.50" and one written as "1284.50" score the same way.
    """
    return normalize_answer(prediction) == normalize_answer(reference)


def exact_match_rate(predictions: Sequence[str], references: Sequence[str]) -> float:
    """The fraction of exact matches; the two sequences must be equally long and non-empty."""
    if len(predictions) != len(references):
        raise ValueError(f"exact_match_rate got {len(predictions)} predictions but {len(references)} references")
    if not references:
        raise ValueError("exact_match_rate needs at least one reference")
    return sum(exact_match(p, r) for p, r in zip(predictions, references)) / len(references)
