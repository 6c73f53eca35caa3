"""Training memory predicted from a model's config alone, before anything runs.

``ftlab.memory.measure_training_step`` *measures* the four kinds of training memory of one
step. This module *predicts* the same four numbers from the architecture (layers, hidden
size, heads, vocabulary...) and the run's settings (full / LoRA / QLoRA, optimizer,
batch, sequence length, gradient checkpointing), so a learner can ask "will 8B QLoRA fit
my 24 GiB card?" without downloading 16 GB first.

Weights, gradients and optimizer state are a bill of materials: list every parameter
tensor the model will hold, then price it (fp32 4 bytes, bf16 2, NF4 half a byte plus its
block constants...). Those three predictions are exact.

Activations are the tensors the forward pass saves for backward. They are predicted by
walking a Llama block op by op and applying PyTorch's own rule for what each op saves:
a matmul ``x @ W`` saves ``x`` only if ``W`` needs a gradient and saves ``W`` only if ``x``
needs one; ``a * b`` saves each operand only for the *other* one's gradient; SiLU saves its
input; softmax-like ops save their output; SDPA saves q, k, v, its output and a per-row
log-sum-exp. Each saved tensor is identified by the storage it lives in, so a tensor saved
by three ops (the normed hidden state feeding q, k and v) counts once, exactly as the
``saved_tensors_hooks`` meter counts it. Tracking which tensors need a gradient matters:
with a frozen base (LoRA), most matmuls save nothing but their frozen weight, and layer
0's attention input needs no gradient at all because the embedding is frozen.

Written out for the simplest case, a full fine-tune in fp32 without checkpointing, the
walk adds up to, per decoder layer and per token (h = hidden, i = intermediate, q = heads x
head_dim, kv = kv_heads x head_dim)::

    4 bytes x ( 2h + 1      input RMSNorm: its input, rsqrt, the normalized tensor
              + h           q/k/v input (the norm's output, one storage for all three)
              + 2q + 2kv    SDPA: rotated q and k, v, and its output (= o_proj's input)
              + 2h + 1      post-attention RMSNorm
              + h           gate/up input
              + 4i )        SiLU input, SiLU output, up output, their product (down's input)
    + 4 bytes x heads       SDPA's fp32 log-sum-exp

plus, once: token ids, rotary cos/sin, the final norm, the head's input and the loss's
fp32 log-softmax (tokens x vocab x 4 bytes). LoRA drops what only frozen weights needed
(the norms' normalized tensors, matmul inputs) and adds, per adapted projection, a dropout
mask, the dropped-out input and the rank-r intermediate. Gradient checkpointing keeps one
tokens x hidden tensor per layer. QLoRA's 4-bit matmuls save nothing.

The walk mirrors transformers' Llama code (``modeling_llama.py``) with SDPA attention,
peft's LoRA layers, bitsandbytes' 4-/8-bit matmuls and transformers' causal-LM loss, as
installed with this workbook. It is checked byte for byte against measurement in
``tests/test_estimate.py``.

Two public functions:

* :func:`estimate` -- the :class:`~ftlab.memory.MemoryBreakdown` of one step of a
  :class:`~ftlab.config.RunConfig`, from the preset's ``config.json`` or any
  Llama/Qwen2-like config you pass (hypothetical sizes included).
* :func:`fits_table` -- what fits on 16/24/48/80 GiB GPUs for common open model sizes
  (0.5B ... 70B), full fine-tune vs LoRA vs QLoRA.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

from .config import RunConfig
from .memory import MemoryBreakdown

__all__ = ["estimate", "fits_table", "Architecture", "MODEL_SIZES", "HEADROOM", "Setup", "setup_for", "fits_setup",
           "breakdown", "model_architecture", "activation_bytes", "activation_parts", "transient_bytes"]

GiB = 1024 ** 3

LINEARS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The seven projection matrices of a Llama block; peft's ``"all-linear"`` means all of them
(peft never adapts the output head under ``all-linear``)."""

