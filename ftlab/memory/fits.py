"""What fits where: predicted memory of common open model sizes on common GPUs.

:func:`fits_table` answers "which model sizes can I fine-tune, and how, on a 16/24/48/80
GiB card?" for published architectures from 0.5B to 70B parameters, full fine-tuning vs
LoRA vs QLoRA, from the same predictor :func:`~ftlab.memory.estimate` uses, plus the
transient buffers of backward that a whole-card question must include. With ``devices`` and
a ``strategy`` it answers per GPU of a data-parallel group, and :func:`devices_needed` turns
that around: how many GPUs of a size a full fine-tune needs under each strategy, beside
whether LoRA or QLoRA fit one.
"""
from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any, Iterable

from ftlab.config.run_config import RunConfig
from ftlab.errors import ArgumentError
from ftlab.memory.activations import activation_parts
from ftlab.memory.architecture import Architecture, Setup
from ftlab.memory.breakdown import GiB
from ftlab.memory.predict import (SHARDED, STRATEGIES, breakdown, busiest_rank, check_strategy, gathered_bytes,
                                  model_architecture, setup_for)

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

METHODS = ("full", "lora", "qlora")

WEIGHTS: dict[str, str] = {
    "bfloat16": "a bf16 base, loaded with torch_dtype=bfloat16 as TRL, axolotl and Unsloth load it, computing in "
                "bf16: bf16 weights (and, fully fine-tuned, bf16 gradients), fp32 AdamW moments, no fp32 master "
                "copy (2 + 2 + 8 = 12 bytes a trained parameter)",
    "float32": "an fp32 base, as ftlab's own runs load it: Trainer's bf16=True computes in bf16 and keeps the "
               "weights, their gradients and AdamW's moments in fp32 (4 + 4 + 8 = 16 bytes a trained parameter, the "
               "fp32 weights are the master copy)",
}
"""The storage of the unquantized weights a prediction can assume, and what each implies.

``DEFAULT_WEIGHTS`` (bf16) is what "will it fit?" assumes unless told otherwise: it is how
practitioners load a base to fine-tune it. ``"float32"`` is the accounting of ftlab's own
runs (``load_model`` keeps fp32 weights, so its CPU measurements are exact), one argument away."""

DEFAULT_WEIGHTS = "bfloat16"
"""The weight storage every "will it fit?" answer assumes by default (see :data:`WEIGHTS`)."""

LOSSES: dict[str, str] = {
    "cross_entropy": "plain cross-entropy, as transformers computes it: the fp32 log-softmax of every logit is saved "
                     "(tokens x vocab x 4 bytes) and the logits' gradient is formed whole in backward",
    "chunked": "a chunked (fused) cross-entropy, as Liger's fused linear cross-entropy and Cut Cross-Entropy "
               "compute it on GPUs: the head's input, the labels and one fp32 log-sum-exp per token are saved, "
               "and the logits exist one vocabulary chunk at a time (ftlab.lessons.chunked_loss)",
}
"""The loss computations a prediction can assume, and what each keeps (``Setup.loss``)."""


def method_config(method: str, gradient_checkpointing: bool = True) -> RunConfig:
    """ftlab's own run of ``method`` on a GPU: RunConfig's defaults (AdamW; LoRA at its default
    rank on its default modules), bf16 autocast, and an NF4 base for QLoRA. What the widget,
    the fits table and ``devices_needed`` start from, so the three give one answer."""
    if method not in METHODS:
        raise ArgumentError("method_config", "method", method, f"one of {', '.join(METHODS)}")
    base = RunConfig(bf16=True, gradient_checkpointing=gradient_checkpointing)
    return {"full": base.replace(lora_r=0), "lora": base, "qlora": base.replace(load_in_4bit=True)}[method]


def _check_choice(function: str, argument: str, value: str, choices: dict[str, str]) -> None:
    if value not in choices:
        raise ArgumentError(function, argument, value, f"one of {', '.join(choices)}")


def gpu_setup(config: RunConfig, weights: str = DEFAULT_WEIGHTS, loss: str = "cross_entropy") -> Setup:
    """How ``config`` holds memory on a CUDA GPU with its unquantized weights in ``weights``
    (a key of :data:`WEIGHTS`) and its loss computed as ``loss`` (a key of :data:`LOSSES`).
    bf16 weights compute in bf16 without autocast (attention then runs the fused kernels) and
    keep AdamW's moments in fp32, as mixed-precision recipes without a master copy do; LoRA's
    adapters stay fp32, as peft creates them."""
    _check_choice("gpu_setup", "weights", weights, WEIGHTS)
    _check_choice("gpu_setup", "loss", loss, LOSSES)
    setup = replace(setup_for(config, device="cuda", dtype=weights), loss=loss)
    return replace(setup, autocast=False, optim_state_bytes=4) if weights == "bfloat16" else setup


