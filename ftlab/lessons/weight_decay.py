"""Weight decay, taken apart: AdamW versus "L2 in the loss", which weights get decayed, and how
much decay a run of a given length wants.

Four things a learner needs to reason about a weight-decay sweep:

1. **What AdamW actually does.** :func:`adamw_step` is one AdamW update in plain tensor ops,
   and :func:`adam_l2_step` is the older "add ``wd * w`` to the gradient" version. The tests
   check both against ``torch.optim`` and show that they give *different* weights for the same
   ``weight_decay``: in Adam an L2 penalty is divided by the adaptive denominator like every
   other gradient, so its pull is rescaled per coordinate; AdamW's decay is not ("decoupled",
   Loshchilov & Hutter, 2019).
2. **Which weights are decayed.** :func:`decay_parameter_names` re-derives the rule the Hugging
   Face ``Trainer`` uses to split parameters into a decayed and an undecayed group.
3. **What to plot.** :func:`ftlab.training.step.weight_norm` is the global norm of the weights,
   the quantity that decay visibly controls over a run.
4. **How much decay.** With AdamW the product ``lr * wd`` sets a time scale,
   ``tau_iter = 1 / (lr * wd)`` optimizer steps (:func:`adamw_timescale`): roughly how many
   steps the weights "remember" an update for. What matters is that time scale measured as a
   fraction of the run (:func:`timescale_fraction`). The "Power Lines" paper fits the best
   fraction as a power law in tokens per parameter, which turns into a weight-decay calculator
   (:func:`power_lines_tau_opt`, :func:`weight_decay_for`). The same paper fits the best batch
   size as a power law in the training tokens alone (:func:`batch_size_for`).

Reference for part 4: Shane Bergsma, Nolan Dey, Gurpreet Gosal, Gavia Gray, Daria Soboleva,
Joel Hestness (Cerebras), "Power Lines: Scaling Laws for Weight Decay and Batch Size in LLM
Pre-training", 2025, arXiv:2505.13738. The fits come from *pre-training*; for fine-tuning they
are a principled starting point for a sweep, not an answer.
"""
from __future__ import annotations

import math
import re

import torch
from torch import Tensor, nn

from ftlab.config.run_config import is_finite_number

__all__ = [
    "adamw_step", "adam_l2_step", "decay_parameter_names", "no_decay_parameter_names",
    "adamw_timescale", "timescale_fraction", "power_lines_tau_opt", "weight_decay_for",
    "batch_size_for", "batch_tokens_for", "NO_DECAY_NAME_PATTERNS", "NO_DECAY_LAYER_TYPES",
    "POWER_LINES_TAU_COEFF", "POWER_LINES_TAU_EXPONENT", "POWER_LINES_BATCH_COEFF",
    "POWER_LINES_BATCH_EXPONENT", "POWER_LINES_SEQUENCE_LENGTH",
]


# --------------------------------------------------------------------------------------------
# 1. The update rules
# --------------------------------------------------------------------------------------------

def _check_step(step: int) -> None:
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be an int >= 1 (the count of updates including this one), got {step!r}")


@torch.no_grad()
def _adam_moments_and_update(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, *,
                             step: int, lr: float, betas: tuple[float, float], eps: float) -> None:
    """The part Adam and AdamW share: update the two moment estimates, bias-correct them, and
    move ``param`` by ``lr * m_hat / (sqrt(v_hat) + eps)``.

    The operations are written in the same order as ``torch.optim``'s single-tensor Adam so the
    two agree to float32 rounding, but each one is the textbook formula.
    """
    beta1, beta2 = betas
    # First moment m: an exponential moving average of the gradient (momentum).
    # m <- beta1 * m + (1 - beta1) * g, written as a lerp towards g.
    exp_avg.lerp_(grad, 1 - beta1)
    # Second moment v: a moving average of the squared gradient, per coordinate. Its square root
    # is the "adaptive" scale that makes Adam's step size roughly independent of gradient size.
    # v <- beta2 * v + (1 - beta2) * g^2
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    # Both averages start at zero, so early on they are biased towards zero by a factor
    # (1 - beta^t). Dividing by that factor removes the bias: m_hat = m / (1 - beta1^t),
    # v_hat = v / (1 - beta2^t). The m correction is folded into the step size.
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    step_size = lr / bias_correction1
    # eps is added to sqrt(v_hat) (not to v_hat) and guards against dividing by ~0 for
    # coordinates that have seen no gradient.
    denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
    # p <- p - lr * m_hat / (sqrt(v_hat) + eps)
    param.addcdiv_(exp_avg, denom, value=-step_size)


