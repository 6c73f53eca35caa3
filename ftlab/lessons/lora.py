"""LoRA's forward pass, by hand: what peft's ``lora.Linear`` computes.

A LoRA layer keeps the pretrained linear layer frozen and adds a low-rank update beside it:
``W x + (alpha / r) · B A x``, with A (r x in) and B (out x r) the only trained weights. B
starts at zero, so training starts from the pretrained model exactly. The factor
``alpha / r`` keeps the update's size about the same when r changes; rsLoRA (Kalajdzievski,
2023) argues for ``alpha / sqrt(r)`` instead, so that a larger rank is not scaled down into
learning nothing. Chapter 06 checks this function against a peft layer.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def lora_scaling(alpha: float, r: int, *, rslora: bool = False) -> float:
    """The factor on the low-rank path: ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA."""
    return alpha / math.sqrt(r) if rslora else alpha / r


def lora_forward(x: Tensor, base: nn.Linear, A: Tensor, B: Tensor, *, alpha: float, rslora: bool = False) -> Tensor:
    """The output of a LoRA layer without dropout: the frozen ``base`` layer plus the scaled
    low-rank path through ``A`` (r x in) and ``B`` (out x r)."""
    return base(x) + (x @ A.T) @ B.T * lora_scaling(alpha, A.shape[0], rslora=rslora)


def lora_update(A: Tensor, B: Tensor, *, alpha: float, rslora: bool = False) -> Tensor:
    """The full-size weight change a LoRA pair stands for, ``scaling · B A`` (out x in): what
    merging the adapter into the base adds. Its rank is at most r."""
    with torch.no_grad():
        return B @ A * lora_scaling(alpha, A.shape[0], rslora=rslora)
