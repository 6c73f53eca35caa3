"""Adafactor's factored second moment, taken apart: a row and a column vector instead of a matrix.

Adam keeps, for every weight, a moving average of its squared gradient (``exp_avg_sq``, ``v``):
a full ``rows x cols`` matrix per weight matrix. Adafactor (Shazeer & Stern 2018,
arXiv:1804.04235) keeps only that matrix's **row means** (``rows`` values) and **column means**
(``cols`` values), and rebuilds an estimate of the full matrix from them when it needs one:

    V_hat[i, j] = row[i] * col[j] / mean(row)

This is the rank-1 matrix closest to ``V`` in the paper's sense (generalized KL divergence), and
it has the same row and column sums as ``V`` (the paper writes it with sums, ``R C / sum(R)``;
the means here give the same matrix). It is exact when ``V`` itself is rank 1 (the square of a
gradient that is an outer product ``a b^T`` is ``a^2 (b^2)^T``), and close when one row's squared
gradients are roughly another row's times a factor.

What this module gives a chapter:

* :func:`second_moment_shapes` / :func:`second_moment_numel`: the state size from a parameter's
  shape alone, checked in the tests against what ``transformers.optimization.Adafactor`` keeps
  after a real step (the same arithmetic prices Adafactor in :mod:`ftlab.config.optimizers`).
* :func:`row_col_statistics` and :func:`rank1_reconstruction`: "full matrix vs factored" for
  one squared-gradient matrix, to show what is kept and what is lost.
* :func:`beta2_at` and :func:`update_factored_second_moment`: the moving average Adafactor
  keeps over steps, with its step-dependent ``beta2``, checked against ``exp_avg_sq_row`` /
  ``exp_avg_sq_col``.

As Trainer builds it (``optim="adafactor"``: ``beta1=None``, ``relative_step=False``,
``scale_parameter=False``), Adafactor keeps no first moment at all, so a matrix costs
``rows + cols`` values of state instead of AdamW's ``2 * rows * cols``. A 1-D parameter (a norm
gain, a bias) has nothing to factor and keeps a full ``exp_avg_sq``. For 16-bit parameters the
state is fp32: the gradient is cast to fp32 before the statistics are taken.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ftlab.config.optimizers import second_moment_numel, second_moment_shapes
from ftlab.errors import ArgumentError

__all__ = ["second_moment_shapes", "second_moment_numel", "row_col_statistics", "rank1_reconstruction",
           "beta2_at", "update_factored_second_moment", "ADAFACTOR_DECAY_RATE", "ADAFACTOR_EPS"]

ADAFACTOR_DECAY_RATE = -0.8
"""transformers' default ``decay_rate``: ``beta2`` at step ``t`` is ``1 - t ** -0.8``."""
ADAFACTOR_EPS = 1e-30
"""transformers' default ``eps[0]``, added to every squared gradient so that no statistic is 0."""


def row_col_statistics(squared: Tensor) -> tuple[Tensor, Tensor]:
    """The row means and column means of a (batch of) squared-gradient matrix ``squared``
    (``... x rows x cols``): the two vectors Adafactor keeps instead of the matrix. A 1-D
    parameter has no rows and columns to average over: Adafactor keeps its full second moment."""
    return squared.mean(dim=-1), squared.mean(dim=-2)


def rank1_reconstruction(row: Tensor, col: Tensor) -> Tensor:
    """The full matrix Adafactor's two vectors stand for: ``outer(row, col) / mean(row)``.

    It has the same row means as ``row`` and the same column means as ``col``. The Adafactor
    update divides the gradient by the square root of this matrix, never forming it (it
    multiplies a per-row and a per-column factor); forming it here is for showing it.
    """
    return row.unsqueeze(-1) * col.unsqueeze(-2) / row.mean(dim=-1, keepdim=True).unsqueeze(-1)


def beta2_at(step: int, decay_rate: float = ADAFACTOR_DECAY_RATE) -> float:
    """Adafactor's moving-average coefficient at ``step`` (counting from 1): ``1 - step ** decay_rate``.

    It grows with the step instead of being a constant like Adam's 0.999: 0 at step 1 (the first
    statistics are the first squared gradient, no bias correction needed), about 0.43 at step
    2, 0.84 at step 10, 0.996 at step 1000. Early on the average follows the gradients closely;
    later it remembers longer.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ArgumentError("beta2_at", "step", step, "an int >= 1: the count of updates including this one")
    return 1.0 - step ** decay_rate


@torch.no_grad()
def update_factored_second_moment(row: Tensor, col: Tensor, grad: Tensor, *, step: int,
                                  decay_rate: float = ADAFACTOR_DECAY_RATE, eps: float = ADAFACTOR_EPS) -> None:
    """Move Adafactor's row and column statistics (``row``, ``col``, in place; zeros before the
    first step) towards those of the new squared gradient: ``row <- beta2 * row + (1 - beta2) *
    rowmean(g^2 + eps)``, and the same for ``col``, with ``beta2 = beta2_at(step)``.

    Averaging the statistics is the same as taking the statistics of the averaged matrix
    (means are linear), so ``rank1_reconstruction(row, col)`` estimates the moving average of
    ``g^2`` (what Adam stores in full as ``exp_avg_sq``) without that matrix ever being stored.
    """
    beta2 = beta2_at(step, decay_rate)
    row_now, col_now = row_col_statistics(grad.float() ** 2 + eps)
    row.mul_(beta2).add_(row_now, alpha=1.0 - beta2)
    col.mul_(beta2).add_(col_now, alpha=1.0 - beta2)
