"""ftlab's "will it fit?" beside the rules other tools print, so a learner sees why they disagree.

Four answers to one question (one GPU, batch 1 x 2048, AdamW):

* **ftlab** (:func:`~ftlab.memory.fits.gpu_need`): weights, gradients, optimizer state,
  activations op by op, backward's transient buffers; a bf16 base by default.
* **accelerate** ``estimate-memory``: its training rule (``estimate_training_usage``) on the
  model's size as ``calculate_maximum_sizes`` measures it on an empty (meta) model built from
  the config, as the command does; the column is what its table prints, "Training using
  Adam" (the largest of its parts: 4x the fp32 weights). Both functions are accelerate's own,
  called here offline; the command itself needs the hub for the config.
* **DeepSpeed** ``estimate_zero2_model_states_mem_needs`` / ``estimate_zero3_...`` without
  offload, on one GPU: model states only (2 + 18 bytes a parameter; ZeRO-3 adds 4 bytes x the
  largest layer). Called from DeepSpeed when it is installed, else its published formulas
  (``tests/test_peers.py`` checks the two agree wherever DeepSpeed is installed; DeepSpeed
  0.19.8 agreed for 7B on 1 and 8 GPUs). DeepSpeed is not a dependency of ftlab: installed,
  it is imported by transformers' Trainer and prints a warning on stdout.
* **The ZeRO paper's** mixed-precision rule, (2 + 2 + 12)Ψ/N (:func:`~ftlab.memory.fits.zero_paper_bytes`).

accelerate and DeepSpeed size a full fine-tune only; for LoRA and QLoRA rows they have no
answer. Each row says what each rule leaves out, in bytes where ftlab counts them.
"""
from __future__ import annotations

import contextlib
import io
import math
from typing import Any, Iterable

from ftlab.memory.architecture import Architecture
from ftlab.memory.breakdown import GiB
from ftlab.memory.fits import METHODS, MODEL_SIZES, gpu_need, method_config, zero_paper_bytes

MEASURED_NOTE = ("no GPU was lent for these sizes: the measured CUDA peak is empty (benchmarks/gpu_check.sh measures "
                 "the predictor against torch.cuda.max_memory_allocated where a GPU runs)")
"""Why the measured column is empty: nothing stands in for a measurement."""


def hf_config(arch: Architecture) -> Any:
    """The transformers config of ``arch`` (Qwen2 where it has q/k/v biases, else Llama), for the
    tools that build a model from a config."""
    from transformers import LlamaConfig, Qwen2Config
    fields = dict(hidden_size=arch.hidden, intermediate_size=arch.intermediate, num_hidden_layers=arch.layers,
                  num_attention_heads=arch.heads, num_key_value_heads=arch.kv_heads, vocab_size=arch.vocab,
                  tie_word_embeddings=arch.tie_embeddings, head_dim=arch.d)
    return Qwen2Config(**fields) if arch.qkv_bias else LlamaConfig(**fields)


def accelerate_training_bytes(arch: Architecture) -> dict[str, int]:
    """accelerate ``estimate-memory``'s numbers for ``arch``, from accelerate's own functions:
    ``total`` (the fp32 model as ``calculate_maximum_sizes`` counts it on an empty model) and its
    "Training using Adam" column for ``float32`` and ``bfloat16`` (the largest of the parts
    ``estimate_training_usage`` returns, as ``estimate_command`` prints it)."""
    from accelerate import init_empty_weights
    from accelerate.commands.estimate import estimate_training_usage
    from accelerate.utils import calculate_maximum_sizes
    from transformers import AutoModelForCausalLM
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(hf_config(arch))
    total, _ = calculate_maximum_sizes(model)
    return {"total": int(total), **{dtype: int(max(estimate_training_usage(total, dtype).values()))
                                    for dtype in ("float32", "bfloat16")}}


def largest_layer_parameters(arch: Architecture) -> int:
    """The most parameters one module holds itself, as DeepSpeed's ``model_to_params`` counts:
    the embedding or the head (vocab x hidden), else the largest projection."""
    linears = (i * o + (o if bias else 0) for i, o, bias in arch.linear_shapes().values())
    return max(arch.vocab * arch.hidden, *linears)


def _published_zero2(total_params: int, gpus: int) -> int:
    """DeepSpeed's formula without offload: 2 bytes of 16-bit weights replicated, and 18 (16-bit
    and fp32 gradients, fp32 master weights, Adam's two moments) divided over the GPUs."""
    return 2 * total_params + int(18 * total_params / gpus)


