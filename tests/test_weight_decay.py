"""AdamW and Adam+L2 from scratch against torch.optim, the Trainer's decay groups, and the
Power Lines calculator against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from ftlab.lessons.weight_decay import (adam_l2_step, adamw_step, adamw_timescale, decay_parameter_names,
                                no_decay_parameter_names, power_lines_tau_opt,
                                timescale_fraction, weight_decay_for)
from ftlab.training.step import weight_norm

LR = 1e-2
BETAS = (0.9, 0.999)
EPS = 1e-8


def _run_ours(step_fn, p0: torch.Tensor, grads: list[torch.Tensor], wd: float) -> list[torch.Tensor]:
    param, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
    out = []
    for t, g in enumerate(grads, start=1):
        step_fn(param, g, m, v, step=t, lr=LR, betas=BETAS, eps=EPS, weight_decay=wd)
        out.append(param.clone())
    return out


def _run_torch(opt_cls, p0: torch.Tensor, grads: list[torch.Tensor], wd: float) -> list[torch.Tensor]:
    param = nn.Parameter(p0.clone())
    opt = opt_cls([param], lr=LR, betas=BETAS, eps=EPS, weight_decay=wd)
    out = []
    for g in grads:
        param.grad = g.clone()
        opt.step()
        out.append(param.detach().clone())
    return out


def _problem(seed: int = 0, steps: int = 10) -> tuple[torch.Tensor, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    p0 = torch.randn(17, 9, generator=gen)
    grads = [torch.randn(17, 9, generator=gen) * 0.1 for _ in range(steps)]
    return p0, grads


@pytest.mark.parametrize("wd", [0.0, 0.01, 0.1, 1.0])
def test_adamw_step_matches_torch_adamw(wd):
    p0, grads = _problem()
    ours, ref = _run_ours(adamw_step, p0, grads, wd), _run_torch(torch.optim.AdamW, p0, grads, wd)
    for a, b in zip(ours, ref):
        assert (a - b).abs().max().item() <= 1e-6
    assert not torch.equal(ours[-1], p0)  # it did move


@pytest.mark.parametrize("wd", [0.0, 0.01, 0.1, 1.0])
def test_adam_l2_step_matches_torch_adam(wd):
    p0, grads = _problem(seed=1)
    ours, ref = _run_ours(adam_l2_step, p0, grads, wd), _run_torch(torch.optim.Adam, p0, grads, wd)
    for a, b in zip(ours, ref):
        assert (a - b).abs().max().item() <= 1e-6


def test_adam_l2_does_not_modify_callers_grad():
    p, g = torch.ones(4), torch.full((4,), 0.5)
    adam_l2_step(p, g, torch.zeros(4), torch.zeros(4), step=1, lr=LR, weight_decay=0.1)
    assert torch.equal(g, torch.full((4,), 0.5))


def test_l2_in_adam_and_adamw_differ_for_the_same_weight_decay():
    p0, grads = _problem(seed=2)
    wd = 0.1
    adamw, l2 = _run_ours(adamw_step, p0, grads, wd)[-1], _run_ours(adam_l2_step, p0, grads, wd)[-1]
    assert (adamw - l2).abs().max().item() > 1e-3
    # With wd=0 both are plain Adam, so the difference comes from where the decay enters.
    assert torch.equal(_run_ours(adamw_step, p0, grads, 0.0)[-1], _run_ours(adam_l2_step, p0, grads, 0.0)[-1])


def test_decoupling_shown_with_a_zero_gradient():
    """With no loss gradient, AdamW shrinks every weight by exactly the factor (1 - lr*wd). Adam+L2
    feeds wd*p through Adam's normalisation instead: at step 1, m_hat/sqrt(v_hat) = g/|g| = sign(p),
    so every weight moves by about lr, whatever wd is."""
    p0 = torch.randn(50, generator=torch.Generator().manual_seed(3))
    zero = torch.zeros_like(p0)
    for wd in (1e-3, 1e-1):
        p = p0.clone()
        adamw_step(p, zero, torch.zeros_like(p0), torch.zeros_like(p0), step=1, lr=LR, weight_decay=wd)
        torch.testing.assert_close(p, p0 * (1 - LR * wd), rtol=0, atol=0)

        q = p0.clone()
        adam_l2_step(q, zero, torch.zeros_like(p0), torch.zeros_like(p0), step=1, lr=LR, weight_decay=wd)
        torch.testing.assert_close(q, p0 - LR * torch.sign(p0), rtol=1e-4, atol=1e-6)  # independent of wd


def test_step_must_count_from_one():
    with pytest.raises(ValueError, match="step"):
        adamw_step(torch.ones(2), torch.ones(2), torch.zeros(2), torch.zeros(2), step=0, lr=LR)


# ---------------------------------------------------------------------------------------------
# Decay groups
# ---------------------------------------------------------------------------------------------

def _tiny_llama(tie: bool = False) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie))


@pytest.fixture(scope="module")
def trainer(tmp_path_factory) -> Trainer:
    args = TrainingArguments(output_dir=str(tmp_path_factory.mktemp("wd_trainer")), report_to=[], use_cpu=True)
    return Trainer(model=_tiny_llama(), args=args)


@pytest.mark.parametrize("tie", [False, True])
def test_decay_names_match_trainer_on_tiny_llama(trainer, tie):
    model = _tiny_llama(tie)
    ours = decay_parameter_names(model)
    assert ours == trainer.get_decay_parameter_names(model)
    # The Trainer decays the embeddings and the LM head; it skips every RMSNorm gain by name.
    assert "model.embed_tokens.weight" in ours
    assert "lm_head.weight" in ours
    no_decay = no_decay_parameter_names(model)
    assert no_decay == ["model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
                        "model.layers.1.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight",
                        "model.norm.weight"]
    all_names = [n for n, _ in model.named_parameters()]
    assert not set(ours) & set(no_decay)
    if tie:
        # A tied head is the embedding tensor under a second name. named_parameters() (which the
        # Trainer uses to build its groups) lists it once, but both names are in the decay list.
        assert model.lm_head.weight is model.model.embed_tokens.weight
        assert "lm_head.weight" not in all_names
        assert set(ours) | set(no_decay) == set(all_names) | {"lm_head.weight"}
    else:
        assert set(ours) | set(no_decay) == set(all_names)


class _RMS(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))


class _Toy(nn.Module):
    """Every branch of the rule: a LayerNorm caught by type under a name with no 'norm' in it
    (ln_f), norms caught only by name, look-alike names that must still be decayed, biases, a
    root-level parameter, and one module registered under two names."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))
        self.Bias_Term = nn.Parameter(torch.zeros(3))
        self.proj = nn.Linear(3, 3)
        self.ln_f = nn.LayerNorm(3)
        self.blocks = nn.Sequential(nn.Linear(3, 3, bias=False), nn.LayerNorm(3), nn.GroupNorm(1, 3))
        self.q_norm = _RMS(3)
        self.LayerNormish = _RMS(3)
        self.norm = _RMS(3)
        self.normalizer = nn.Linear(3, 3, bias=False)
        self.alias = self.proj  # same module twice: each parent lists a child module once


