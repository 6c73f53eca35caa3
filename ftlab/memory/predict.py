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

Across several devices (``estimate(..., devices=N, strategy=...)``) the same bill of
materials is split the way each data-parallel strategy of :data:`STRATEGIES` splits it, so
the prediction is one rank's breakdown: whole tensors assigned greedily to ranks for ZeRO-1
(as ``torch.distributed.optim.ZeroRedundancyOptimizer`` assigns them), row blocks of every
tensor for FSDP (as ``torch.chunk`` cuts dimension 0). :func:`gathered_bytes` and
:func:`communication_bytes` add what sharding costs: parameters gathered for compute, and
the collectives' payload per step. :mod:`ftlab.distributed` measures all of it on real
processes.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, replace
from typing import Any

from transformers import AutoConfig

from ftlab.config.run_config import RunConfig
from ftlab.errors import ArgumentError, ModelNotFoundError
from ftlab.setup.presets import resolve_model
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


def breakdown(arch: Architecture, setup: Setup, batch: int, seq: int, *, devices: int = 1, strategy: str = "ddp",
              rank: int = 0) -> MemoryBreakdown:
    """All four kinds of memory for an architecture and setup, on ``rank`` of ``devices``
    (batch is per rank: activations are one process's at that batch, whatever the strategy)."""
    params = _parameters(arch, setup)
    weights, gradients, optimizer = _rank_states(params, setup, devices, strategy, rank)
    return MemoryBreakdown(weights=weights, gradients=gradients, optimizer=optimizer,
                           activations=activation_bytes(arch, setup, batch, seq))


# --------------------------------------------------------------------------------------
# Several devices: what each rank holds under each data-parallel strategy
# --------------------------------------------------------------------------------------
STRATEGIES: dict[str, str] = {
    "ddp": "DistributedDataParallel: every rank holds the whole model, its gradients and optimizer state; "
           "gradients are all-reduced",
    "zero1": "ZeRO-1 as torch offers it, ZeroRedundancyOptimizer over DDP: each rank keeps the optimizer state of "
             "whole tensors assigned to it (largest first, to the emptiest rank), then broadcasts their new values",
    "zero2": "ZeRO-2 as torch offers it, FSDP2 fully_shard(reshard_after_forward=False): weights, gradients and "
             "optimizer state split into row blocks between steps; the whole model is gathered from the forward "
             "through the backward",
    "fsdp": "FSDP2 / ZeRO-3, fully_shard per decoder layer and the root: weights, gradients and optimizer state split "
            "into row blocks; one decoder layer (plus the root's embedding and norm) gathered at a time",
}
"""The data-parallel strategies ftlab predicts and :mod:`ftlab.distributed` runs, and what each keeps per rank.

torch has no ZeRO-2 of its own: FSDP2 without resharding after forward (FSDP1's
``SHARD_GRAD_OP``) shards gradients and optimizer state and keeps the parameters gathered
for the whole step, which is what ZeRO-2 holds during a step (DeepSpeed's ZeRO-2 also keeps
them gathered between steps)."""

SHARDED = frozenset({"zero2", "fsdp"})
"""Strategies that cut every parameter into row blocks (FSDP2's ``Shard(0)``)."""

SHARDABLE_OPTIMIZERS: tuple[str, ...] = ("adamw_torch", "adamw_torch_fused", "sgd", "rmsprop")
"""The optimizers whose state is one value per parameter value, in torch: they step on a
shard (a DTensor) or on a subset of tensors as they would on the whole. bitsandbytes' and
Adafactor's state depends on a tensor's shape and blocks, so ZeRO and FSDP are not predicted
for them."""