def fits_setup(method: str, gradient_checkpointing: bool = True, weights: str = DEFAULT_WEIGHTS,
               loss: str = "cross_entropy") -> Setup:
    """The :class:`Setup` of :func:`method_config` on a GPU (see :func:`gpu_setup`)."""
    return gpu_setup(method_config(method, gradient_checkpointing), weights, loss)


def assumptions(weights: str = DEFAULT_WEIGHTS, config: RunConfig | None = None, loss: str = "cross_entropy") -> str:
    """One line naming what a "will it fit" answer assumes: weight storage and master copy,
    compute precision, optimizer, LoRA, the loss, transients and headroom, and how to ask for
    the other weight storage. Printed wherever the answer is shown, so a learner comparing it
    with another tool sees which choice made the difference."""
    config = config or method_config("lora")
    _check_choice("assumptions", "weights", weights, WEIGHTS)
    _check_choice("assumptions", "loss", loss, LOSSES)
    storage = WEIGHTS[weights] if weights != "float32" or config.bf16 else (
        "an fp32 base, as ftlab's own runs load it, and fp32 compute: weights, their gradients and AdamW's moments in "
        "fp32 (4 + 4 + 8 = 16 bytes a trained parameter)")
    compute = "bf16" if config.bf16 or weights == "bfloat16" else "fp32"
    lora = config if config.is_lora else method_config("lora")
    other = next(w for w in WEIGHTS if w != weights)
    return (f"{storage}; LoRA r={lora.lora_r} on {', '.join(lora.lora_target_modules)} with fp32 adapters and fp32 "
            f"optimizer state, QLoRA the same on an NF4 base; activations for {compute} compute; {LOSSES[loss]}; "
            f"backward's transient buffers counted (the logits' gradient, a recomputed layer); {HEADROOM:.0%} of each "
            f"card kept free; weights={other!r} (ftlab fits --weights {other}) for the other accounting")


def transient_bytes(arch: Architecture, setup: Setup, batch: int, seq: int) -> int:
    """Memory that exists only for a moment in backward, on top of the saved activations.

    The bf16 logits and their fp32 gradient (tokens x vocab x (2 + 4) bytes: for a 128k
    vocabulary this alone is ~1.5 GiB per 2048 tokens; a chunked loss forms them for
    :data:`LOSS_CHUNK` vocabulary entries at a time), and with checkpointing one layer's
    activations while it is recomputed. An approximation (the allocator may reuse
    buffers), used only by :func:`fits_table`.
    """
    t = batch * seq
    extra = t * min(arch.vocab, LOSS_CHUNK if setup.loss == "chunked" else arch.vocab) * (setup.a + 4)
    if setup.gradient_checkpointing:
        one = replace(setup, gradient_checkpointing=False)
        parts = activation_parts(arch, one, batch, seq)
        last = f"L{arch.layers - 1}."  # any layer but 0, which may save less (frozen embedding)
        extra += sum(v for k, v in parts.items() if k.startswith(last))
    return extra


LOSS_CHUNK = 8192
"""Vocabulary entries whose logits a chunked loss forms at once (the default of
``ftlab.lessons.chunked_loss.chunked_cross_entropy``; Liger and Cut Cross-Entropy pick
similar blocks)."""

GPU_PREFETCH_BLOCKS = 2
"""Decoder layers FSDP holds gathered at once on a GPU: the one computing and the next one,
whose all-gather FSDP2 issues early so communication overlaps compute."""


def device_need(arch: Architecture, setup: Setup, batch: int, seq_len: int, devices: int = 1,
                strategy: str = "ddp") -> dict[str, int]:
    """The predicted bytes one GPU of ``devices`` needs for a step, on its busiest rank: the
    breakdown, ``gathered`` (whole parameters FSDP holds beside its shards, with the next layer
    prefetched) and ``transient``; ``total`` is their sum."""
    b = breakdown(arch, setup, batch, seq_len, devices=devices, strategy=strategy,
                  rank=busiest_rank(arch, setup, devices, strategy))
    parts = {"weights": b.weights, "gradients": b.gradients, "optimizer": b.optimizer, "activations": b.activations,
             "gathered": gathered_bytes(arch, setup, strategy, blocks=GPU_PREFETCH_BLOCKS),
             "transient": _transient(arch, setup, batch, seq_len)}
    return {**parts, "total": sum(parts.values())}


