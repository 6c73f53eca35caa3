"""ftlab's "will it fit?" beside accelerate's, DeepSpeed's and the ZeRO paper's rules (ftlab.memory.peers)."""
from __future__ import annotations

import pytest

from ftlab.memory import GiB
from ftlab.memory.fits import MODEL_SIZES, zero_paper_bytes
from ftlab.memory.peers import (_published_zero2, _published_zero3, accelerate_training_bytes, deepspeed_bytes,
                                largest_layer_parameters, peer_table)


@pytest.fixture(scope="module")
def rows():
    return {(r["model"], r["method"]): r for r in peer_table()}


def test_one_table_for_7b_and_70b(rows):
    assert set(rows) == {(m, k) for m in ("7B", "70B") for k in ("full", "lora", "qlora")}
    for (size, method), r in rows.items():
        n = MODEL_SIZES[size].parameter_count()
        assert r["measured_cuda_peak"] is None and r["left_out"]
        if method == "full":
            assert r["accelerate_fp32"] == 4 * accelerate_training_bytes(MODEL_SIZES[size])["total"]  # 4x fp32 weights
            assert r["zero_paper"] == zero_paper_bytes(n, 1, 3) == 16 * n
            assert r["deepspeed_zero2"] == 20 * n  # 2 + 18 bytes on one GPU, no offload
            # ftlab's bf16 base needs less than the rules that assume an fp32 master copy, activations included
            assert r["ftlab"] < r["zero_paper"] and f"{r['activations'] / GiB:.1f} GiB" in r["left_out"]
        else:
            assert r["accelerate_fp32"] is r["deepspeed_zero2"] is r["zero_paper"] is None
    assert rows["7B", "lora"]["ftlab"] < 0.9 * 24 * GiB  # the 4090 question
    assert rows["70B", "qlora"]["ftlab"] < 0.9 * 48 * GiB  # QLoRA's 65B-on-48GB point, at 70B


def test_accelerate_counts_the_model_it_builds_from_the_config():
    """fp32 parameters plus the rotary buffers (inv_freq and its original, d/2 values each); a
    tied head is counted a second time (calculate_maximum_sizes sums modules, not storages)."""
    for size in ("0.5B", "7B"):  # tied (Qwen2.5-0.5B) and untied
        arch = MODEL_SIZES[size]
        tied = 4 * arch.vocab * arch.hidden if arch.tie_embeddings else 0
        assert accelerate_training_bytes(arch)["total"] == 4 * arch.parameter_count() + 2 * 4 * (arch.d // 2) + tied


def test_deepspeeds_functions_are_its_published_formulas():
    arch = MODEL_SIZES["7B"]
    n, largest = arch.parameter_count(), largest_layer_parameters(arch)
    assert largest == arch.vocab * arch.hidden
    for gpus in (1, 8):
        got = deepspeed_bytes(arch, gpus)
        assert got["zero2"] == _published_zero2(n, gpus) and got["zero3"] == _published_zero3(n, largest, gpus), got["source"]
