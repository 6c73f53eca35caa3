"""What fits where: predicted memory of common open model sizes on common GPUs.

:func:`fits_table` answers "which model sizes can I fine-tune, and how, on a 16/24/48/80
GiB card?" for published architectures from 0.5B to 70B parameters, full fine-tuning vs
LoRA vs QLoRA, from the same predictor :func:`~ftlab.memory.estimate` uses, plus the
transient buffers of backward that a whole-card question must include.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable

from ftlab.memory.activations import activation_parts
from ftlab.memory.architecture import Architecture, Setup, resolve_lora_targets
from ftlab.memory.breakdown import GiB
from ftlab.memory.predict import breakdown

MODEL_SIZES: dict[str, Architecture] = {
    # Qwen/Qwen2.5-0.5B config.json
    "0.5B": Architecture(layers=24, hidden=896, intermediate=4864, heads=14, kv_heads=2, vocab=151936,
                         tie_embeddings=True, qkv_bias=True, source="Qwen2.5-0.5B"),
    # Qwen/Qwen2.5-1.5B config.json
    "1.5B": Architecture(layers=28, hidden=1536, intermediate=8960, heads=12, kv_heads=2, vocab=151936,
                         tie_embeddings=True, qkv_bias=True, source="Qwen2.5-1.5B"),
    # Qwen/Qwen2.5-3B config.json
    "3B": Architecture(layers=36, hidden=2048, intermediate=11008, heads=16, kv_heads=2, vocab=151936,
                       tie_embeddings=True, qkv_bias=True, source="Qwen2.5-3B"),
    # Qwen/Qwen2.5-7B config.json
    "7B": Architecture(layers=28, hidden=3584, intermediate=18944, heads=28, kv_heads=4, vocab=152064,
                       tie_embeddings=False, qkv_bias=True, source="Qwen2.5-7B"),
    # meta-llama/Meta-Llama-3-8B config.json
    "8B": Architecture(layers=32, hidden=4096, intermediate=14336, heads=32, kv_heads=8, vocab=128256,
                       tie_embeddings=False, source="Llama-3-8B"),
    # meta-llama/Llama-2-13b-hf config.json (no grouped-query attention: 40 kv heads)
    "13B": Architecture(layers=40, hidden=5120, intermediate=13824, heads=40, kv_heads=40, vocab=32000,
                        tie_embeddings=False, source="Llama-2-13B"),
    # meta-llama/Meta-Llama-3-70B config.json
    "70B": Architecture(layers=80, hidden=8192, intermediate=28672, heads=64, kv_heads=8, vocab=128256,
                        tie_embeddings=False, source="Llama-3-70B"),
}
"""Representative published architectures for common open model sizes."""

HEADROOM = 0.10
"""Fraction of a GPU's memory kept free for the CUDA context (~0.5 GiB), cuBLAS workspaces,
the caching allocator's fragmentation and small buffers nobody counts."""

FITS_LORA_R = 16
FITS_LORA_TARGETS = "all-linear"
FITS_LORA_DROPOUT = 0.05


def fits_setup(method: str, gradient_checkpointing: bool = True) -> Setup:
    """The precision assumptions of :func:`fits_table`, per method (on a CUDA GPU):

    * ``full``: bf16 weights and bf16 gradients, AdamW moments in fp32 (2 + 2 + 8 = 12
      bytes per parameter). Classic mixed precision also keeps an fp32 master copy of the
      weights (+4 = 16 bytes/param, the same as fp32 weights under bf16 autocast, which is
      what Trainer(bf16=True) on an fp32-loaded model does); this table does not count it.
    * ``lora``: frozen bf16 base (2 bytes/param), rank-16 adapters on all seven
      projections in fp32 with fp32 gradients and fp32 AdamW moments (16 bytes per
      adapter parameter); dropout 0.05.
    * ``qlora``: the base projections in NF4 with double quantization (~0.53 bytes/param),
      embedding, norms and head in bf16, the same fp32 adapters as ``lora``.

    Activations are for bf16 compute (bf16 tensors, fp32 RMSNorm internals, fp32
    log-sum-exp and fp32 logits for the loss), SDPA/flash attention, one-byte dropout masks.
    """
    base = Setup(dtype="bfloat16", device="cuda", gradient_checkpointing=gradient_checkpointing, optim="adamw_torch")
    if method == "full":
        return replace(base, optim_state_bytes=4)
    lora = replace(base, lora_r=FITS_LORA_R, lora_targets=resolve_lora_targets([FITS_LORA_TARGETS]),
                   lora_dropout=FITS_LORA_DROPOUT, lora_dtype="float32")
    if method == "lora":
        return lora
    if method == "qlora":
        return replace(lora, quant="nf4", double_quant=True)
    raise ValueError(f"method {method!r}: choose 'full', 'lora' or 'qlora'")