def gpu_need(config: RunConfig, *, weights: str = DEFAULT_WEIGHTS, seq_len: int | None = None, model_config: Any = None,
             batch_size: int | None = None, devices: int = 1, strategy: str = "ddp",
             loss: str = "cross_entropy") -> dict[str, int]:
    """What one GPU needs for a step of ``config``: :func:`device_need` of its :func:`gpu_setup`.

    The one accounting behind the MemoryPredictor widget, :func:`fits_table` and
    :func:`devices_needed` (:func:`assumptions` says what it assumes). ``model_config`` and
    the sizes work as in :func:`~ftlab.memory.estimate`; ``weights`` and ``loss`` as in :func:`gpu_setup`.
    """
    arch = Architecture.from_config(model_config) if model_config is not None else model_architecture(config.model)
    setup = gpu_setup(config, weights, loss)
    check_strategy("gpu_need", strategy, devices, setup)
    return device_need(arch, setup, batch_size or config.per_device_train_batch_size,
                       seq_len or config.max_seq_length, devices, strategy)


_transient = functools.lru_cache(maxsize=64)(transient_bytes)
""":func:`transient_bytes`, computed once per model and setup: it walks a whole forward."""


def fits(total: int, gpu_gib: float) -> bool:
    """Whether ``total`` bytes fit a card of ``gpu_gib`` GiB with :data:`HEADROOM` kept free."""
    return total <= (1 - HEADROOM) * gpu_gib * GiB


def fits_table(model_sizes: Iterable[str] = ("0.5B", "1.5B", "3B", "7B", "8B", "13B", "70B"),
               gpus_gib: Iterable[int] = (16, 24, 48, 80), batch: int = 1, seq_len: int = 2048,
               methods: Iterable[str] = ("full", "lora", "qlora"),
               gradient_checkpointing: bool = True, devices: int = 1, strategy: str = "ddp",
               weights: str = DEFAULT_WEIGHTS, loss: str = "cross_entropy") -> list[dict[str, Any]]:
    """Which (model size, method) fits on which GPU, predicted from published architectures.

    For each size in :data:`MODEL_SIZES` and each method, one row (a flat dict, ready for
    ``pandas.DataFrame``): ``model`` (the size label), ``source`` (the published model
    whose config it uses), ``parameters``, ``method``, the predicted bytes of ``weights``,
    ``gradients``, ``optimizer`` and saved ``activations`` for one step of ``batch`` x
    ``seq_len`` tokens, ``transient`` (see :func:`transient_bytes`), ``total`` (bytes, the
    sum of all five), ``total_gib`` and one ``fits_<N>GiB`` bool per GPU size: it fits when
    ``total`` <= 90% of the card (:data:`HEADROOM`: 10% is left for the CUDA context,
    cuBLAS workspaces and allocator fragmentation).

    The accounting is :func:`gpu_need` of :func:`method_config`, what the MemoryPredictor
    shows for the same settings: by default a bf16 base computing in bf16 with fp32 adapters and
    optimizer state (how TRL, axolotl and Unsloth fine-tune; ``weights="float32"`` for ftlab's own
    fp32 base under bf16 autocast), RunConfig's LoRA, plain cross-entropy (``loss="chunked"``
    for a chunked/fused loss). :func:`assumptions` prints it. No CPU offload.

    ``devices`` GPUs under ``strategy`` (see :data:`~ftlab.memory.predict.STRATEGIES`;
    default: one GPU): each row is then one GPU's need on the busiest rank, each GPU taking
    ``batch`` sequences, with ``gathered``, the whole layers FSDP holds beside its shards (see
    :func:`device_need`; 0 for ``ddp`` and ``zero1``), counted in ``total``. QLoRA's NF4 base
    is not sharded: under ``zero2``/``fsdp`` its rows are left out.
    """
    rows = []
    gpus = tuple(gpus_gib)
    for size in model_sizes:
        arch = MODEL_SIZES[size]
        for method in methods:
            if method == "qlora" and strategy in SHARDED:
                continue
            need = gpu_need(method_config(method, gradient_checkpointing), weights=weights, seq_len=seq_len,
                            model_config=arch, batch_size=batch, devices=devices, strategy=strategy, loss=loss)
            row: dict[str, Any] = {"model": size, "source": arch.source, "parameters": arch.parameter_count(),
                                   "method": method, "weights": weights, "loss": loss, "batch": batch,
                                   "seq_len": seq_len,
                                   "gradient_checkpointing": gradient_checkpointing, "devices": devices,
                                   "strategy": strategy, **need, "total_gib": round(need["total"] / GiB, 2)}
            for gpu in gpus:
                row[f"fits_{gpu}GiB"] = fits(need["total"], gpu)
            rows.append(row)
    return rows


ZERO_STAGES: dict[str, int] = {"ddp": 0, "zero1": 1, "zero2": 2, "fsdp": 3}
"""Each strategy of :data:`~ftlab.memory.predict.STRATEGIES` as the ZeRO paper's stage (0: plain data parallelism)."""


