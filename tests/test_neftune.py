"""NEFTune from scratch: the noise's scale, train-only behaviour, clean removal, and bit-for-bit
agreement with transformers' own hook (the one Trainer installs for ``neftune_noise_alpha``)."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.integrations.neftune import activate_neftune, deactivate_neftune

from ftlab.lessons.neftune import attach_neftune, neftune_noise, neftune_scale


def _tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2))


def _ids(batch: int, length: int) -> torch.Tensor:
    return torch.randint(0, 64, (batch, length), generator=torch.Generator().manual_seed(batch * 100 + length))


def test_noise_is_bounded_and_has_the_uniform_std():
    emb = torch.zeros(4, 512, 256)  # ~0.5M draws
    alpha = 5.0
    m = alpha / math.sqrt(512 * 256)
    assert neftune_scale(emb, alpha) == pytest.approx(m, rel=1e-6)
    noise = neftune_noise(emb, alpha, generator=torch.Generator().manual_seed(0))
    assert noise.shape == emb.shape and noise.dtype == emb.dtype
    assert noise.abs().max().item() <= m * (1 + 1e-6)
    assert noise.abs().max().item() > 0.99 * m  # it fills the interval
    # Uniform(-m, m) has std m / sqrt(3)
    assert noise.std().item() == pytest.approx(m / math.sqrt(3), rel=0.05)
    # so a sequence's total noise has norm ~ alpha / sqrt(3), whatever L and d are
    assert noise[0].norm().item() == pytest.approx(alpha / math.sqrt(3), rel=0.05)


def test_noise_is_reproducible_with_a_generator():
    emb = torch.zeros(2, 5, 8)
    a = neftune_noise(emb, 10.0, generator=torch.Generator().manual_seed(7))
    b = neftune_noise(emb, 10.0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, neftune_noise(emb, 10.0, generator=torch.Generator().manual_seed(8)))


def test_hook_is_train_only_and_removal_restores_exact_outputs():
    model = _tiny_llama()
    ids = _ids(2, 9)
    model.eval()
    with torch.no_grad():
        clean_eval = model(ids).logits
    model.train()
    with torch.no_grad():
        clean_train = model(ids).logits

    handle = attach_neftune(model, 5.0)
    model.eval()
    rng_before = torch.get_rng_state()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, clean_eval)  # eval/generation: no noise ...
    assert torch.equal(torch.get_rng_state(), rng_before)  # ... and no RNG drawn
    model.train()
    with torch.no_grad():
        noisy = model(ids).logits
    assert not torch.equal(noisy, clean_train)

    handle.remove()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, clean_train)


def test_gradients_flow_through_the_noisy_embeddings():
    model = _tiny_llama().train()
    ids = _ids(2, 6)
    with attach_neftune(model, 5.0):
        model(ids, labels=ids).loss.backward()
    assert model.model.embed_tokens.weight.grad is not None
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("alpha, batch, length", [(5.0, 2, 7), (15.0, 3, 16), (0.1, 1, 1)])
def test_matches_transformers_hook_bit_for_bit(alpha, batch, length):
    """Same seed, same embeddings: our hook and transformers' neftune_post_forward_hook draw the
    same numel() uniforms in the same order, with the same float32 half-width m."""
    model = _tiny_llama()
    emb = model.get_input_embeddings()
    ids = _ids(batch, length)

    def forward_with(attach, detach):
        handle = attach()
        try:
            model.train()
            torch.manual_seed(1234)
            train_emb = emb(ids)
            train_logits = model(ids).logits  # the hook also fires inside the full model
            model.eval()
            eval_emb = emb(ids)
        finally:
            detach(handle)
        return train_emb, train_logits, eval_emb

    with torch.no_grad():
        ours = forward_with(lambda: attach_neftune(model, alpha), lambda h: h.remove())
        theirs = forward_with(lambda: activate_neftune(model, alpha), lambda h: deactivate_neftune(model, h))
        model.eval()
        clean = emb(ids)

    assert torch.equal(ours[0], theirs[0])
    assert torch.equal(ours[1], theirs[1])
    assert not torch.equal(ours[0], clean)  # training mode really added noise
    assert torch.equal(ours[2], clean) and torch.equal(theirs[2], clean)  # both identity in eval


def test_attaches_to_a_peft_model():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"]))
    ids = _ids(1, 5)
    base_emb = model.base_model.model.get_input_embeddings()
    with torch.no_grad():
        clean = base_emb(ids)
        with attach_neftune(model, 5.0):
            model.train()
            torch.manual_seed(3)
            ours = base_emb(ids)
        handle = activate_neftune(model, 5.0)
        torch.manual_seed(3)
        theirs = base_emb(ids)
        deactivate_neftune(model, handle)
    assert torch.equal(ours, theirs) and not torch.equal(ours, clean)


@pytest.mark.parametrize("alpha", [-1.0, math.inf, math.nan, "5"])
def test_rejects_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        attach_neftune(_tiny_llama(), alpha)
    with pytest.raises(ValueError, match="alpha"):
        neftune_noise(torch.zeros(1, 2, 3), alpha)


@pytest.mark.parametrize("length", [64, 2048])
def test_noise_per_token_falls_as_one_over_root_of_the_row_length(length):
    # chapter 04's arithmetic: a row's noise has norm ~ alpha/sqrt(3) whatever L, so each token's ~ alpha/sqrt(3L);
    # a packed row of 2048 gives a token sqrt(2048/64) times less noise than a row of 64
    alpha, d = 5.0, 64
    noise = neftune_noise(torch.zeros(1, length, d), alpha, generator=torch.Generator().manual_seed(0))
    per_token = noise[0].norm(dim=-1)
    assert per_token.mean().item() == pytest.approx(alpha / math.sqrt(3 * length), rel=0.05)
    assert noise[0].norm().item() == pytest.approx(alpha / math.sqrt(3), rel=0.05)
