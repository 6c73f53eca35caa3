"""The LR range test on a real (tiny, randomly initialised) transformers Llama."""
from __future__ import annotations

import io
import math

import pytest
import torch
from matplotlib.figure import Figure

from ftlab.lessons.lr_finder import LRFinderResult, lr_range_test


def _tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A 30k-parameter model gains nothing from intra-op threads, and on a shared CPU a busy core makes
    2 OpenMP threads wait on each other: ~0.8 s per step instead of ~3 ms. One thread for this module."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def model():
    return _tiny_llama()


@pytest.fixture(scope="module")
def batch():
    ids = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}, {n: p.requires_grad for n, p in model.named_parameters()}


def test_loss_falls_then_blows_up_and_model_is_untouched(model, batch):
    weights, flags = _snapshot(model)
    model.eval()
    result = lr_range_test(model, [batch], start_lr=1e-4, end_lr=10.0, num_steps=60)

    assert isinstance(result, LRFinderResult)
    n = len(result.lrs)
    assert n == len(result.losses) == len(result.smoothed) and 10 < n < 60  # stopped early
    assert all(b > a for a, b in zip(result.lrs, result.lrs[1:]))  # exponentially increasing
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:])]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-9)
    assert result.lrs[0] == pytest.approx(1e-4)
    # the loss first falls (well below ln(64) = 4.16 at the start) ...
    best = min(range(n), key=lambda i: result.smoothed[i])
    assert result.losses[0] == pytest.approx(math.log(64), abs=0.3)
    assert result.smoothed[best] < 0.5 * result.smoothed[0]
    # ... then blows up, which stops the test
    assert result.diverged_at is not None and result.diverged_at == result.lrs[-1]
    assert result.smoothed[-1] > 4.0 * result.smoothed[best]
    assert 1e-4 < result.suggestion < result.diverged_at
    assert result.suggestion < result.lrs[best]  # steepest descent comes before the minimum

    # the model is exactly as it was: weights bit-identical, flags, no grads, eval mode kept
    for name, p in model.named_parameters():
        assert torch.equal(p, weights[name]), name
        assert p.requires_grad == flags[name]
        assert p.grad is None
    assert not model.training and not any(m.training for m in model.modules())

    fig = result.plot()
    assert isinstance(fig, Figure) and fig.axes[0].get_xscale() == "log"
    fig.savefig(io.BytesIO(), format="png")


def test_frozen_parameters_stay_frozen_and_untouched(batch):
    model = _tiny_llama(seed=2)
    for name, p in model.named_parameters():
        if "mlp" not in name:
            p.requires_grad_(False)
    weights, flags = _snapshot(model)
    result = lr_range_test(model, [batch, batch], start_lr=1e-5, end_lr=1e-2, num_steps=12)
    assert len(result.lrs) == 12 and result.diverged_at is None
    for name, p in model.named_parameters():
        assert torch.equal(p, weights[name]) and p.requires_grad == flags[name], name

    # trainable_only=False trains the frozen ones too for the test, and still restores everything
    result = lr_range_test(model, [batch], start_lr=1e-5, end_lr=1e-2, num_steps=12, trainable_only=False,
                           loss_fn=lambda m, b: m(**b).loss)
    for name, p in model.named_parameters():
        assert torch.equal(p, weights[name]) and p.requires_grad == flags[name], name


@pytest.mark.parametrize("kwargs,arg", [
    ({"start_lr": 1e-2, "end_lr": 1e-3}, "start_lr"),
    ({"start_lr": 1e-2, "end_lr": 1e-2}, "start_lr"),
    ({"start_lr": 0.0}, "start_lr"),
    ({"start_lr": -1e-5}, "start_lr"),
    ({"end_lr": -1.0}, "end_lr"),
    ({"num_steps": 9}, "num_steps"),
    ({"smoothing": 1.0}, "smoothing"),
    ({"diverge_factor": 1.0}, "diverge_factor"),
])
def test_argument_errors_name_the_argument(model, batch, kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        lr_range_test(model, [batch], **kwargs)


def test_empty_batches(model):
    weights, _ = _snapshot(model)
    with pytest.raises(ValueError, match="batches"):
        lr_range_test(model, [], num_steps=10)
    for name, p in model.named_parameters():
        assert torch.equal(p, weights[name])