def zero_paper_bytes(parameters: int, devices: int, stage: int) -> float:
    """Model-state bytes per GPU by the ZeRO paper's mixed-precision rule (Rajbhandari et al., 2020).

    Ψ parameters trained with Adam in mixed precision hold 2Ψ bytes of fp16/bf16 weights, 2Ψ of
    16-bit gradients and 12Ψ of optimizer state (fp32 master weights, momentum, variance).
    Stage 1 divides the 12Ψ by the N devices, stage 2 also the gradients, stage 3 everything:
    (2 + 2 + 12)Ψ/N. No activations, no transient buffers, no gathered layers: a floor, which
    is why it needs fewer GPUs than :func:`devices_needed`, which counts them.
    """
    if stage not in (0, 1, 2, 3):
        raise ArgumentError("zero_paper_bytes", "stage", stage, "0 (DDP), 1, 2 or 3")
    if not (isinstance(devices, int) and devices >= 1):
        raise ArgumentError("zero_paper_bytes", "devices", devices, "an int >= 1")
    weights, gradients, optimizer = 2 * parameters, 2 * parameters, 12 * parameters
    return (weights / (devices if stage >= 3 else 1) + gradients / (devices if stage >= 2 else 1)
            + optimizer / (devices if stage >= 1 else 1))


def devices_needed(model_sizes: Iterable[str] = ("7B", "70B"), gpus_gib: Iterable[int] = (24, 40, 80),
                   strategies: Iterable[str] = tuple(STRATEGIES), batch: int = 1, seq_len: int = 2048,
                   gradient_checkpointing: bool = True, max_devices: int = 1024,
                   weights: str = DEFAULT_WEIGHTS) -> list[dict[str, Any]]:
    """How many GPUs of each size a full fine-tune needs under each strategy, and whether LoRA
    or QLoRA would fit one of them instead.

    One row per model size and GPU size: ``full_<strategy>`` is the smallest power of two of
    GPUs (up to ``max_devices``; None if even that many do not fit) on which one GPU's
    predicted need (:func:`gpu_need`, ``batch`` sequences per GPU, ``weights`` as in
    :func:`fits_table`) fits, ``lora_on_one`` /
    ``qlora_on_one`` whether LoRA / QLoRA fit one GPU, ``answer`` the fewest GPUs that
    train the model, in words, and beside each ``full_<strategy>`` the ``paper_<strategy>``
    count that the ZeRO paper's (2 + 2 + 12)Ψ rule (:func:`zero_paper_bytes`, model states
    only) gives for the same stage. Sharding divides weights, gradients and optimizer state, never
    the activations, the transient buffers or (FSDP) the gathered layers: that floor is why a
    size may never fit a small card, however many there are. Memory decides this table, not
    quality: LoRA and QLoRA train far fewer weights than a full fine-tune.
    """
    strategies, gpus = tuple(strategies), tuple(gpus_gib)
    counts = [2 ** k for k in range(max_devices.bit_length())]
    rows = []
    for size in model_sizes:
        arch = MODEL_SIZES[size]
        full, lora, qlora = (fits_setup(m, gradient_checkpointing, weights) for m in METHODS)
        for strategy in strategies:
            check_strategy("devices_needed", strategy, 1, full)
        need = {(s, n): device_need(arch, full, batch, seq_len, n, s)["total"] for s in strategies for n in counts}
        one = {m: device_need(arch, setup, batch, seq_len)["total"] for m, setup in (("lora", lora), ("qlora", qlora))}
        for gpu in gpus:
            row: dict[str, Any] = {"model": size, "source": arch.source, "gpu_gib": gpu}
            for s in strategies:
                row[f"full_{s}"] = next((n for n in counts if fits(need[s, n], gpu)), None)
                row[f"paper_{s}"] = next((n for n in counts if zero_paper_bytes(arch.parameter_count(), n,
                                                                               ZERO_STAGES[s]) <= (1 - HEADROOM) * gpu * GiB),
                                         None)
            row["lora_on_one"], row["qlora_on_one"] = fits(one["lora"], gpu), fits(one["qlora"], gpu)
            row["answer"] = _answer(row, strategies)
            rows.append(row)
    return rows


def _answer(row: dict[str, Any], strategies: tuple[str, ...]) -> str:
    """The fewest GPUs that train the model, in words, from one :func:`devices_needed` row."""
    options = [(row[f"full_{s}"], s) for s in strategies if row[f"full_{s}"] is not None]
    if options and min(options)[0] == 1:
        return "a full fine-tune fits one GPU"
    full = "a full fine-tune needs {} GPUs with {}".format(*min(options)) if options else "no full fine-tune fits"
    for method, name in (("lora", "LoRA"), ("qlora", "QLoRA")):
        if row[f"{method}_on_one"]:
            return f"{name} on one GPU ({full})"
    return full
