"""NEFTune: noisy embeddings during fine-tuning, written out so you can see what it does.

NEFTune (Jain et al. 2023, "NEFTune: Noisy Embeddings Improve Instruction Finetuning",
arXiv:2310.05914) adds uniform noise to the token embeddings on every training forward pass
and does nothing at evaluation or generation time. The noise is scaled as

    m = alpha / sqrt(L * d)        noise ~ Uniform(-m, m), one draw per element

with ``L`` the sequence length and ``d`` the hidden size. Why that scale: a uniform variable
on ``[-m, m]`` has variance ``m**2 / 3``. Summed over the ``L * d`` elements of one sequence's
embeddings, the noise has squared norm about ``L * d * m**2 / 3 = alpha**2 / 3``. The total
noise in a sequence is therefore set by ``alpha`` alone, whatever the length or width, and one
``alpha`` (the paper explores 5 to 15) carries over between models. Per element the noise is
small: for d=576 and L=256, alpha=5 gives m = 0.013.

The idea is that the noise stops the model from fitting the exact embeddings of the
fine-tuning set. It acts as a regulariser, in the same family as dropout and weight decay.

``L`` is the length of the row the hook sees (``output.size(1)``), as in the paper and in
transformers: the padded length of the batch, or with packing the packed row's length. Per
token the noise has norm about ``alpha / sqrt(3 * L)`` while a token's embedding norm does
not depend on ``L``, so relative to the embeddings the noise falls as ``1 / sqrt(L)``: with
examples of ~100 tokens packed into rows of 2048, the same ``alpha`` gives each token about
``sqrt(2048 / 100) = 4.5`` times less noise than in padded batches (chapter 04 measures it).

:func:`attach_neftune` gives the same embeddings as transformers' own hook
(``transformers.integrations.neftune.neftune_post_forward_hook``, which ``Trainer`` installs
when ``neftune_noise_alpha`` is set), bit for bit under the same seed. Use one or the other:
with both, the noise is added twice.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ftlab.config.run_config import is_finite_number

__all__ = ["neftune_noise", "neftune_scale", "attach_neftune"]


def _check_alpha(alpha: float) -> float:
    if not is_finite_number(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    return float(alpha)


def neftune_scale(embeddings: Tensor, alpha: float) -> float:
    """The half-width ``m = alpha / sqrt(L * d)`` of NEFTune's noise for ``embeddings`` of shape
    ``(batch, L, d)`` (or ``(L, d)``).

    The value is computed the way transformers computes it, as ``alpha / sqrt(tensor(L * d))``
    in torch's default float dtype (float32). It is therefore the float32 rounding of the exact
    value, not the float64 one. That makes no difference to training, but it is what lets
    :func:`attach_neftune` match the library's hook exactly.
    """
    alpha = _check_alpha(alpha)
    if embeddings.dim() < 2:
        raise ValueError(f"embeddings must have shape (batch, L, d) or (L, d), got {tuple(embeddings.shape)}")
    seq_len, hidden = embeddings.shape[-2], embeddings.shape[-1]
    if seq_len * hidden == 0:
        raise ValueError(f"embeddings are empty: shape {tuple(embeddings.shape)}")
    return float(alpha / torch.sqrt(torch.tensor(seq_len * hidden)))


def neftune_noise(embeddings: Tensor, alpha: float, generator: torch.Generator | None = None) -> Tensor:
    """A new tensor of NEFTune noise shaped like ``embeddings``: each element drawn independently
    from ``Uniform(-m, m)`` with ``m = alpha / sqrt(L * d)`` (see :func:`neftune_scale`).

    Returns the noise only; add it yourself (``embeddings + noise``). The draw uses exactly
    ``embeddings.numel()`` uniform samples from ``generator`` (the global RNG when None),
    filled in memory order. transformers' hook draws the same samples in the same order, so
    both consume the RNG identically. The noise has the embeddings' dtype and device.
    """
    m = neftune_scale(embeddings, alpha)
    return torch.empty_like(embeddings).uniform_(-m, m, generator=generator)


def attach_neftune(model: nn.Module, alpha: float) -> RemovableHandle:
    """Turn NEFTune on for ``model``: a forward hook on ``model.get_input_embeddings()`` that
    returns ``embeddings + neftune_noise(embeddings, alpha)``. Call ``.remove()`` on the returned
    handle to turn it off. The handle also works as a context manager.

    The noise is added only while the embedding module is in training mode, i.e. after
    ``model.train()``. After ``model.eval()``, evaluation losses and ``generate()`` see clean
    embeddings and nothing is drawn from the RNG. This is the point of NEFTune: the noise is a
    training-time regulariser, and the model is used without it.

    Works on a PEFT-wrapped model too (``PeftModel`` forwards ``get_input_embeddings`` to the
    base model). The hook adds noise to the output out of place, so gradients flow to the
    embedding weights as usual.
    """
    alpha = _check_alpha(alpha)
    embedding_module = model.get_input_embeddings()
    if embedding_module is None:
        raise ValueError(f"{type(model).__name__}.get_input_embeddings() returned None; nothing to attach to")

    def hook(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        if not module.training:
            return output
        return output + neftune_noise(output, alpha)

    return embedding_module.register_forward_hook(hook)