@torch.no_grad()
def adamw_step(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, *, step: int, lr: float,
               betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01) -> None:
    """One AdamW update, in place on ``param``, ``exp_avg`` (first moment) and ``exp_avg_sq``
    (second moment). ``step`` counts updates *including this one* (1 on the first call), as
    ``torch.optim`` does after incrementing its ``state["step"]``.

    Term by term:

    1. **Decoupled decay**: ``p <- p * (1 - lr * wd)``. The weight itself shrinks by a fixed
       fraction each step. The gradient is not touched, so the decay never enters the Adam
       moments and is not rescaled by ``1 / sqrt(v)``. Every weight loses the same *fraction*,
       whatever its gradient history. Because the factor is ``lr * wd``, a learning-rate
       schedule also schedules the decay.
    2. **Adam step** on the unmodified gradient: moving averages ``m`` and ``v``, bias
       correction, and ``p <- p - lr * m_hat / (sqrt(v_hat) + eps)`` (see
       :func:`_adam_moments_and_update`).

    Without gradients, step 1 alone gives ``p_t = p_0 * (1 - lr*wd)^t ~ p_0 * exp(-t * lr * wd)``.
    That is where the time scale ``1 / (lr * wd)`` of :func:`adamw_timescale` comes from.
    """
    _check_step(step)
    if weight_decay != 0:
        param.mul_(1 - lr * weight_decay)
    _adam_moments_and_update(param, grad, exp_avg, exp_avg_sq, step=step, lr=lr, betas=betas, eps=eps)


@torch.no_grad()
def adam_l2_step(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, *, step: int, lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01) -> None:
    """One Adam update with an L2 penalty ``wd/2 * ||p||^2`` added to the loss. This is what
    ``torch.optim.Adam(weight_decay=wd)`` does, and what "weight decay" meant before AdamW.

    The penalty's gradient ``wd * p`` is added to the gradient *before* the moments:
    ``g' = g + wd * p``. From there on it is an ordinary Adam step. (The caller's ``grad`` is
    not modified. ``g'`` is a new tensor.)

    Why this differs from :func:`adamw_step`: the decay term now passes through Adam's
    normalisation ``m_hat / sqrt(v_hat)``. Where gradients are large, ``v`` is large and the
    decay is divided away. Where gradients are small, the decay dominates ``g'``, and Adam
    normalises it to a step of about ``lr`` per coordinate, however small ``wd`` is. So the
    effective decay is different for every coordinate and depends on its gradient history.
    SGD has no such normalisation, which is why L2 and weight decay are the same thing there
    and not in Adam.
    """
    _check_step(step)
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)
    _adam_moments_and_update(param, grad, exp_avg, exp_avg_sq, step=step, lr=lr, betas=betas, eps=eps)


# --------------------------------------------------------------------------------------------
# 2. Which parameters get decayed
# --------------------------------------------------------------------------------------------

#: Parameters inside a module of one of these types are never decayed (the Trainer's type rule).
#: Only ``nn.LayerNorm`` itself, not RMSNorm or GroupNorm: those are caught by name, or not at all.
NO_DECAY_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.LayerNorm,)