def transient_bytes(arch: Architecture, setup: Setup, batch: int, seq: int) -> int:
    """Memory that exists only for a moment in backward, on top of the saved activations.

    The bf16 logits and their fp32 gradient (tokens x vocab x (2 + 4) bytes: for a 128k
    vocabulary this alone is ~1.5 GiB per 2048 tokens), and with checkpointing one layer's
    activations while it is recomputed. An approximation (the allocator may reuse
    buffers), used only by :func:`fits_table`.
    """
    t = batch * seq
    extra = t * arch.vocab * (setup.a + 4)
    if setup.gradient_checkpointing:
        one = replace(setup, gradient_checkpointing=False)
        parts = activation_parts(arch, one, batch, seq)
        last = f"L{arch.layers - 1}."  # any layer but 0, which may save less (frozen embedding)
        extra += sum(v for k, v in parts.items() if k.startswith(last))
    return extra


def fits_table(model_sizes: Iterable[str] = ("0.5B", "1.5B", "3B", "7B", "8B", "13B", "70B"),
               gpus_gib: Iterable[int] = (16, 24, 48, 80), batch: int = 1, seq_len: int = 2048,
               methods: Iterable[str] = ("full", "lora", "qlora"),
               gradient_checkpointing: bool = True) -> list[dict[str, Any]]:
    """Which (model size, method) fits on which GPU, predicted from published architectures.

    For each size in :data:`MODEL_SIZES` and each method, one row (a flat dict, ready for
    ``pandas.DataFrame``): ``model`` (the size label), ``source`` (the published model
    whose config it uses), ``parameters``, ``method``, the predicted bytes of ``weights``,
    ``gradients``, ``optimizer`` and saved ``activations`` for one step of ``batch`` x
    ``seq_len`` tokens, ``transient`` (see :func:`transient_bytes`), ``total`` (bytes, the
    sum of all five), ``total_gib`` and one ``fits_<N>GiB`` bool per GPU size: it fits when
    ``total`` <= 90% of the card (:data:`HEADROOM`: 10% is left for the CUDA context,
    cuBLAS workspaces and allocator fragmentation).

    Precision assumptions (see :func:`fits_setup`): full = bf16 weights and gradients with
    fp32 AdamW moments, no fp32 master copy; LoRA = bf16 frozen base + fp32 rank-16
    adapters on all linear layers; QLoRA = NF4 (double-quantized) base + the same adapters.
    Single GPU, no ZeRO/FSDP sharding, no CPU offload.
    """
    rows = []
    gpus = tuple(gpus_gib)
    for size in model_sizes:
        arch = MODEL_SIZES[size]
        for method in methods:
            setup = fits_setup(method, gradient_checkpointing)
            b = breakdown(arch, setup, batch, seq_len)
            transient = transient_bytes(arch, setup, batch, seq_len)
            need = b.total + transient
            row: dict[str, Any] = {"model": size, "source": arch.source, "parameters": arch.parameter_count(),
                                   "method": method, "batch": batch, "seq_len": seq_len,
                                   "gradient_checkpointing": gradient_checkpointing,
                                   "weights": b.weights, "gradients": b.gradients, "optimizer": b.optimizer,
                                   "activations": b.activations, "transient": transient, "total": need,
                                   "total_gib": round(need / GiB, 2)}
            for gpu in gpus:
                row[f"fits_{gpu}GiB"] = need <= (1 - HEADROOM) * gpu * GiB
            rows.append(row)
    return rows
