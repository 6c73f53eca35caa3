"""Lion from scratch (ftlab.lessons.lion) against the optimizer Trainer builds for optim="lion_32bit"
(bitsandbytes' Lion with 32-bit state), step by step with weight decay."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ftlab import RunConfig
from ftlab.lessons.lion import lion_step
from ftlab.training.arguments import training_optimizer

LR = 1e-3
STEPS = 8


def _problem(seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    p0 = torch.randn(17, 9, generator=gen)
    grads = [torch.randn(17, 9, generator=gen) * 0.1 for _ in range(STEPS)]
    return p0, grads


def _trainers_lion(config: RunConfig, param: nn.Parameter) -> torch.optim.Optimizer:
    """The optimizer Trainer builds, with the weight decay of Trainer's decay group (Trainer
    passes ``weight_decay`` per parameter group, not to the constructor)."""
    holder = nn.Module()
    holder.weight = param
    opt = training_optimizer(config, holder)
    opt.param_groups[0]["weight_decay"] = config.weight_decay
    return opt


@pytest.mark.parametrize("wd, betas", [(0.0, (0.9, 0.999)), (0.1, (0.9, 0.999)), (1.0, (0.9, 0.99)),
                                       (0.5, (0.95, 0.98))])
def test_lion_step_matches_trainers_lion_32bit(wd, betas):
    config = RunConfig(model="tiny", optim="lion_32bit", learning_rate=LR, weight_decay=wd,
                       adam_beta1=betas[0], adam_beta2=betas[1])
    p0, grads = _problem()
    param = nn.Parameter(p0.clone())
    opt = _trainers_lion(config, param)
    assert type(opt).__module__.startswith("bitsandbytes") and type(opt).__name__ == "Lion"
    assert opt.param_groups[0]["betas"] == betas  # Trainer maps adam_beta1/adam_beta2 onto Lion's betas
    ours, exp_avg = p0.clone(), torch.zeros_like(p0)
    for g in grads:
        param.grad = g.clone()
        opt.step()
        lion_step(ours, g, exp_avg, lr=LR, betas=betas, weight_decay=wd)
        assert (ours - param.detach()).abs().max().item() <= 1e-6
        assert (exp_avg - opt.state[param]["state1"]).abs().max().item() <= 1e-6
    assert not torch.equal(ours, p0)


def test_every_coordinate_moves_by_exactly_the_learning_rate():
    """Without decay a sign step moves each weight by +-lr, whatever the gradient's size."""
    p0, (g, *_) = _problem(seed=1)
    g = g * torch.logspace(-6, 2, g.numel()).reshape(g.shape)  # gradients over 8 orders of magnitude
    param = p0.clone()
    lion_step(param, g, torch.zeros_like(p0), lr=LR)
    assert torch.allclose((param - p0).abs(), torch.full_like(p0, LR), rtol=0, atol=1e-7)


def test_decay_alone_shrinks_by_lr_times_wd():
    """A zero gradient and zero momentum give no direction (sign 0): only the decay acts."""
    param = torch.full((4,), 2.0)
    lion_step(param, torch.zeros(4), torch.zeros(4), lr=0.01, weight_decay=0.5)
    assert torch.allclose(param, torch.full((4,), 2.0 * (1 - 0.01 * 0.5)))


def test_momentum_uses_beta2_and_direction_uses_beta1():
    """With beta1=0 the direction is the gradient's sign alone, while the momentum still
    averages with beta2: the two betas play different roles."""
    m = torch.tensor([1.0, -1.0])
    g = torch.tensor([-0.5, 0.5])
    param = torch.zeros(2)
    lion_step(param, g, m, lr=1.0, betas=(0.0, 0.9))
    assert torch.equal(param, torch.tensor([1.0, -1.0]))  # -sign(g)
    assert torch.allclose(m, torch.tensor([0.9 - 0.05, -0.9 + 0.05]))