#: A parameter whose lower-cased dotted name matches any of these (``re.search``) is not decayed.
#: In order: anything containing "bias"; anything containing "layernorm" or "rmsnorm" (e.g.
#: ``input_layernorm``); a path component exactly ``norm`` (``model.norm.weight``); and a
#: component ending in ``_norm`` (``q_norm``, ``attn_norm``).
NO_DECAY_NAME_PATTERNS: tuple[str, ...] = (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")

_NO_DECAY_RES = tuple(re.compile(p) for p in NO_DECAY_NAME_PATTERNS)


def _excluded_by_name(name: str) -> bool:
    lowered = name.lower()
    return any(rx.search(lowered) for rx in _NO_DECAY_RES)


def _names_outside_layernorms(module: nn.Module) -> list[str]:
    # The walk matches the Trainer's: children first (each child module once, via named_children),
    # then the module's own parameters. Everything under a LayerNorm child is skipped. The root
    # itself is never type-checked, only its children.
    names: list[str] = []
    for child_name, child in module.named_children():
        if isinstance(child, NO_DECAY_LAYER_TYPES):
            continue
        names += [f"{child_name}.{n}" for n in _names_outside_layernorms(child)]
    names += list(module._parameters)  # own parameters only, in registration order
    return names


def decay_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters the Hugging Face ``Trainer`` puts in its weight-decay group.
    The result is the same list, in the same order, as ``Trainer.get_decay_parameter_names``
    (transformers v5).

    The rule: a parameter is **not** decayed if

    * it lives inside an ``nn.LayerNorm`` module (type check; RMSNorm classes are *not*
      ``nn.LayerNorm``, so they are caught by name instead), or
    * its lower-cased name contains ``bias``, ``layernorm`` or ``rmsnorm``, has a path component
      exactly ``norm``, or has a component ending in ``_norm`` (see ``NO_DECAY_NAME_PATTERNS``).

    Everything else is decayed. Why: biases and norm gains are few, one-dimensional, and set a
    scale or an offset instead of mixing features. Pulling a norm gain towards 0 shrinks the
    activations instead of simplifying the function, so decaying them does not regularise in a
    useful way.

    **Embeddings are decayed.** In v5 nothing excludes ``embed_tokens.weight`` or ``lm_head.weight``:
    neither is a LayerNorm and neither name matches. (Some pre-training recipes leave embeddings
    undecayed. The Trainer does not.) A tied ``lm_head`` is the same tensor as the embedding. Both
    names appear in the list, as in the Trainer's, but ``named_parameters()`` yields the tensor
    once, so it is decayed once.

    Trainability is not checked here. ``Trainer.create_optimizer`` later drops parameters with
    ``requires_grad=False`` from both groups, so with LoRA only the adapter matrices (``lora_A``
    / ``lora_B``, decayed) and any trainable biases (not decayed) reach the optimizer.
    """
    # The Trainer tests the name patterns on every suffix of the dotted name as it recurses
    # ("norm.weight", then "model.norm.weight"). A pattern that matches a suffix also matches
    # the whole name, because "^" at the start of a suffix becomes "\." in the whole name. So
    # one test on the whole name gives the same result.
    return [n for n in _names_outside_layernorms(model) if not _excluded_by_name(n)]


def no_decay_parameter_names(model: nn.Module) -> list[str]:
    """The complement of :func:`decay_parameter_names`, in ``model.named_parameters()`` order.
    This is the Trainer's second group, optimised with ``weight_decay=0.0``."""
    decayed = set(decay_parameter_names(model))
    return [n for n, _ in model.named_parameters() if n not in decayed]


# --------------------------------------------------------------------------------------------
# 3. Time scales and the Power Lines calculator
# --------------------------------------------------------------------------------------------

def _check_number(name: str, value: object, *, allow_zero: bool = False) -> float:
    if not is_finite_number(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'}, got {value!r}")
    return value


def adamw_timescale(learning_rate: float, weight_decay: float) -> float:
    """AdamW's time scale ``tau_iter = 1 / (lr * wd)``, in optimizer steps (``inf`` when either is 0).

    Decay alone multiplies each weight by ``(1 - lr*wd)`` per step, which is ``exp(-t / tau_iter)``
    after ``t`` steps. The weights are therefore an exponential moving average of recent updates
    over a window of about ``tau_iter`` steps (Wang & Aitchison, 2024). ``lr`` and ``wd`` only
    matter through their product here: ``lr=1e-4, wd=0.1`` and ``lr=1e-3, wd=0.01`` have the
    same time scale. With a schedule, use the peak ``lr`` for a rough figure.
    """
    lr = _check_number("learning_rate", learning_rate, allow_zero=True)
    wd = _check_number("weight_decay", weight_decay, allow_zero=True)
    if lr == 0 or wd == 0:
        return math.inf
    return 1.0 / (lr * wd)


def timescale_fraction(learning_rate: float, weight_decay: float, num_training_steps: int) -> float:
    """``tau_iter / num_training_steps``: the AdamW time scale as a fraction of the run.

    This is the number that transfers between runs of different lengths. A fraction above 1
    means the decay barely acts before training ends. A fraction far below 1 means the final
    weights keep only the last few percent of training. Power Lines finds the best value is
    below 1 and shrinks as you train on more tokens per parameter.
    """
    steps = _check_number("num_training_steps", num_training_steps)
    return adamw_timescale(learning_rate, weight_decay) / steps


#: Power Lines fit of the optimal time-scale fraction: tau_opt = 1.084 * TPP ** -0.527.
POWER_LINES_TAU_COEFF = 1.084
POWER_LINES_TAU_EXPONENT = -0.527
#: Power Lines fit of the optimal batch size: B_opt = 0.0306 * D_tokens ** 0.383 (B in sequences).
POWER_LINES_BATCH_COEFF = 0.0306
POWER_LINES_BATCH_EXPONENT = 0.383
#: Tokens per sequence in every Power Lines run, so the unit of B_opt's sequences.
POWER_LINES_SEQUENCE_LENGTH = 2048


def power_lines_tau_opt(tokens_per_parameter: float) -> float:
    """Optimal AdamW time-scale fraction ``tau_opt = 1.084 * TPP ** -0.527`` (Bergsma et al. 2025).

    ``TPP`` is training tokens divided by model parameters (20 is "Chinchilla-optimal"). In
    their fits ``tau = B / (eta * lambda * D)`` (the same quantity as :func:`timescale_fraction`,
    because the run has ``D / B`` steps). The best ``tau`` is not a constant: the longer a
    model is trained relative to its size, the shorter the averaging window should be, as a
    fraction of the run. At TPP=20 it is about 0.22.
    """
    tpp = _check_number("tokens_per_parameter", tokens_per_parameter)
    return POWER_LINES_TAU_COEFF * tpp ** POWER_LINES_TAU_EXPONENT


def weight_decay_for(batch_size: float, dataset_size: float, learning_rate: float,
                     tokens_per_parameter: float) -> float:
    """The Power Lines weight decay ``lambda_opt = B / (eta * tau_opt * D)``.

    This solves ``tau = B / (eta * lambda * D)`` for ``lambda`` at ``tau = tau_opt(TPP)``.
    ``batch_size`` (B) and ``dataset_size`` (D) must be in the **same unit**, e.g. both in
    sequences, because only their ratio (the number of steps) matters. ``learning_rate`` (eta)
    is the peak learning rate.

    What the formula says: for a fixed time scale, a larger batch (fewer steps) or a smaller
    learning rate needs *more* decay, and more data needs less. This is why a ``weight_decay``
    copied from a recipe with a different batch size or learning rate can be far from right.
    """
    b = _check_number("batch_size", batch_size)
    d = _check_number("dataset_size", dataset_size)
    eta = _check_number("learning_rate", learning_rate)
    tau = power_lines_tau_opt(tokens_per_parameter)
    return b / (eta * tau * d)


def batch_size_for(tokens: float) -> float:
    """Power Lines' optimal batch size ``B_opt = 0.0306 * D ** 0.383`` in **sequences** of
    :data:`POWER_LINES_SEQUENCE_LENGTH` (2048) tokens, with ``D`` (``tokens``) the total
    training tokens (Bergsma et al. 2025, fitted on pre-training runs of 2048-token sequences).

    B_opt depends on the amount of data only, not on model size: doubling the tokens makes the
    best batch about ``2 ** 0.383 = 1.30`` times larger. "Optimal" means: of the batch sizes
    tried on the same ``D`` (each with its own tuned weight decay), the one that reached the
    lowest loss.

    With shorter sequences (fine-tuning examples are often a few hundred tokens) the fit says
    nothing directly. Carrying it over as tokens per step (:func:`batch_tokens_for`) divided
    by your sequence length is an assumption, not a result of the paper: use it as the centre
    of a batch-size sweep, not as an answer.
    """
    d = _check_number("tokens", tokens)
    return POWER_LINES_BATCH_COEFF * d ** POWER_LINES_BATCH_EXPONENT


def batch_tokens_for(tokens: float) -> float:
    """:func:`batch_size_for` in tokens per optimizer step: ``B_opt * 2048``."""
    return batch_size_for(tokens) * POWER_LINES_SEQUENCE_LENGTH