def test_decay_names_match_trainer_on_every_branch_of_the_rule(trainer):
    toy = _Toy()
    ours = decay_parameter_names(toy)
    assert ours == trainer.get_decay_parameter_names(toy)
    assert ours == ["proj.weight", "blocks.0.weight", "blocks.2.weight", "normalizer.weight", "scale"]


@pytest.mark.parametrize("tie", [False, True])
def test_weight_norm(tie):
    model = _tiny_llama(tie)
    params = list(model.parameters())  # each tensor once, tied weights included once
    expected = torch.cat([p.detach().flatten() for p in params]).norm().item()
    assert weight_norm(model) == pytest.approx(expected, rel=1e-6)
    model.model.embed_tokens.weight.requires_grad_(False)
    rest = [p for p in params if p.requires_grad]
    assert weight_norm(model) == pytest.approx(torch.cat([p.detach().flatten() for p in rest]).norm().item(), rel=1e-6)
    assert weight_norm(model, trainable_only=False) == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Time scales and Power Lines
# ---------------------------------------------------------------------------------------------

def test_adamw_timescale():
    assert adamw_timescale(1e-3, 0.1) == pytest.approx(1e4)
    assert adamw_timescale(1e-4, 0.1) == pytest.approx(adamw_timescale(1e-3, 0.01))  # only the product matters
    assert adamw_timescale(0.0, 0.1) == math.inf and adamw_timescale(1e-3, 0) == math.inf
    assert timescale_fraction(1e-3, 0.1, 1000) == pytest.approx(10.0)
    assert timescale_fraction(1e-3, 0.0, 1000) == math.inf
    with pytest.raises(ValueError, match="weight_decay"):
        adamw_timescale(1e-3, -0.1)
    with pytest.raises(ValueError, match="num_training_steps"):
        timescale_fraction(1e-3, 0.1, 0)


def test_power_lines_tau_opt():
    # ln 20 = 2.995732; * 0.527 = 1.578751; exp(-1.578751) = 0.206233; * 1.084 = 0.223556
    assert power_lines_tau_opt(20) == pytest.approx(0.2235, abs=1e-4)


def test_power_lines_weight_decay():
    # eta * D = 4e-4 * 3,183,840 = 1273.536; * tau_opt 0.223556 = 284.707; 96 / 284.707 = 0.33719
    assert f"{weight_decay_for(96, 3_183_840, 4e-4, 20):.3g}" == "0.337"
    # 3.5x the learning rate needs 3.5x less decay: 0.33719 * 4e-4 / 1.4e-3 = 0.096340
    assert f"{weight_decay_for(96, 3_183_840, 1.4e-3, 20):.3g}" == "0.0963"
    # By construction the run's time-scale fraction is tau_opt: D / B steps.
    lam = weight_decay_for(96, 3_183_840, 4e-4, 20)
    assert timescale_fraction(4e-4, lam, 3_183_840 / 96) == pytest.approx(power_lines_tau_opt(20))


@pytest.mark.parametrize("kwargs, bad", [
    (dict(batch_size=0, dataset_size=1e6, learning_rate=1e-3, tokens_per_parameter=20), "batch_size"),
    (dict(batch_size=8, dataset_size=-1, learning_rate=1e-3, tokens_per_parameter=20), "dataset_size"),
    (dict(batch_size=8, dataset_size=1e6, learning_rate=0, tokens_per_parameter=20), "learning_rate"),
    (dict(batch_size=8, dataset_size=1e6, learning_rate=1e-3, tokens_per_parameter=math.nan), "tokens_per_parameter"),
    (dict(batch_size="8", dataset_size=1e6, learning_rate=1e-3, tokens_per_parameter=20), "batch_size"),
])
def test_power_lines_rejects_bad_inputs(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        weight_decay_for(**kwargs)


def test_power_lines_tau_opt_rejects_bad_tokens_per_parameter():
    with pytest.raises(ValueError, match="tokens_per_parameter"):
        power_lines_tau_opt(-5)
