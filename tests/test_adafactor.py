"""Adafactor's factored second moment (ftlab.lessons.adafactor) against the state transformers'
Adafactor keeps, as Trainer builds it for optim="adafactor"."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ftlab import RunConfig
from ftlab.lessons.adafactor import (beta2_at, rank1_reconstruction, row_col_statistics, second_moment_numel,
                             second_moment_shapes, update_factored_second_moment)
from ftlab.errors import ArgumentError
from ftlab.setup.models import load_model
from ftlab.training.arguments import training_optimizer

STATE_KEYS = ("exp_avg_sq_row", "exp_avg_sq_col", "exp_avg_sq")


@pytest.fixture(scope="module")
def tiny_after_one_step():
    """The tiny preset, fully trainable, after one real step of Trainer's Adafactor; also the
    gradients that step used."""
    torch.manual_seed(0)
    cfg = RunConfig(model="tiny", lora_r=0, optim="adafactor", learning_rate=1e-3)
    model, _ = load_model(cfg)
    opt = training_optimizer(cfg, model)
    ids = torch.randint(0, 200, (2, 24), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=ids).loss.backward()
    grads = {p: p.grad.clone() for p in model.parameters()}
    opt.step()
    return model, opt, grads


def test_state_size_from_shapes_is_what_adafactor_keeps(tiny_after_one_step):
    model, opt, _ = tiny_after_one_step
    assert type(opt).__name__ == "Adafactor" and opt.param_groups[0]["beta1"] is None  # no first moment
    kept, predicted = 0, 0
    for name, p in model.named_parameters():
        state = opt.state[p]
        shapes = [tuple(state[k].shape) for k in STATE_KEYS if k in state]
        assert shapes == second_moment_shapes(tuple(p.shape)), name
        assert "exp_avg" not in state, name
        # besides the moments only the step count (an int) and RMS (a 0-dim tensor) are kept
        assert set(state) - set(STATE_KEYS) == {"step", "RMS"} and state["RMS"].dim() == 0, name
        kept += sum(state[k].numel() * state[k].element_size() for k in STATE_KEYS if k in state)
        predicted += 4 * second_moment_numel(tuple(p.shape))
    assert kept == predicted
    n = sum(p.numel() for p in model.parameters())
    assert predicted < 0.01 * 8 * n  # under 1% of AdamW's two fp32 moments on this model


def test_one_d_parameters_keep_a_full_second_moment(tiny_after_one_step):
    model, opt, _ = tiny_after_one_step
    norms = [(n, p) for n, p in model.named_parameters() if p.dim() == 1]
    assert norms  # the RMSNorm gains
    for name, p in norms:
        assert set(opt.state[p]) & set(STATE_KEYS) == {"exp_avg_sq"}, name
        assert opt.state[p]["exp_avg_sq"].shape == p.shape


def test_row_and_column_statistics_match_the_real_step(tiny_after_one_step):
    model, opt, grads = tiny_after_one_step
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    for p in matrices:
        row, col = (torch.zeros(s) for s in second_moment_shapes(tuple(p.shape)))
        update_factored_second_moment(row, col, grads[p], step=1)
        assert torch.allclose(row, opt.state[p]["exp_avg_sq_row"], rtol=1e-6, atol=0)
        assert torch.allclose(col, opt.state[p]["exp_avg_sq_col"], rtol=1e-6, atol=0)


def test_moving_average_over_several_steps_matches_adafactor():
    """Several steps: the step-dependent beta2 (0 at step 1, then 1 - t**-0.8) as transformers
    applies it; grads of different scales so the average visibly moves."""
    cfg = RunConfig(model="tiny", lora_r=0, optim="adafactor", learning_rate=1e-3)
    gen = torch.Generator().manual_seed(1)
    holder = nn.Module()
    holder.weight = nn.Parameter(torch.randn(3, 12, 7, generator=gen))  # a stack of matrices: leading dim kept
    opt = training_optimizer(cfg, holder)
    row, col = (torch.zeros(s) for s in second_moment_shapes((3, 12, 7)))
    for step in range(1, 7):
        g = torch.randn(3, 12, 7, generator=gen) * 10.0 ** (step % 3 - 1)
        holder.weight.grad = g.clone()
        opt.step()
        update_factored_second_moment(row, col, g, step=step)
        assert torch.allclose(row, opt.state[holder.weight]["exp_avg_sq_row"], rtol=1e-5, atol=0), step
        assert torch.allclose(col, opt.state[holder.weight]["exp_avg_sq_col"], rtol=1e-5, atol=0), step


def test_rank1_reconstruction_is_exact_for_an_outer_product():
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(9, generator=gen), torch.randn(5, generator=gen)
    squared = torch.outer(a, b) ** 2  # the square of a rank-1 gradient is rank 1
    assert torch.allclose(rank1_reconstruction(*row_col_statistics(squared)), squared, rtol=1e-5, atol=0)


def test_rank1_reconstruction_keeps_row_and_column_means():
    gen = torch.Generator().manual_seed(3)
    squared = torch.randn(4, 9, 5, generator=gen) ** 2
    row, col = row_col_statistics(squared)
    approx = rank1_reconstruction(row, col)
    assert approx.shape == squared.shape
    assert torch.allclose(approx.mean(-1), row, rtol=1e-5) and torch.allclose(approx.mean(-2), col, rtol=1e-5)
    assert not torch.allclose(approx, squared, rtol=0.1)  # a general matrix is only approximated
    # the paper's form with sums, R C / sum(R), is the same matrix
    sums = torch.einsum("bi,bj->bij", squared.sum(-1), squared.sum(-2)) / squared.sum((-1, -2))[:, None, None]
    assert torch.allclose(approx, sums, rtol=1e-5)


@pytest.mark.parametrize("shape, numel", [((259, 128), 259 + 128), ((128,), 128), ((3, 4, 5), 3 * 4 + 3 * 5), ((), 1)])
def test_second_moment_numel_by_hand(shape, numel):
    assert second_moment_numel(shape) == numel


def test_beta2_schedule():
    assert beta2_at(1) == 0.0
    assert beta2_at(2) == pytest.approx(1 - 2 ** -0.8)
    assert beta2_at(1000) == pytest.approx(1 - 1000 ** -0.8) and beta2_at(1000) > 0.99
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ArgumentError, match=r"^beta2_at\(step="):
            beta2_at(bad)


def test_bf16_parameters_get_fp32_statistics():
    """The gradient is cast to fp32 before its statistics are taken, so 16-bit weights keep
    4 bytes per state value (the predictor prices it so)."""
    holder = nn.Module()
    holder.weight = nn.Parameter(torch.randn(8, 6).to(torch.bfloat16))
    holder.weight.grad = torch.randn(8, 6).to(torch.bfloat16)
    opt = training_optimizer(RunConfig(model="tiny", optim="adafactor"), holder)
    opt.step()
    assert {opt.state[holder.weight][k].dtype for k in ("exp_avg_sq_row", "exp_avg_sq_col")} == {torch.float32}