def check_strategy(function: str, strategy: str, devices: int, setup: Setup,
                   error: type[ArgumentError] = ArgumentError, argument: str = "strategy") -> None:
    """Raise ``error`` naming ``function``'s ``argument`` (and ``devices``) for a strategy ftlab
    cannot predict, and so cannot run: an unknown name, no devices, an optimizer whose state
    is not one value per weight, or a quantized base under a sharding strategy."""
    if strategy not in STRATEGIES:
        raise error(function, argument, strategy, f"one of {', '.join(STRATEGIES)}")
    if not (isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1):
        raise error(function, "devices", devices, "an int >= 1 (processes, one per GPU)")
    if strategy != "ddp" and setup.optim not in SHARDABLE_OPTIMIZERS:
        raise error(function, argument, strategy, f"'ddp' for optim={setup.optim!r}: ZeRO and FSDP are predicted and "
                    f"run for {', '.join(SHARDABLE_OPTIMIZERS)}")
    if strategy in SHARDED and setup.quant:
        raise error(function, argument, strategy, "'ddp' or 'zero1' for a 4-/8-bit base: sharding quantized "
                    "weights is not predicted")


def shard_rows(rows: int, devices: int, rank: int) -> int:
    """Rows of a tensor's dimension 0 that ``rank`` holds: ``torch.chunk(rows, devices)[rank]``,
    the cut FSDP2 makes. Chunks are ``ceil(rows / devices)`` long, so the last ranks may hold
    fewer (259 rows over 2 ranks: 130 and 129) and, with more ranks than rows, none."""
    chunk = -(-rows // devices)
    return max(0, min(chunk, rows - rank * chunk))


def _shard(p: _Param, devices: int, rank: int) -> _Param:
    return replace(p, shape=(shard_rows(p.shape[0], devices, rank), *p.shape[1:]))


def zero1_owners(sizes: list[int], devices: int) -> list[int]:
    """The rank that keeps each tensor's optimizer state under ZeRO-1, for tensors of ``sizes``
    values in model order: ZeroRedundancyOptimizer sorts them largest first (a stable sort)
    and gives each to the rank with the fewest values so far (the lowest such rank)."""
    owners = [0] * len(sizes)
    load = [(0, rank) for rank in range(devices)]  # a heap: the emptiest rank first, the lowest among equals
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        values, owners[i] = load[0]
        heapq.heapreplace(load, (values + sizes[i], owners[i]))
    return owners


def _zero1_optimizer(params: list[_Param], setup: Setup, devices: int) -> list[int]:
    """Optimizer state bytes of each rank under ZeRO-1."""
    stepped = [p for p in params if p.trainable]
    per_rank = [0] * devices
    for p, owner in zip(stepped, zero1_owners([p.numel for p in stepped], devices)):
        per_rank[owner] += _optimizer_bytes([p], setup)
    return per_rank


def _rank_states(params: list[_Param], setup: Setup, devices: int, strategy: str, rank: int) -> tuple[int, int, int]:
    """Weights, gradients and optimizer state on one rank."""
    if strategy in SHARDED:
        params = [_shard(p, devices, rank) for p in params]
    optimizer = _zero1_optimizer(params, setup, devices)[rank] if strategy == "zero1" else _optimizer_bytes(params, setup)
    return _weight_bytes(params, setup), _gradient_bytes(params), optimizer


def busiest_rank(arch: Architecture, setup: Setup, devices: int, strategy: str) -> int:
    """The rank holding the most weights, gradients and optimizer state: the one that decides
    whether a model fits. Rank 0 (FSDP's first row blocks are the longest), except under
    ZeRO-1, where the greedy split of whole tensors decides."""
    if strategy != "zero1":
        return 0
    per_rank = _zero1_optimizer(_parameters(arch, setup), setup, devices)
    return per_rank.index(max(per_rank))


def gathered_bytes(arch: Architecture, setup: Setup, strategy: str, blocks: int = 1) -> int:
    """Bytes of whole parameters a sharded rank holds at once during the step, beside its shards.

    ``fsdp``: the root group (embedding, final norm, an untied head) stays gathered through
    the forward and again through the backward, each decoder layer only while it computes:
    root + ``blocks`` of the largest layer. ``blocks=1`` is what the compute uses at one
    moment (what the CPU measurement sees); on a GPU FSDP2 gathers the next layer while one
    computes, so count ``blocks=2`` there. ``zero2``: every parameter, from the forward through
    the backward. ``ddp``/``zero1`` never shard a parameter: 0.
    """
    if strategy not in SHARDED:
        return 0
    sizes: dict[str, int] = {}
    for p in _parameters(arch, setup):
        layer = p.name.split(".")[0]  # "3" for a decoder layer's tensor, else a root tensor's name
        group = layer if layer.isdigit() else "root"
        sizes[group] = sizes.get(group, 0) + _param_bytes(p, setup.double_quant)
    root = sizes.pop("root")
    if strategy == "zero2":
        return root + sum(sizes.values())
    return root + min(blocks, len(sizes)) * max(sizes.values(), default=0)


def communication_bytes(arch: Architecture, setup: Setup, devices: int, strategy: str) -> dict[str, int]:
    """Payload of each kind of collective in one training step, in bytes, as every rank calls it.

    An all-reduce's payload is the tensor reduced, an all-gather's the gathered output, a
    reduce-scatter's the input before it is scattered, a broadcast's the tensor sent. FSDP
    pads each tensor's rows to a multiple of ``devices`` before gathering or scattering it,
    so its payloads count the padding.

    * ``ddp``: one all-reduce of every gradient;
    * ``zero1``: the same all-reduce, then each rank broadcasts the tensors it stepped;
    * ``zero2``: every parameter all-gathered once (the forward), every gradient
      reduce-scattered (the backward);
    * ``fsdp``: every parameter all-gathered twice (forward, then again in the backward:
      it was freed in between), every gradient reduce-scattered.

    What crosses the wire per rank depends on the algorithm (a ring sends ``2(N-1)/N`` of
    an all-reduce, ``(N-1)/N`` of the others; see :mod:`ftlab.distributed.comm`).
    """
    params = _parameters(arch, setup)
    trainable = sum(p.numel * p.elem for p in params if p.trainable)  # their gradients, or their new values
    if strategy == "ddp":
        return {"all_reduce": trainable}
    if strategy == "zero1":
        return {"all_reduce": trainable, "broadcast": trainable}

    def padded(p: _Param) -> int:
        return devices * -(-p.shape[0] // devices) * math.prod(p.shape[1:]) * p.elem

    gathers = 1 if strategy == "zero2" else 2
    return {"all_gather": gathers * sum(padded(p) for p in params),
            "reduce_scatter": sum(padded(p) for p in params if p.trainable)}


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
             batch_size: int | None = None, device: str = "cpu", devices: int = 1, strategy: str = "ddp",
             rank: int = 0) -> MemoryBreakdown:
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
        device: ``"cpu"`` or ``"cuda"``: dropout masks differ (see :class:`Setup`), and on
            CUDA an fp32 step's attention runs PyTorch's math kernel, which saves the full
            attention matrix (see ``ftlab.memory.activations``).
        devices: processes (one per GPU) training together, each on ``batch_size`` sequences.
        strategy: how they split the model, one of :data:`STRATEGIES` (``"ddp"``: not at all).
        rank: which process to predict (0 to ``devices - 1``): ranks differ when tensors do
            not split evenly; :func:`busiest_rank` says which holds the most. With the
            defaults (one device) the prediction is the single-process one.

    Returns:
        a :class:`MemoryBreakdown` in bytes, comparable field by field with
        ``measure_training_step(model, batch, optimizer)`` after one optimizer step:

        * weights: fp32 base (``load_model`` loads fp32) or NF4/int8 base linears with their
          quantization constants, dense embedding/norms, plus fp32 LoRA ``A``/``B``; under
          ``zero2``/``fsdp`` the rank's row blocks of them (the local tensors of FSDP's
          DTensors; what it gathers for compute is :func:`gathered_bytes`);
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
    check_strategy("estimate", strategy, devices, setup)
    if not (isinstance(rank, int) and 0 <= rank < devices):
        raise ArgumentError("estimate", "rank", rank, f"an int from 0 to devices - 1 = {devices - 1}")
    return breakdown(arch, setup, batch_size or config.per_device_train_batch_size, seq_len or config.max_seq_length,
                     devices=devices, strategy=strategy, rank=rank)