NF4_BLOCK = 64
"""bitsandbytes quantizes 4-bit weights in blocks of 64 values, one absmax scale per block."""
NF4_NESTED_BLOCK = 256
"""Double quantization quantizes those absmax scales to 8 bits, in blocks of 256 scales."""
OPTIM_8BIT_BLOCK = 256
"""bitsandbytes 8-bit optimizers keep one fp32 absmax per 256 state values (blockwise)."""
OPTIM_8BIT_MIN_SIZE = 4096
"""bitsandbytes keeps 32-bit state for tensors with fewer elements than this (``min_8bit_size``)."""
QMAP_BYTES = 256 * 4
"""The 256-entry fp32 quantization map each 8-bit optimizer state keeps a reference to.

The map is one tensor shared by all parameters, but it is listed in every parameter's
state and ``optimizer_state_bytes`` counts it per parameter; we count it the same way.
"""


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
    ``optim_state_bytes``: force the bytes per element of AdamW-style moments (fits_table's
    fp32 moments over bf16 weights); ``None`` means "same dtype as the parameter", which is
    what ``torch.optim.AdamW`` does.
    ``device``: ``"cpu"`` or ``"cuda"``; changes only what dropout saves (CPU: a mask in the
    input's dtype; CUDA: a one-byte bool mask).
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
    optim_state_bytes: int | None = None
    gradient_checkpointing: bool = False
    device: str = "cpu"

    @property
    def full(self) -> bool:
        return self.lora_r == 0

    @property
    def a(self) -> int:
        """Bytes per element of the model's own tensors (weights and the residual stream)."""
        return _DTYPE_BYTES[self.dtype]


@dataclass(frozen=True)
class _Param:
    name: str
    shape: tuple[int, ...]
    kind: str  # "dense" | "nf4" | "int8"
    elem: int  # bytes per element for dense tensors
    trainable: bool

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _lora_targets(names: Iterable[str]) -> frozenset[str]:
    names = tuple(names)
    if "all-linear" in names:
        return frozenset(LINEARS)
    unknown = [n for n in names if n not in LINEARS and n != "lm_head"]
    if unknown:
        raise ValueError(f"lora_target_modules {unknown} are not Llama projections; estimate knows "
                         f"{', '.join(LINEARS)}, lm_head and 'all-linear'")
    return frozenset(names)


def _parameters(arch: Architecture, setup: Setup) -> list[_Param]:
    """The bill of materials: every parameter tensor the model holds, each storage once.

    Embedding, norms and (untied) head stay dense even under QLoRA (bitsandbytes never
    quantizes embeddings or the output head); the seven projections per layer are dense,
    NF4 or int8; LoRA adds ``A`` (r x in) and ``B`` (out x r) per targeted module.
    """
    a, full = setup.a, setup.full
    lora_elem = _DTYPE_BYTES[setup.lora_dtype]
    out = [_Param("embed_tokens", (arch.vocab, arch.hidden), "dense", a, full)]
    for layer in range(arch.layers):
        for name, (fan_in, fan_out, bias) in arch.linear_shapes().items():
            kind = setup.quant or "dense"
            out.append(_Param(f"{layer}.{name}", (fan_out, fan_in), kind, a, full))
            if bias:  # biases stay in the dense dtype, also beside a quantized weight
                out.append(_Param(f"{layer}.{name}.bias", (fan_out,), "dense", a, full))
            if name in setup.lora_targets:
                out.append(_Param(f"{layer}.{name}.lora_A", (setup.lora_r, fan_in), "dense", lora_elem, True))
                out.append(_Param(f"{layer}.{name}.lora_B", (fan_out, setup.lora_r), "dense", lora_elem, True))
        out += [_Param(f"{layer}.{n}", (arch.hidden,), "dense", a, full) for n in ("input_layernorm", "post_attention_layernorm")]
    out.append(_Param("norm", (arch.hidden,), "dense", a, full))
    if not arch.tie_embeddings:
        out.append(_Param("lm_head", (arch.vocab, arch.hidden), "dense", a, full))
    if "lm_head" in setup.lora_targets:
        out.append(_Param("lm_head.lora_A", (setup.lora_r, arch.hidden), "dense", lora_elem, True))
        out.append(_Param("lm_head.lora_B", (arch.vocab, setup.lora_r), "dense", lora_elem, True))
    return out


def _nf4_bytes(n: int, double_quant: bool) -> int:
    """An NF4 weight as bitsandbytes stores it.

    Two 4-bit codes per byte, plus the 16-entry fp32 NF4 code book, plus one absmax scale
    per 64 values: an fp32 scale (4 bytes per 64 values = 0.5 bit/param) or, with double
    quantization, an 8-bit scale plus, per 256 scales, one fp32 second-level absmax, the
    256-entry fp32 code book of that 8-bit quantization and an fp32 offset (~0.127
    bit/param). This is exactly what ``memory.tensor_bytes`` reads off ``quant_state``.
    """
    blocks = math.ceil(n / NF4_BLOCK)
    packed = math.ceil(n / 2) + 16 * 4
    if not double_quant:
        return packed + 4 * blocks
    return packed + blocks + 4 + 4 * math.ceil(blocks / NF4_NESTED_BLOCK) + 256 * 4


def _param_bytes(p: _Param, double_quant: bool = True) -> int:
    """Bytes one parameter really occupies.

    int8 (LLM.int8) weights keep one fp32 scale per output row (``SCB``) beside the int8
    matrix; ``memory.weight_bytes`` counts it too.
    """
    if p.kind == "nf4":
        return _nf4_bytes(p.numel, double_quant)
    if p.kind == "int8":
        return p.numel + 4 * p.shape[0]
    return p.numel * p.elem


def _weight_bytes(params: list[_Param], setup: Setup) -> int:
    """All parameters, frozen and trainable, in their storage format."""
    return sum(_param_bytes(p, setup.double_quant) for p in params)


def _gradient_bytes(params: list[_Param]) -> int:
    """One gradient per trainable parameter, in the parameter's dtype; frozen ones have none.

    This is why LoRA saves so much: the frozen base gets no gradient at all.
    """
    return sum(p.numel * p.elem for p in params if p.trainable)


def _optimizer_bytes(params: list[_Param], setup: Setup) -> int:
    """Optimizer state for the trainable parameters, per optimizer family.

    * AdamW (``adamw_torch``, ``adamw_torch_fused``): two moments (``exp_avg`` and
      ``exp_avg_sq``) per parameter in the parameter's dtype: 8 bytes per fp32 parameter.
      ``paged_adamw_32bit`` (bitsandbytes) always keeps them in fp32.
    * 8-bit AdamW (``adamw_8bit``, ``adamw_bnb_8bit``, ``paged_adamw_8bit``): the two moments
      as uint8 codes (2 bytes/param) plus one fp32 absmax per 256 values per moment and a
      reference to a 256-entry fp32 code map per moment; tensors under 4096 values (norms,
      small LoRA matrices) keep fp32 moments, as bitsandbytes' ``min_8bit_size`` decides.
    * Lion keeps one moment (``lion_32bit``: fp32; ``lion_8bit``: as above, one state).
    * ``rmsprop``: one ``square_avg`` per parameter (momentum 0, not centered).
    * ``adafactor`` (transformers, ``beta1=None`` as Trainer uses it): a matrix keeps only a
      row vector and a column vector of second moments (rows + cols values, not rows x
      cols); a vector keeps a full second moment.
    * ``sgd``: Trainer's default momentum is 0, so SGD keeps no state at all.
    """
    total = 0
    for p in params:
        if not p.trainable:
            continue
        n = p.numel
        elem = setup.optim_state_bytes or p.elem
        o = setup.optim
        if o in ("adamw_torch", "adamw_torch_fused"):
            total += 2 * n * elem
        elif o == "paged_adamw_32bit":
            total += 2 * n * 4
        elif o in ("adamw_8bit", "adamw_bnb_8bit", "paged_adamw_8bit", "lion_8bit"):
            states = 1 if o.startswith("lion") else 2
            if n < OPTIM_8BIT_MIN_SIZE:
                total += states * n * 4
            else:
                total += states * (n + 4 * math.ceil(n / OPTIM_8BIT_BLOCK) + QMAP_BYTES)
        elif o == "lion_32bit":
            total += n * 4
        elif o == "rmsprop":
            total += n * elem
        elif o == "adafactor":
            if len(p.shape) >= 2:
                total += (math.prod(p.shape[:-1]) + math.prod(p.shape[:-2]) * p.shape[-1]) * p.elem
            else:
                total += n * p.elem
        elif o == "sgd":
            pass
        else:
            raise ValueError(f"optimizer {o!r}: estimate knows adamw_torch(_fused), adamw_8bit, adamw_bnb_8bit, "
                             f"paged_adamw_8bit/32bit, lion_8bit/32bit, rmsprop, adafactor and sgd")
    return total


# --------------------------------------------------------------------------------------
# Activations: a symbolic forward pass that applies PyTorch's save rules
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _T:
    """A tensor in the symbolic forward: a storage ``key``, its size, and whether it needs a grad."""

    key: str
    numel: int
    elem: int
    rg: bool

    @property
    def nbytes(self) -> int:
        return self.numel * self.elem


@dataclass
class _Forward:
    """Walks one training forward pass and collects what autograd saves, each storage once."""

    arch: Architecture
    setup: Setup
    batch: int
    seq: int
    saved: dict[str, int] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.batch * self.seq

    # -- primitive save rules ------------------------------------------------------------
    def save(self, t: _T) -> None:
        """Record a saved tensor; a storage already saved (same key) is not counted again."""
        self.saved.setdefault(t.key, t.nbytes)

    def new(self, key: str, features: int, elem: int, rg: bool) -> _T:
        """A fresh per-token tensor of ``features`` values per token."""
        return _T(key, self.tokens * features, elem, rg)

    def cast(self, t: _T, elem: int, key: str) -> _T:
        """``t.to(dtype)``: the same tensor when the dtype already matches, else a new storage.

        A cast saves nothing for backward (its gradient is just the reverse cast).
        """
        return t if t.elem == elem else _T(key, t.numel, elem, t.rg)

    def mul(self, x: _T, y: _T, key: str) -> _T:
        """``x * y`` saves ``y`` if ``x`` needs a gradient and ``x`` if ``y`` does."""
        if x.rg:
            self.save(y)
        if y.rg:
            self.save(x)
        return _T(key, max(x.numel, y.numel), max(x.elem, y.elem), x.rg or y.rg)

    def dropout(self, x: _T, key: str) -> _T:
        """Training-mode dropout saves its mask, but only if ``x`` needs a gradient.

        On CPU PyTorch implements it as ``x * (bernoulli(1-p) / (1-p))``: the mask is a
        tensor in ``x``'s dtype. On CUDA the fused kernel saves a one-byte bool mask.
        """
        if x.rg:
            self.save(_T(key + ".mask", x.numel, 1 if self.setup.device == "cuda" else x.elem, False))
        return _T(key, x.numel, x.elem, x.rg)

    def matmul(self, x: _T, w_key: str, w_numel: int, w_trainable: bool, out_features: int, key: str) -> _T:
        """A dense ``nn.Linear``: saves its input for the weight's gradient (if the weight
        trains) and its weight for the input's gradient (a parameter, so not an activation).

        Under bf16 autocast the matmul runs on bf16 *copies*: the input is cast per call
        (a new storage), the weight is cast too (autocast caches the cast of a trainable
        leaf for the whole forward) and the matmul saves the copies -- so the bf16 weight
        copy is saved memory that no parameter accounts for.
        """
        if self.setup.autocast:
            xc = self.cast(x, 2, f"{key}.in@bf16")
            wc = _T(f"{w_key}@bf16", w_numel, 2, w_trainable)
            if wc.rg:
                self.save(xc)
            if xc.rg:
                self.save(wc)
            return self.new(key, out_features, 2, x.rg or w_trainable)
        if w_trainable:
            self.save(x)
        return self.new(key, out_features, x.elem, x.rg or w_trainable)

    # -- modules -------------------------------------------------------------------------
    def rmsnorm(self, x: _T, key: str) -> _T:
        """LlamaRMSNorm: ``w * (x32 * rsqrt(mean(x32**2) + eps)).to(dtype)``.

        ``x32`` is ``x`` itself in fp32 or a fresh fp32 copy of a bf16 ``x``; ``pow`` and the
        multiply save it. ``rsqrt`` saves its fp32 output (one value per token). The final
        multiply by the weight saves the normalized tensor only if the weight trains (full
        fine-tuning); with a frozen weight only the weight is needed. If ``x`` needs no
        gradient (layer 0 with a frozen embedding) nothing upstream of the weight is saved.
        """
        trainable = self.setup.full
        x32 = self.cast(x, 4, key + ".x32")
        if x.rg:
            self.save(x32)
            self.save(self.new(key + ".rsqrt", 1, 4, True))
        normed = self.cast(self.new(key + ".normed", self.arch.hidden, 4, x.rg), x.elem, key + ".normed_cast")
        if trainable:
            self.save(normed)
        return self.new(key, self.arch.hidden, x.elem, x.rg or trainable)

    def linear(self, x: _T, layer: int, name: str) -> _T:
        """A projection: the (dense or 4/8-bit) base matmul plus, if targeted, LoRA's path.

        bitsandbytes' 4-bit and 8-bit matmuls keep their packed weight in ``ctx`` and save
        no activation at all (backward dequantizes the weight again). LoRA computes
        ``B(A(dropout(x))) * scale``: dropout saves its mask, ``A`` saves its (dropped-out)
        input of width ``in``, ``B`` saves ``A``'s rank-r output; with dropout 0 peft's
        dropout is the identity and ``A`` saves ``x`` itself, shared with whatever else
        saved it. peft first casts ``x`` to the adapter's dtype (fp32), a new storage on a
        bf16 base.
        """
        fan_in, fan_out, _ = self.arch.linear_shapes()[name]
        key = f"L{layer}.{name}"
        s = self.setup
        if s.quant:  # casts x to the compute dtype and back; saves nothing
            out = self.new(key, fan_out, x.elem, x.rg)
        else:
            out = self.matmul(x, f"W.{key}", fan_in * fan_out, s.full, fan_out, key)
        if name in s.lora_targets:
            self.lora(x, key, fan_in, fan_out)
            out = _T(out.key, out.numel, out.elem, True)
        return out

    def lora(self, x: _T, key: str, fan_in: int, fan_out: int) -> None:
        s = self.setup
        lora_elem = _DTYPE_BYTES[s.lora_dtype]
        # peft's bnb layers skip the cast under (CUDA) autocast: torch.is_autocast_enabled() with
        # no device argument asks about CUDA, so on CPU they cast even under CPU autocast
        casts_input = not (s.autocast and s.quant and s.device == "cuda")
        xl = self.cast(x, lora_elem, key + ".lora_in") if casts_input else x
        if s.lora_dropout > 0:
            xl = self.dropout(xl, key + ".lora_drop")
        a_out = self.matmul(xl, f"W.{key}.lora_A", s.lora_r * fan_in, True, s.lora_r, key + ".lora_A")
        self.matmul(a_out, f"W.{key}.lora_B", fan_out * s.lora_r, True, fan_out, key + ".lora_B")

    def attention(self, x: _T, layer: int) -> _T:
        """q/k/v projections, rotary embedding, SDPA and the output projection.

        Rotary computes ``q * cos + rotate_half(q) * sin``: the multiplies save ``cos`` and
        ``sin`` (computed once per forward, shape seq x head_dim, shared by every layer, so
        counted once), not ``q``. SDPA (with GQA, no mask: causal, no padding) saves the
        rotated q and k, v (still at key/value-head size, GQA does not expand it), its
        output and an fp32 log-sum-exp per query row and head. The output projection's
        input is SDPA's output itself (the transpose back is a view), so it adds nothing.
        """
        a, d = self.arch, self.arch.d
        q = self.linear(x, layer, "q_proj")
        k = self.linear(x, layer, "k_proj")
        v = self.linear(x, layer, "v_proj")
        cos = _T("rotary.cos", self.seq * d, self.setup.a, False)
        sin = _T("rotary.sin", self.seq * d, self.setup.a, False)
        rotated = []
        for t, heads, name in ((q, a.heads, "q"), (k, a.kv_heads, "k")):
            r1 = self.mul(t, cos, f"L{layer}.{name}_cos")
            self.mul(_T(f"L{layer}.{name}_half", t.numel, t.elem, t.rg), sin, f"L{layer}.{name}_sin")
            rotated.append(_T(f"L{layer}.{name}_rot", r1.numel, r1.elem, t.rg))
        q_rot, k_rot = rotated
        # SDPA is a bf16 op under autocast: fp32 inputs get bf16 copies, which it saves
        elem = 2 if self.setup.autocast else q_rot.elem
        qkv = [self.cast(t, elem, f"{t.key}@sdpa") for t in (q_rot, k_rot, v)]
        rg = any(t.rg for t in qkv)
        out = self.new(f"L{layer}.attn_out", a.heads * d, elem, rg)
        if rg:
            for t in qkv + [out]:
                self.save(t)
            self.save(_T(f"L{layer}.lse", self.tokens * a.heads, 4, False))
        return self.linear(out, layer, "o_proj")

    def mlp(self, x: _T, layer: int) -> _T:
        """``down(silu(gate(x)) * up(x))``: SiLU saves its input (the gate output), the
        multiply saves both of its inputs (each for the other's gradient), and the down
        projection saves the product only if its own weight (or LoRA ``A``) needs it."""
        i = self.arch.intermediate
        gate = self.linear(x, layer, "gate_proj")
        up = self.linear(x, layer, "up_proj")
        if gate.rg:
            self.save(gate)
        act = self.new(f"L{layer}.act", i, gate.elem, gate.rg)
        prod = self.mul(act, up, f"L{layer}.prod")
        return self.linear(prod, layer, "down_proj")

    def layer(self, x: _T, layer: int) -> _T:
        """One decoder block: two pre-norm residual branches. Residual adds save nothing."""
        h = self.rmsnorm(x, f"L{layer}.input_layernorm")
        attn = self.attention(h, layer)
        mid = self.new(f"L{layer}.mid", self.arch.hidden, max(x.elem, attn.elem), x.rg or attn.rg)
        h = self.rmsnorm(mid, f"L{layer}.post_attention_layernorm")
        mlp = self.mlp(h, layer)
        return self.new(f"L{layer}.out", self.arch.hidden, max(mid.elem, mlp.elem), mid.rg or mlp.rg)

    def layer_trains(self) -> bool:
        s = self.setup
        return s.full or bool(s.lora_targets & set(LINEARS))

    def run(self) -> dict[str, int]:
        """The whole forward: embedding, the layers (or their checkpoints), norm, head, loss.

        * Embedding: saves the token ids (int64) for the weight's gradient, only if it trains.
        * Gradient checkpointing (non-reentrant, per decoder layer): the layer's internals
          are not kept; the checkpoint saves the layer's input hidden state (tokens x hidden),
          and the layer is recomputed during backward. Rotary cos/sin are then only used
          inside checkpoints, so they are not saved either.
        * Head: ``lm_head`` saves its input if it trains (full fine-tuning, tied or not).
        * Loss: transformers upcasts the logits to fp32 (a copy on a bf16 model), then
          ``cross_entropy`` = ``log_softmax`` (saves its fp32 output: tokens x vocab x 4
          bytes, usually the largest single activation) + ``nll_loss`` (saves the shifted
          int64 labels and a scalar total weight).
        """
        s, a = self.setup, self.arch
        if s.full:
            self.save(_T("input_ids", self.tokens, 8, False))
        x = self.new("embed", a.hidden, s.a, s.full)
        for layer in range(a.layers):
            if s.gradient_checkpointing:
                self.save(x)
                x = self.new(f"L{layer}.out", a.hidden, s.a, x.rg or self.layer_trains())
            else:
                x = self.layer(x, layer)
        x = self.rmsnorm(x, "norm")
        self.matmul(x, "W.lm_head", a.vocab * a.hidden, s.full, a.vocab, "logits")
        if "lm_head" in s.lora_targets:
            self.lora(x, "lm_head", a.hidden, a.vocab)
        self.save(self.new("log_softmax", a.vocab, 4, True))
        # labels padded by one then shifted: ``pad(labels)[..., 1:].contiguous()`` copies, except
        # with batch 1, where the slice is already contiguous and keeps the padded storage
        self.save(_T("shift_labels", self.tokens + (1 if self.batch == 1 else 0), 8, False))
        self.save(_T("total_weight", 1, 4, False))
        return self.saved


def activation_bytes(arch: Architecture, setup: Setup, batch: int, seq: int) -> int:
    """Bytes autograd saves for backward in one forward of ``batch`` x ``seq`` tokens."""
    return sum(_Forward(arch, setup, batch, seq).run().values())


def activation_parts(arch: Architecture, setup: Setup, batch: int, seq: int) -> dict[str, int]:
    """The same, itemised by saved storage (keys such as ``L3.gate_proj``, ``log_softmax``)."""
    return dict(_Forward(arch, setup, batch, seq).run())


def breakdown(arch: Architecture, setup: Setup, batch: int, seq: int) -> MemoryBreakdown:
    """All four kinds of memory for an architecture and setup."""
    params = _parameters(arch, setup)
    return MemoryBreakdown(weights=_weight_bytes(params, setup), gradients=_gradient_bytes(params),
                           optimizer=_optimizer_bytes(params, setup), activations=activation_bytes(arch, setup, batch, seq))


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------
def model_architecture(name: str) -> Architecture:
    """The architecture of a preset, local folder or (cached) hub id, read from config.json only."""
    from transformers import AutoConfig

    from .errors import ModelNotFoundError
    from .models import resolve_model

    try:
        return Architecture.from_config(AutoConfig.from_pretrained(resolve_model(name)))
    except OSError as err:
        raise ModelNotFoundError(f"estimate: no config.json for model {name!r} offline ({str(err).splitlines()[0][:160]}); "
                                 f"pass model_config=LlamaConfig(...) (or a dict of its fields) to predict a model "
                                 f"you have not downloaded") from err


def setup_for(config: RunConfig, *, device: str = "cpu", dtype: str = "float32") -> Setup:
    """How ``load_model`` + ``measure_training_step`` will run ``config``.

    ``load_model`` always loads fp32 weights; ``config.bf16`` means bf16 autocast around
    them (Trainer's mixed precision).
    """
    if config.dropout > 0:
        raise ValueError("estimate models attention_dropout=0 (RunConfig.dropout=0.0, SmolLM2's default): with "
                         "attention dropout SDPA falls back to the math kernel, which saves the full attention matrix")
    if config.load_in_8bit and config.bf16:
        raise ValueError("estimate does not model 8-bit loading under bf16 autocast")
    return Setup(lora_r=config.lora_r, lora_targets=_lora_targets(config.lora_target_modules) if config.is_lora else frozenset(),
                 lora_dropout=config.lora_dropout if config.is_lora else 0.0,
                 quant="nf4" if config.load_in_4bit else "int8" if config.load_in_8bit else None,
                 double_quant=config.bnb_4bit_use_double_quant, dtype=dtype, autocast=config.bf16,
                 optim=config.optim, gradient_checkpointing=config.gradient_checkpointing, device=device)


def estimate(config: RunConfig, *, seq_len: int | None = None, model_config: Any = None,
             batch_size: int | None = None, device: str = "cpu") -> MemoryBreakdown:
    """Predict the memory of one training step of ``config``, before loading anything.

    Args:
        config: the run. Used: ``model`` (unless ``model_config`` is given), ``lora_r``,
            ``lora_target_modules``, ``lora_dropout``, ``load_in_4bit``/``load_in_8bit``,
            ``bnb_4bit_use_double_quant``, ``optim``, ``per_device_train_batch_size``,
            ``max_seq_length``, ``gradient_checkpointing`` and ``bf16`` (autocast).
        seq_len: tokens per sequence (default ``config.max_seq_length``). Predict the step
            as ``measure_training_step`` sees a batch of this length, no padding.
        model_config: a transformers config (``LlamaConfig(...)``), a dict of its fields or an
            :class:`Architecture`, for sizes you have not downloaded; otherwise the preset's
            ``config.json`` is read (``AutoConfig`` on ``resolve_model(config.model)``).
        batch_size: sequences per step (default ``config.per_device_train_batch_size``).
        device: ``"cpu"`` or ``"cuda"``; only dropout masks differ (see :class:`Setup`).

    Returns:
        a :class:`MemoryBreakdown` in bytes, comparable field by field with
        ``measure_training_step(model, batch, optimizer)`` after one optimizer step:

        * weights: fp32 base (``load_model`` loads fp32) or NF4/int8 base linears with their
          quantization constants, dense embedding/norms, plus fp32 LoRA ``A``/``B``;
        * gradients: 4 bytes per trainable parameter (all of them, or only LoRA's);
        * optimizer: per ``config.optim`` (see :func:`_optimizer_bytes`);
        * activations: what autograd saves (see :class:`_Forward`); with gradient
          checkpointing only the checkpointed layers' inputs plus the final norm and loss.

    Not modelled: attention dropout > 0 (SDPA's math fallback), padding masks (a padded
    batch uses a mask, which also changes the SDPA kernel), and allocator effects: CUDA's
    peak also holds transient buffers (gradients being formed, the logits' gradient,
    a recomputed layer), the CUDA context and fragmentation.
    """
    arch = Architecture.from_config(model_config) if model_config is not None else model_architecture(config.model)
    setup = setup_for(config, device=device)
    return breakdown(arch, setup, batch_size or config.per_device_train_batch_size, seq_len or config.max_seq_length)


# --------------------------------------------------------------------------------------
# What fits where
# --------------------------------------------------------------------------------------
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
    lora = replace(base, lora_r=FITS_LORA_R, lora_targets=_lora_targets([FITS_LORA_TARGETS]),
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
        parts = _Forward(arch, one, batch, seq).run()
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
