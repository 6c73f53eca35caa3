"""A QLoRA model that ftlab loads trains the same after an evaluation as before one.

bitsandbytes 0.50 repacks 4-bit weights for an inference-only kernel the first time a layer
runs in eval mode on a CPU with AVX512-BF16, and never packs them back; ftlab's loader turns
that off (``keep_4bit_layout_trainable``). On such a CPU, without it, the gradients below
differ and PyTorch warns that backward ran through a kernel with no autograd formula.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from ftlab import RunConfig
from ftlab.setup.models import load_model

pytest.importorskip("bitsandbytes")

QLORA = RunConfig(model="tiny", lora_r=4, load_in_4bit=True, lora_dropout=0.0, max_seq_length=32)


def _lora_grads(evaluate_first: bool) -> tuple[dict[str, torch.Tensor], list[str]]:
    model, _ = load_model(QLORA)
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (2, 24), generator=torch.Generator().manual_seed(0)).to(model.device)  # a GPU's on CUDA
    if evaluate_first:  # what Trainer's first evaluation does
        model.eval()
        with torch.no_grad():
            model(input_ids=ids)
    model.train()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(input_ids=ids, labels=ids).loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return grads, [str(w.message) for w in caught]


def test_an_evaluation_before_training_changes_no_gradient():
    fresh, _ = _lora_grads(evaluate_first=False)
    after_eval, said = _lora_grads(evaluate_first=True)
    assert not [m for m in said if "autograd kernel was not registered" in m]
    assert fresh.keys() == after_eval.keys()
    for name, grad in fresh.items():
        torch.testing.assert_close(after_eval[name], grad, msg=lambda m: f"{name}: {m}")  # noqa: B023 (called at once)


def test_no_4bit_layer_is_left_in_the_inference_layout():
    model, _ = load_model(QLORA)
    model.eval()
    with torch.no_grad():
        model(input_ids=torch.zeros(1, 8, dtype=torch.long, device=model.device))
    layers = [m for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu")]
    assert layers, "the tiny QLoRA model has 4-bit layers"
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
