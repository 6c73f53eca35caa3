"""Scoring the answer tokens of held-out examples under teacher forcing.

A verdict needs a number the selection never saw: rates and epochs are chosen on the
validation split, so the run reports its loss on the test split as well. Beside the loss it
reports a task metric a learner judges by, answer-token accuracy: the fraction of answer
tokens whose most likely next token is the right one, given the right tokens before it.
Exact match by generation is the stricter task metric, but the byte-level base scores near 0
on it, where token accuracy still moves.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AnswerScore:
    """Mean cross-entropy (nats per answer token) and top-1 accuracy over ``tokens`` answer tokens."""

    loss: float
    token_accuracy: float
    tokens: int


@torch.no_grad()
def answer_logits(model: torch.nn.Module, examples: Sequence[Any], collator: Callable[[list], dict],
                  batch_size: int = 16) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(logits, labels) of the answer positions of each batch of ``examples``, in eval mode.

    Only positions with a label count (the prompt is -100), with the causal shift: position
    t predicts token t + 1. The model's training mode is restored afterwards."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for start in range(0, len(examples), batch_size):
            rows = [examples[i] for i in range(start, min(start + batch_size, len(examples)))]  # a Dataset slice is columns
            batch = {k: v.to(device) for k, v in collator(rows).items()}
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            keep = labels != -100
            yield logits[keep].float(), labels[keep]
    finally:
        model.train(was_training)


def score_answers(model: torch.nn.Module, examples: Sequence[Any], collator: Callable[[list], dict],
                  batch_size: int = 16) -> AnswerScore:
    """Loss and token accuracy over every answer token of ``examples`` (a token mean, so a long
    answer weighs more than a short one, as in training)."""
    total, right, count = 0.0, 0, 0
    for logits, labels in answer_logits(model, examples, collator, batch_size):
        total += float(F.cross_entropy(logits, labels, reduction="sum"))
        right += int((logits.argmax(-1) == labels).sum())
        count += int(labels.numel())
    if not count:
        raise ValueError("no answer tokens to score: every label is -100")
    return AnswerScore(loss=total / count, token_accuracy=right / count, tokens=count)
