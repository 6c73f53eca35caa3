"""What a fine-tune forgets, measured with no outside data.

Fine-tuning moves the weights toward the task, and with them the model's predictions on
everything else. The measure here asks how far they moved: on texts *outside* the task, the
mean over token positions of

    KL(tuned || base) = sum_v p_tuned(v) * (log p_tuned(v) - log p_base(v))

between the two models' next-token distributions. It is 0 when the tuned model predicts
exactly what the base predicted, and grows as it drifts, whichever way (a model can keep
its loss on a text while its distribution changes). It needs no labels: the base is the
reference.

Texts outside the task, with no download: the shipped ``tiny-pretrained`` base learnt money
prose written by :func:`ftlab.setup.pretrain.corpus` (ledger lines, exchange notes, interest;
never a question and its answer, and its own company and item names). :func:`held_out_texts`
writes more prose from the same generator under another seed: the base's own distribution,
in documents it never saw, which the finance Q&A task does not contain. For a 7B model the
same measure runs on any general text (a page of Wikipedia, code): what it knew before.

A LoRA adapter sits on top of the base weights, so one PeftModel is both models: pass it as
``base_model`` and ``tuned_model`` and the base is read with the adapter switched off
(``disable_adapter()``).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from ftlab.setup.pretrain import SEED, corpus

__all__ = ["HELD_OUT_SEED", "held_out_texts", "next_token_log_probs", "forgetting"]

HELD_OUT_SEED = 1007
"""The corpus seed of :func:`held_out_texts`: not the pretraining seed, so new documents."""


def held_out_texts(n: int = 64, seed: int = HELD_OUT_SEED) -> list[str]:
    """``n`` prose documents from the base's pretraining generator, under a seed it was not trained on."""
    if seed == SEED:
        raise ValueError(f"seed {SEED} is the pretraining corpus itself; choose another for held-out text")
    return [doc for doc in corpus(2 * n, seed) if isinstance(doc, str)][:n]


@torch.no_grad()
def next_token_log_probs(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """log p(next token) at every position, shape (batch, length, vocabulary), in float32 on the CPU
    (so two models on different devices can be compared)."""
    device = next(model.parameters()).device
    logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
    return F.log_softmax(logits.float(), dim=-1).cpu()


@contextlib.contextmanager
def _as_base(base_model: torch.nn.Module, tuned_model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    if base_model is tuned_model and hasattr(tuned_model, "disable_adapter"):  # one PeftModel: its base, adapter off
        with tuned_model.disable_adapter():
            yield tuned_model
    else:
        yield base_model


@torch.no_grad()
def forgetting(base_model: torch.nn.Module, tuned_model: torch.nn.Module, texts: Sequence[str],
               tokenizer: PreTrainedTokenizerBase, max_length: int = 256, batch_size: int = 16) -> float:
    """Mean KL(tuned || base) in nats per token, over every real token position of ``texts``."""
    if not texts:
        raise ValueError("no texts to measure on")
    modes = {m: m.training for m in (base_model, tuned_model)}
    total, positions = 0.0, 0
    try:
        for m in modes:
            m.eval()
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[start:start + batch_size]), return_tensors="pt", padding=True, truncation=True,
                            max_length=max_length, add_special_tokens=False)
            tuned = next_token_log_probs(tuned_model, enc["input_ids"], enc["attention_mask"])
            with _as_base(base_model, tuned_model) as base_view:
                base = next_token_log_probs(base_view, enc["input_ids"], enc["attention_mask"])
            kl = (tuned.exp() * (tuned - base)).sum(-1)  # (batch, length)
            real = enc["attention_mask"].bool()
            total += float(kl[real].sum())
            positions += int(real.sum())
    finally:
        for m, was_training in modes.items():
            m.train(was_training)
    return total / positions
