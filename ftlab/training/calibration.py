"""How far a model's confidence in its answer tokens is from how often it is right.

Loss mixes two things: whether the model ranks the right token first, and how much
probability it puts there. Calibration separates the second: among answer tokens predicted
with about 70% confidence, about 70% should be right. Label smoothing is meant to improve
exactly this (its training target never asks for 100%), which the eval loss cannot show,
so every run records the expected calibration error of its validation answer tokens.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ftlab.training.heldout import answer_logits

CALIBRATION_BINS = 10
"""Equal-width confidence bins of the reliability diagram and the ECE."""


def answer_confidences(model: torch.nn.Module, examples: Sequence[Any], collator: Callable[[list], dict],
                       batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence, correct) of every answer token of ``examples``: the probability of the
    model's top next-token choice, and whether that choice is the label (the answer positions
    of :func:`ftlab.training.heldout.answer_logits`)."""
    confidence, correct = [], []
    for logits, labels in answer_logits(model, examples, collator, batch_size):
        top = logits.softmax(-1).max(-1)
        confidence.append(top.values.cpu())
        correct.append((top.indices == labels).cpu())
    return torch.cat(confidence), torch.cat(correct)


def reliability(confidence: torch.Tensor, correct: torch.Tensor, bins: int = CALIBRATION_BINS) -> list[dict[str, float]]:
    """Per equal-width confidence bin: its tokens, their mean confidence and their accuracy
    (empty bins are left out). What a reliability diagram draws."""
    which = (confidence * bins).long().clamp(max=bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            rows.append({"low": b / bins, "high": (b + 1) / bins, "tokens": int(inside.sum()),
                         "confidence": float(confidence[inside].mean()), "accuracy": float(correct[inside].float().mean())})
    return rows


def expected_calibration_error(rows: Sequence[dict[str, float]]) -> float:
    """Σ over bins of (tokens in the bin / all tokens) x |accuracy − confidence|: 0 for a
    perfectly calibrated model."""
    total = sum(r["tokens"] for r in rows)
    return sum(r["tokens"] / total * abs(r["accuracy"] - r["confidence"]) for r in rows)
