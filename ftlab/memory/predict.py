"""Training memory predicted from a model's config alone, before anything runs.

:func:`ftlab.memory.measure_training_step` *measures* the four kinds of training memory of
one step. This module *predicts* the same four numbers from the architecture (layers,
hidden size, heads, vocabulary...) and the run's settings (full / LoRA / QLoRA, optimizer,
batch, sequence length, gradient checkpointing), so a learner can ask "will 8B QLoRA fit
my 24 GiB card?" without downloading 16 GB first.

Weights, gradients and optimizer state are a bill of materials: list every parameter
tensor the model will hold, then price it (fp32 4 bytes, bf16 2, NF4 half a byte plus its
block constants...; optimizer state from :data:`ftlab.config.optimizers.OPTIMIZER_TABLE`). Those
three predictions are exact. Activations come from the op-by-op walk in
:mod:`ftlab.memory.activations`.

The public entry point is :func:`estimate`: the :class:`~ftlab.memory.MemoryBreakdown` of
one step of a :class:`~ftlab.config.run_config.RunConfig`, from the preset's ``config.json`` or any
Llama/Qwen2-like config you pass (hypothetical sizes included). What fits on which GPU is
:func:`ftlab.memory.fits.fits_table`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from transformers import AutoConfig

from ftlab.config.run_config import RunConfig
from ftlab.errors import ModelNotFoundError
from ftlab.setup.models import resolve_model
from ftlab.config.optimizers import optimizer_spec
from ftlab.config.formats import ABSMAX_BLOCKSIZE, DYNAMIC_CODE_ENTRIES, FP32_BYTES, NF4_BLOCKSIZE, NF4_CODE_ENTRIES
from ftlab.memory.activations import activation_bytes
from ftlab.memory.architecture import Architecture, Setup, resolve_lora_targets
from ftlab.memory.breakdown import MemoryBreakdown

_NF4_CODE_BYTES = FP32_BYTES * NF4_CODE_ENTRIES
"""The 16-entry fp32 NF4 code book every 4-bit weight's quant state holds."""
_DOUBLE_QUANT_CODE_BYTES = FP32_BYTES * DYNAMIC_CODE_ENTRIES
"""The 256-entry fp32 dynamic code book of double quantization's 8-bit absmax codes."""


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


def _parameters(arch: Architecture, setup: Setup) -> list[_Param]:
    """The bill of materials: every parameter tensor the model holds, each storage once.

    Embedding, norms and (untied) head stay dense even under QLoRA (bitsandbytes never
    quantizes embeddings or the output head); the seven projections per layer are dense,
    NF4 or int8; LoRA adds ``A`` (r x in) and ``B`` (out x r) per targeted module.
    """
    a, full, lora_elem = setup.a, setup.full, setup.lora_elem
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
    bit/param). This is exactly what ``measure.tensor_bytes`` reads off ``quant_state``.
    """
    blocks = math.ceil(n / NF4_BLOCKSIZE)
    packed = math.ceil(n / 2) + _NF4_CODE_BYTES
    if not double_quant:
        return packed + 4 * blocks
    return packed + blocks + 4 + 4 * math.ceil(blocks / ABSMAX_BLOCKSIZE) + _DOUBLE_QUANT_CODE_BYTES


def _param_bytes(p: _Param, double_quant: bool = True) -> int:
    """Bytes one parameter really occupies.

    int8 (LLM.int8) weights keep one fp32 scale per output row (``SCB``) beside the int8
    matrix; ``measure.weight_bytes`` counts it too.
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
    """Optimizer state for the trainable parameters, priced per ``setup.optim`` by its row of
    :data:`~ftlab.config.optimizers.OPTIMIZER_TABLE` (the table's docstring says what each keeps),
    with the buffers ``setup.optim_args`` switch on (SGD's momentum, RMSprop's momentum and
    centering)."""
    spec = optimizer_spec(setup.optim, setup.optim_args)
    # Trainer keeps a trainable embedding's state in 32 bits under an 8-bit optimizer (its
    # bitsandbytes override for nn.Embedding): 8-bit codes hurt rarely-updated rows most
    embedding = replace(spec, blockwise_8bit=False, fp32=True) if spec.blockwise_8bit else spec
    return sum((embedding if p.name == "embed_tokens" else spec).state_bytes(p.shape, p.elem, setup.optim_state_bytes)
               for p in params if p.trainable)


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
    return Setup(lora_r=config.lora_r, lora_targets=resolve_lora_targets(config.lora_target_modules) if config.is_lora else frozenset(),
                 lora_dropout=config.lora_dropout if config.is_lora else 0.0,
                 quant="nf4" if config.load_in_4bit else "int8" if config.load_in_8bit else None,
                 double_quant=config.bnb_4bit_use_double_quant, dtype=dtype, autocast=config.bf16,
                 optim=config.optim, optim_args=config.optim_args, gradient_checkpointing=config.gradient_checkpointing,
                 device=device)


def estimate(config: RunConfig, *, seq_len: int | None = None, model_config: Any = None,
             batch_size: int | None = None, device: str = "cpu") -> MemoryBreakdown:
    """Predict the memory of one training step of ``config``, before loading anything.

    Args:
        config: the run. Used: ``model`` (unless ``model_config`` is given), ``lora_r``,
            ``lora_target_modules``, ``lora_dropout``, ``load_in_4bit``/``load_in_8bit``,
            ``bnb_4bit_use_double_quant``, ``optim``, ``optim_args``, ``per_device_train_batch_size``,
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
        * optimizer: per ``config.optim`` and ``config.optim_args`` (see :mod:`ftlab.config.optimizers`);
        * activations: what autograd saves (see :mod:`ftlab.memory.activations`); with gradient
          checkpointing only the checkpointed layers' inputs plus the final norm and loss.

    Not modelled: attention dropout > 0 (SDPA's math fallback), padding masks (a padded
    batch uses a mask, which also changes the SDPA kernel), and allocator effects: CUDA's
    peak also holds transient buffers (gradients being formed, the logits' gradient,
    a recomputed layer), the CUDA context and fragmentation.
    """
    arch = Architecture.from_config(model_config) if model_config is not None else model_architecture(config.model)
    setup = setup_for(config, device=device)
    return breakdown(arch, setup, batch_size or config.per_device_train_batch_size, seq_len or config.max_seq_length)
