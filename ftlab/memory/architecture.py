"""What a memory prediction is made from: the model's shape and how a run uses it.

:class:`Architecture` is the handful of numbers of a Llama-style decoder that decide memory;
:class:`Setup` is everything else (precision, quantization, LoRA, optimizer, checkpointing,
device). The predictor (:mod:`ftlab.memory.predict`), the activation walk
(:mod:`ftlab.memory.activations`) and the fits table (:mod:`ftlab.memory.fits`) all read
these two, so they live below all three.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

LINEARS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The seven projection matrices of a Llama block; peft's ``"all-linear"`` means all of them
(peft never adapts the output head under ``all-linear``)."""


# --------------------------------------------------------------------------------------
# Architecture: the handful of numbers that decide memory
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Architecture:
    """The shape of a Llama-style decoder (Llama, Qwen2, Mistral, SmolLM...).

    Everything memory depends on: ``layers`` decoder blocks of width ``hidden``, attention
    with ``heads`` query heads and ``kv_heads`` key/value heads (grouped-query attention
    when fewer) of size ``head_dim``, a SiLU-gated MLP of width ``intermediate``, a
    ``vocab``-row embedding and an output head that may share (``tie_embeddings``) the
    embedding's storage. Qwen2 puts a bias on q, k and v (``qkv_bias``).
    """

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    head_dim: int | None = None
    tie_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    source: str = ""
    """Where the numbers come from (a published model), for tables."""

    @property
    def d(self) -> int:
        """Size of one attention head."""
        return self.head_dim or self.hidden // self.heads

    @classmethod
    def from_config(cls, cfg: Any) -> "Architecture":
        """From a transformers config (``LlamaConfig``, ``Qwen2Config``...), a dict of its
        fields, or an Architecture (returned as is)."""
        if isinstance(cfg, Architecture):
            return cfg
        get = cfg.get if isinstance(cfg, Mapping) else (lambda k, default=None: getattr(cfg, k, default))
        heads = get("num_attention_heads")
        model_type = get("model_type", "") or ""
        attention_bias = bool(get("attention_bias", False))
        qkv_bias = attention_bias or model_type.startswith("qwen2")
        return cls(layers=get("num_hidden_layers"), hidden=get("hidden_size"), intermediate=get("intermediate_size"),
                   heads=heads, kv_heads=get("num_key_value_heads") or heads, vocab=get("vocab_size"),
                   head_dim=get("head_dim"), tie_embeddings=bool(get("tie_word_embeddings", False)),
                   qkv_bias=qkv_bias, o_bias=attention_bias, mlp_bias=bool(get("mlp_bias", False)),
                   source=str(get("_name_or_path", "") or model_type))

    def linear_shapes(self) -> dict[str, tuple[int, int, bool]]:
        """``name -> (in_features, out_features, has_bias)`` for the seven projections."""
        h, i, q, kv = self.hidden, self.intermediate, self.heads * self.d, self.kv_heads * self.d
        return {"q_proj": (h, q, self.qkv_bias), "k_proj": (h, kv, self.qkv_bias), "v_proj": (h, kv, self.qkv_bias),
                "o_proj": (q, h, self.o_bias), "gate_proj": (h, i, self.mlp_bias), "up_proj": (h, i, self.mlp_bias),
                "down_proj": (i, h, self.mlp_bias)}

    def parameter_count(self) -> int:
        """Logical parameter count (tied embedding counted once)."""
        per_layer = sum(a * b + (b if bias else 0) for a, b, bias in self.linear_shapes().values()) + 2 * self.hidden
        head = 0 if self.tie_embeddings else self.vocab * self.hidden
        return self.vocab * self.hidden + self.layers * per_layer + self.hidden + head


# --------------------------------------------------------------------------------------
# Precision and method: how the parameters are stored and which ones train
# --------------------------------------------------------------------------------------
_DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}


@dataclass(frozen=True)
class Setup:
    """Everything besides the architecture that decides memory (internal, but documented).

    ``dtype``: what the model's dense weights are stored in (``load_model`` uses fp32).
    ``autocast``: bf16 autocast over fp32 weights, as Trainer's ``bf16=True`` does.
    ``quant``: ``None``, ``"nf4"`` or ``"int8"`` for the frozen base linears (QLoRA).
    ``lora_dtype``: peft creates adapters in fp32 (it upcasts them on a bf16 base).
    ``optim_args``: the run's ``optim_args`` string; SGD's and RMSprop's extra buffers depend on it.
    ``optim_state_bytes``: force the bytes per element of AdamW-style moments (fits_table's
    fp32 moments over bf16 weights); ``None`` means "same dtype as the parameter", which is
    what ``torch.optim.AdamW`` does.
    ``device``: ``"cpu"`` or ``"cuda"``; changes what dropout saves (CPU: a mask in the
    input's dtype; CUDA: a one-byte bool mask) and which attention kernel runs (on CUDA
    with fp32 attention, i.e. fp32 weights without autocast, PyTorch's math kernel, measured
    on an H200; with bf16 weights or under autocast, the fused kernels).
    ``loss``: ``"cross_entropy"`` (transformers' loss: the fp32 log-softmax of every logit is
    saved) or ``"chunked"`` (a chunked/fused loss that saves the head's input, the labels and
    a per-token log-sum-exp, as ``ftlab.lessons.chunked_loss`` does).
    """

    lora_r: int = 0
    lora_targets: frozenset[str] = frozenset()
    lora_dropout: float = 0.0
    quant: str | None = None
    double_quant: bool = True
    dtype: str = "float32"
    autocast: bool = False
    lora_dtype: str = "float32"
    optim: str = "adamw_torch"
    optim_args: str = ""
    optim_state_bytes: int | None = None
    gradient_checkpointing: bool = False
    device: str = "cpu"
    loss: str = "cross_entropy"

    @property
    def full(self) -> bool:
        return self.lora_r == 0

    @property
    def a(self) -> int:
        """Bytes per element of the model's own tensors (weights and the residual stream)."""
        return _DTYPE_BYTES[self.dtype]

    @property
    def lora_elem(self) -> int:
        """Bytes per element of the LoRA adapters, their activations and gradients."""
        return _DTYPE_BYTES[self.lora_dtype]


def resolve_lora_targets(names: Iterable[str]) -> frozenset[str]:
    """``lora_target_modules`` as the set of module names peft will adapt (``"all-linear"``
    means the seven projections)."""
    names = tuple(names)
    if "all-linear" in names:
        return frozenset(LINEARS)
    unknown = [n for n in names if n not in LINEARS and n != "lm_head"]
    if unknown:
        raise ValueError(f"lora_target_modules {unknown} are not Llama projections; estimate knows "
                         f"{', '.join(LINEARS)}, lm_head and 'all-linear'")
    return frozenset(names)
