"""The chunked cross-entropy (ftlab.lessons.chunked_loss) against F.cross_entropy, its memory
measured beside plain and checkpointed cross-entropy, and the predictor's ``loss="chunked"``
against a real model's step."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from ftlab import RunConfig
from ftlab.errors import ArgumentError, ConfigError
from ftlab.lessons.chunked_loss import (IGNORE_INDEX, causal_lm_chunked_loss, chunked_cross_entropy, loss_memory,
                                        plain_cross_entropy)
from ftlab.memory import ActivationMeter, GiB, model_architecture, setup_for
from ftlab.memory.activations import activation_bytes
from ftlab.memory.fits import MODEL_SIZES, fits_table, gpu_need, method_config
from ftlab.setup.models import load_model


def _inputs(tokens: int = 96, hidden: int = 16, vocab: int = 1000, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(tokens, hidden, generator=g).to(dtype).requires_grad_()
    w = (torch.randn(vocab, hidden, generator=g) * 0.3).to(dtype).requires_grad_()
    labels = torch.randint(0, vocab, (tokens,), generator=g)
    labels[::3] = IGNORE_INDEX  # prompt tokens
    return h, w, labels


@pytest.mark.parametrize("chunk", [1000, 300, 7])  # one chunk; chunks that do not divide the vocabulary
def test_chunked_loss_and_gradients_equal_cross_entropy(chunk):
    h, w, labels = _inputs()
    reference = F.cross_entropy(h @ w.T, labels, ignore_index=IGNORE_INDEX)
    ref_h, ref_w = torch.autograd.grad(reference, (h, w))
    loss = chunked_cross_entropy(h, w, labels, chunk_size=chunk)
    got_h, got_w = torch.autograd.grad(loss, (h, w))
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(got_h, ref_h)
    torch.testing.assert_close(got_w, ref_w)


def test_chunked_loss_in_bf16_computes_in_fp32_as_transformers_does():
    h, w, labels = _inputs(dtype=torch.bfloat16)
    reference = plain_cross_entropy(h, w, labels)  # bf16 matmul, fp32 loss
    loss = chunked_cross_entropy(h, w, labels, chunk_size=128)
    grads = torch.autograd.grad(loss, (h, w))
    assert loss.dtype == torch.float32 and all(g.dtype == torch.bfloat16 for g in grads)
    torch.testing.assert_close(loss, reference, atol=2e-2, rtol=1e-2)


def test_chunked_loss_refuses_a_bad_chunk():
    h, w, labels = _inputs()
    with pytest.raises(ArgumentError, match="chunk_size=0"):
        chunked_cross_entropy(h, w, labels, chunk_size=0)


def test_the_logits_floor_measured():
    """Plain cross-entropy saves the fp32 log-softmax (the whole logits); checkpointing the loss
    saves only its inputs but backward forms the whole logits again; the chunked loss neither
    saves nor ever holds them."""
    tokens, hidden, vocab, chunk = 512, 32, 16384, 2048
    rows = {r["loss"]: r for r in loss_memory(tokens, hidden, vocab, chunk)}
    logits = tokens * vocab * 4
    features, labels, lse = tokens * hidden * 4, tokens * 8, tokens * 4
    assert rows["cross_entropy"]["saved"] >= logits
    assert rows["checkpointed"]["saved"] == 2 * features + labels  # proj's input, then the loss's inputs
    assert rows["checkpointed"]["activation_peak"] >= logits  # recomputed in backward
    assert rows["chunked"]["saved"] == 2 * features + labels + lse  # exactly what the predictor charges
    assert rows["chunked"]["activation_peak"] < logits / 2
    assert rows["chunked"]["activation_peak"] < rows["checkpointed"]["activation_peak"] / 2


@pytest.mark.parametrize("overrides", [dict(lora_r=0), dict(lora_r=4), dict(lora_r=4, gradient_checkpointing=True),
                                       dict(lora_r=0, per_device_train_batch_size=1)],
                         ids=["full", "lora", "lora-ckpt", "full-batch1"])
def test_the_predictors_chunked_loss_is_the_measured_step(overrides):
    cfg = RunConfig(model="tiny", **{"per_device_train_batch_size": 2, "max_seq_length": 48, **overrides})
    model, _ = load_model(cfg)
    model.train()
    ids = torch.randint(0, 200, (cfg.per_device_train_batch_size, cfg.max_seq_length),
                        generator=torch.Generator().manual_seed(0))
    with ActivationMeter(model) as meter:
        loss = causal_lm_chunked_loss(model, ids, ids.clone(), chunk_size=64)
    torch.testing.assert_close(loss, model(input_ids=ids, labels=ids).loss)
    setup = replace(setup_for(cfg), loss="chunked")
    assert meter.bytes == activation_bytes(model_architecture("tiny"), setup, cfg.per_device_train_batch_size,
                                           cfg.max_seq_length)


def test_what_a_chunked_loss_buys_at_a_128k_vocabulary():
    """Llama-3-8B (128,256 entries) at 1 x 2048 with checkpointing: the loss was the largest
    activation; chunked, it is a few MiB, and the transient logits shrink to one chunk."""
    plain, chunked = (gpu_need(method_config("lora"), model_config=MODEL_SIZES["8B"], batch_size=1, seq_len=2048,
                               loss=loss) for loss in ("cross_entropy", "chunked"))
    assert plain["activations"] - chunked["activations"] > 0.9 * 2048 * 128256 * 4 - 2048 * 4096 * 2 - 2048 * 4
    assert plain["transient"] - chunked["transient"] > GiB
    rows = {r["loss"]: r for r in fits_table(model_sizes=("8B",), methods=("lora",), loss="chunked")}
    assert rows["chunked"]["total"] == chunked["total"]
    with pytest.raises(ConfigError, match="lm_head"):
        gpu_need(method_config("lora").replace(lora_target_modules=("q_proj", "lm_head")),
                 model_config=MODEL_SIZES["8B"], loss="chunked")
    with pytest.raises(ArgumentError, match="loss='fused'"):
        gpu_need(method_config("lora"), model_config=MODEL_SIZES["8B"], loss="fused")