def _published_zero3(total_params: int, largest_layer: int, gpus: int) -> int:
    """DeepSpeed's formula without offload: 4 bytes x the largest layer, plus 18 bytes a parameter over the GPUs."""
    return 4 * largest_layer + int(18 * total_params / gpus)


def deepspeed_bytes(arch: Architecture, gpus: int = 1) -> dict[str, Any]:
    """DeepSpeed's GPU memory for a full fine-tune's model states under ZeRO-2 and ZeRO-3 (no
    offload): from ``deepspeed.runtime.zero`` when DeepSpeed imports here (``source`` says
    "deepspeed X.Y"), else from the same published formulas (``source`` says so)."""
    total, largest = arch.parameter_count(), largest_layer_parameters(arch)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            import deepspeed
            from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
            from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
    except ImportError:
        return {"zero2": _published_zero2(total, gpus), "zero3": _published_zero3(total, largest, gpus),
                "source": "DeepSpeed's published formulas (deepspeed is not installed here)"}
    zero2 = estimate_zero2_model_states_mem_needs(total, num_gpus_per_node=gpus, cpu_offload=False)[1]
    zero3 = estimate_zero3_model_states_mem_needs(total, largest, num_gpus_per_node=gpus, cpu_offload=False)[1]
    return {"zero2": zero2, "zero3": zero3, "source": f"deepspeed {deepspeed.__version__}"}


def peer_table(model_sizes: Iterable[str] = ("7B", "70B"), methods: Iterable[str] = METHODS, batch: int = 1,
               seq_len: int = 2048) -> list[dict[str, Any]]:
    """One row per model size and method: ftlab's predicted need of one GPU (the default bf16
    base, checkpointing on) beside accelerate's, DeepSpeed's and the ZeRO paper's rules, all in
    bytes (None where a tool has no answer), the measured CUDA peak (None: see
    :data:`MEASURED_NOTE`), and ``left_out``: what the other rules do not count, priced by ftlab."""
    rows = []
    for size in model_sizes:
        arch = MODEL_SIZES[size]
        accelerate, deepspeed = accelerate_training_bytes(arch), deepspeed_bytes(arch)
        n = arch.parameter_count()
        for method in methods:
            need = gpu_need(method_config(method), model_config=arch, batch_size=batch, seq_len=seq_len)
            full = method == "full"
            row: dict[str, Any] = {
                "model": size, "source": arch.source, "method": method, "parameters": n, "ftlab": need["total"],
                "accelerate_fp32": accelerate["float32"] if full else None,
                "accelerate_bf16": accelerate["bfloat16"] if full else None,
                "deepspeed_zero2": deepspeed["zero2"] if full else None,
                "deepspeed_zero3": deepspeed["zero3"] if full else None,
                "deepspeed_source": deepspeed["source"], "zero_paper": zero_paper_bytes(n, 1, 3) if full else None,
                "measured_cuda_peak": None, "activations": need["activations"], "transient": need["transient"]}
            row["left_out"] = _left_out(row, need)
            rows.append(row)
    return rows


def _left_out(row: dict[str, Any], need: dict[str, int]) -> str:
    """What the model-state rules leave out of this row, priced by ftlab's prediction."""
    gib = lambda b: f"{b / GiB:.1f} GiB"  # noqa: E731
    extra = f"activations {gib(need['activations'])} and backward's transients {gib(need['transient'])}"
    if row["method"] != "full":
        return (f"accelerate, DeepSpeed and the ZeRO paper size a full fine-tune only: none knows a frozen base, so "
                f"none has a {row['method']} answer; ftlab's total includes {extra}")
    per = {c: f"{bytes_per_parameter(row, c):.0f} B" for c in ("accelerate_fp32", "accelerate_bf16", "deepspeed_zero2",
                                                                "zero_paper")}
    states = (need["weights"] + need["gradients"] + need["optimizer"]) / row["parameters"]
    return (f"accelerate, DeepSpeed and the ZeRO paper count model states only, not {extra}; per parameter "
            f"accelerate prices {per['accelerate_fp32']} (4x fp32 weights; its bf16 column {per['accelerate_bf16']}), "
            f"DeepSpeed {per['deepspeed_zero2']} (with fp32 gradients), the paper {per['zero_paper']}, ftlab's bf16 "
            f"base {states:.0f} B (no fp32 master copy, fp32 moments); ftlab leaves out the CUDA context and "
            f"fragmentation (its 10% headroom)")


def bytes_per_parameter(row: dict[str, Any], column: str) -> float:
    """A column of a :func:`peer_table` row per parameter (nan where the tool has no answer)."""
    value = row[column]
    return math.nan if value is None else value / row["parameters"]
