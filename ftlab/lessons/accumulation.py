"""Gradient accumulation's known subtlety: how the micro-batch losses are normalised.

With examples of different lengths, each micro-batch holds a different number of label
tokens. The large batch's loss is the sum of every label token's loss divided by the
number of label tokens in the whole batch. Accumulating ``k`` micro-batches by averaging
each one's *mean* loss (``loss / k`` per micro-batch, the textbook recipe) weights a token
of a short micro-batch more than a token of a long one, so its gradient is not the large
batch's. Dividing each micro-batch's *summed* token loss by the label tokens of the whole
effective batch is; that is what Trainer does when the model accepts
``num_items_in_batch`` (every causal LM in transformers), and why ftlab's test finds the
weights after one accumulated step equal to the large batch's.

:func:`accumulated_gradients` measures both recipes against the real large batch, on a
real model and real examples, so the difference is a number, not a claim.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F


def token_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(summed cross-entropy over the batch's label tokens, how many there are), with the
    shift a causal LM trains on: position t predicts token t + 1; -100 labels do not count."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    summed = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=-100,
                             reduction="sum")
    return summed, int((labels != -100).sum())


def _gradient(model: torch.nn.Module, backward: Callable[[], None]) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return grads


def accumulated_gradients(model: torch.nn.Module, examples: Sequence[Any], collator: Callable[[list], dict],
                          micro_batch: int) -> dict[str, float]:
    """The relative error ``|g - g_large| / |g_large|`` of two accumulation recipes over
    ``examples`` split into micro-batches of ``micro_batch``, against the gradient of all the
    examples in one batch: ``mean of micro-batch means`` and ``token-normalised`` (each
    micro-batch's summed loss over the label tokens of the whole effective batch). Also
    returns the label tokens per micro-batch (``tokens_min``/``tokens_max``), the reason
    the first recipe is off. The model is put in eval mode so dropout draws no masks."""
    model.eval()
    examples = list(examples)
    micro = [collator(examples[i:i + micro_batch]) for i in range(0, len(examples), micro_batch)]

    def large() -> None:
        summed, tokens = token_loss(model, collator(examples))
        (summed / tokens).backward()

    counts = [token_loss(model, b)[1] for b in micro]
    total = sum(counts)

    def mean_of_means() -> None:
        for b in micro:
            summed, tokens = token_loss(model, b)
            (summed / tokens / len(micro)).backward()

    def token_normalised() -> None:
        for b in micro:
            (token_loss(model, b)[0] / total).backward()

    reference = _gradient(model, large)
    error = lambda g: float((g - reference).norm() / reference.norm())
    return {"mean of micro-batch means": error(_gradient(model, mean_of_means)),
            "token-normalised": error(_gradient(model, token_normalised)),
            "tokens_min": min(counts), "tokens_max": max(counts)}
