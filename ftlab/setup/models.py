"""Loading a model for a run: its tokenizer, the device check, quantization and LoRA.

What a model name means (a preset, a local folder or a hub id), preparing the presets that
run offline and the identity of the weights live in :mod:`ftlab.setup.presets`; this module
opens what that resolves to with ``from_pretrained`` (safetensors only, never remote code)
and prepares it for training. ``resolve_model`` is imported here for that, and so stays
reachable as ``ftlab.setup.models.resolve_model`` too (``make.py`` builds the models with it).
"""
from __future__ import annotations

import functools
import warnings

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.pytorch_utils import Conv1D

from ftlab.config.precision import Capabilities, probe
from ftlab.config.optimizers import BITSANDBYTES_OPTIMIZERS, GPU_ONLY_OPTIMIZERS
from ftlab.config.run_config import RunConfig
from ftlab.errors import DeviceError, FtlabError, ModelError, ModelNotFoundError
from ftlab.setup.presets import PRESETS, SMOLLM2_HUB_ID, preset_hint, resolve_model

__all__ = ["load_tokenizer", "check_device", "load_model", "keep_4bit_layout_trainable", "enable_checkpointing",
           "LORA_MODULE_TYPES", "linear_module_names", "check_lora_targets", "count_parameters", "resolve_model"]

def load_tokenizer(config: RunConfig) -> PreTrainedTokenizerBase:
    """The run's tokenizer, right-padded for training; a pad token is always set."""
    source = resolve_model(config.model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        if isinstance(err, ValueError) and "trust_remote_code" not in str(err):
            raise  # another ValueError is a bug to see as it is
        raise _load_error(config.model, err) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def check_device(config: RunConfig, caps: Capabilities | None = None) -> None:
    """Refuse options this machine cannot run, before anything is loaded, naming the
    alternative; warn when bf16 would be emulated on a CPU (17-43x slower, see
    :mod:`ftlab.config.precision`). ``caps``: the machine (default: :func:`probe`)."""
    caps = caps or probe()
    if caps.device == "cuda":
        return
    if config.optim in GPU_ONLY_OPTIMIZERS:
        alternative = "'adafactor' (factored state) or 'adamw_torch'" if caps.device == "mps" else \
            "'adamw_8bit' (8-bit states) or 'adamw_torch'"
        raise DeviceError(f"RunConfig.optim={config.optim!r} pages optimizer state through GPU memory and needs CUDA; "
                          f"on {caps.device.upper()} use {alternative}")
    if caps.device == "mps":
        if config.load_in_4bit or config.load_in_8bit:
            field = "load_in_4bit" if config.load_in_4bit else "load_in_8bit"
            raise DeviceError(f"RunConfig.{field}=True quantizes with bitsandbytes, which does not run on Apple MPS; "
                              f"train LoRA on the unquantized model here ({field}=False, lora_r > 0), or QLoRA on a "
                              f"CUDA GPU (Colab, Kaggle)")
        if config.optim in BITSANDBYTES_OPTIMIZERS:
            raise DeviceError(f"RunConfig.optim={config.optim!r} comes from bitsandbytes, which does not run on Apple "
                              f"MPS; use 'adamw_torch' (fp32 state) or 'adafactor' (factored, smaller state)")
        return
    native = {True: "native bf16", False: "no native bf16", None: "native bf16 unknown"}[caps.cpu_bf16]
    if config.fp16:
        raise DeviceError(f"RunConfig.fp16=True needs a CUDA GPU and none is present; use bf16=True (bf16 autocast, "
                          f"fast on a CPU with native bf16; this one: {native}) or fp16=False")
    if config.bf16 and not caps.cpu_bf16:
        _warn_emulated_bf16(native)


@functools.lru_cache(maxsize=None)
def _warn_emulated_bf16(native: str) -> None:
    """Once per process: ``train`` and ``load_model`` both check the device."""
    warnings.warn(f"RunConfig.bf16=True on a CPU with {native}: bf16 is emulated there and a step runs many times "
                  f"slower than fp32 (17-43x measured); bf16=False unless you are measuring exactly that",
                  UserWarning, stacklevel=4)


def load_model(config: RunConfig, tokenizer: PreTrainedTokenizerBase | None = None
               ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model, ready to train as configured, and its tokenizer: the one place a run's model
    is set up (device check, quantization, LoRA, checkpointing), so a notebook measuring a
    step by hand and ``train`` get exactly the same model.

    ``tokenizer`` is reused when the caller already loaded it (``train`` does, to read the
    data before spending time on the weights).

    ``use_kernels=False``: transformers 5.25 turns on the Hub's kernels by default, swapping
    layers for code fetched from ``kernels-community`` at load time, which an offline machine
    cannot fetch and which ftlab does not run, as it runs no ``trust_remote_code``; where the
    ``kernels`` package is missing, the default even makes loading fail (seen on a GPU machine).
    The model computes with PyTorch's own operators on every device (on a CPU the numbers are
    the same as with the default, which found no kernel to swap in).
    """
    check_device(config)
    if tokenizer is None:
        tokenizer = load_tokenizer(config)
    source = resolve_model(config.model)
    cuda = torch.cuda.is_available()
    quant = None
    if config.load_in_4bit or config.load_in_8bit:
        compute = torch.bfloat16 if config.bf16 else torch.float32
        quant = BitsAndBytesConfig(load_in_4bit=config.load_in_4bit, load_in_8bit=config.load_in_8bit,
                                   bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
                                   bnb_4bit_use_double_quant=config.bnb_4bit_use_double_quant)
    torch.manual_seed(config.seed)  # LoRA's A matrices are random: seed them per run
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch.float32, use_safetensors=True, quantization_config=quant,
            attention_dropout=config.dropout, device_map={"": 0} if (quant and cuda) else None,
            use_kernels=False)  # see the docstring: no kernels fetched from the Hub
    except (OSError, ValueError) as err:
        if isinstance(err, ValueError) and "trust_remote_code" not in str(err):
            raise  # another ValueError is a bug to see as it is
        raise _load_error(config.model, err) from err
    model.config.use_cache = False  # the KV cache is for generation; in training it only costs memory
    if quant is not None:
        keep_4bit_layout_trainable(model)
    if config.is_lora:
        model = _add_lora(model, config, quantized=quant is not None)
    if config.gradient_checkpointing:
        enable_checkpointing(model)
    return model, tokenizer


def keep_4bit_layout_trainable(model: torch.nn.Module) -> int:
    """Stop bitsandbytes repacking 4-bit weights into its CPU inference layout; returns how many layers.

    On a CPU with AVX512-BF16, bitsandbytes (0.50) repacks a ``Linear4bit`` weight for a fast
    inference kernel the first time the layer runs in eval mode without gradients (ftlab's
    first evaluation), and never packs it back. Training then runs through that kernel, which
    has no backward: PyTorch warns, and the gradient through the frozen base to everything
    below it is lost, so QLoRA barely learns. A model ftlab loads is trained, so its 4-bit
    layers keep the layout autograd knows, in eval too.
    """
    layers = [m for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu")]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def enable_checkpointing(model: PreTrainedModel) -> None:
    """Recompute activations in the backward pass instead of keeping them, non-reentrant.

    transformers v5 renames gradient checkpointing to activation checkpointing (same
    behaviour); this uses whichever name the installed version has. Non-reentrant
    checkpointing needs no ``requires_grad`` trick on the inputs for LoRA.
    """
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


LORA_MODULE_TYPES = (torch.nn.Linear, Conv1D, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d)
"""Module types peft can put a LoRA adapter on (bitsandbytes' 4/8-bit linears subclass Linear)."""


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """The distinct last names of a model's linear layers ('q_proj', 'down_proj', 'lm_head'...):
    what ``lora_target_modules`` may name."""
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if n and isinstance(m, (torch.nn.Linear, Conv1D))})


def check_lora_targets(model: torch.nn.Module, config: RunConfig) -> None:
    """Every name in ``lora_target_modules`` must match a module of the model the way peft
    matches it (the full name, or its last dotted parts): peft only fails when *none*
    matches, so a typo beside a valid name would silently train fewer adapters."""
    targets = list(config.lora_target_modules)
    if targets == ["all-linear"]:
        return
    names = [n for n, m in model.named_modules() if n and isinstance(m, LORA_MODULE_TYPES)]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ModelError(f"RunConfig.lora_target_modules names {', '.join(map(repr, missing))}, which model "
                         f"{config.model!r} does not have; its linear modules are: {', '.join(linear_module_names(model))} "
                         f"(or give ['all-linear'])")


def _add_lora(model: PreTrainedModel, config: RunConfig, quantized: bool) -> PreTrainedModel:
    check_lora_targets(model, config)
    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    targets = list(config.lora_target_modules)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      use_rslora=config.use_rslora, target_modules="all-linear" if targets == ["all-linear"] else targets,
                      task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def _load_error(name: str, err: Exception) -> FtlabError:
    """The ftlab error for a ``from_pretrained`` failure (an OSError, or the ValueError that
    refuses remote code): remote code refused, or not found."""
    if "trust_remote_code" in str(err):
        return ModelError(f"RunConfig.model={name!r} needs code shipped with the model (trust_remote_code); ftlab never "
                          f"runs it: use a model whose architecture transformers ships (Llama, Qwen2, SmolLM2...)")
    return ModelNotFoundError(
        f"RunConfig.model={name!r} could not be loaded ({type(err).__name__}: {str(err).splitlines()[0][:200]}).{preset_hint(name)} "
        f"Offline, use a preset ({', '.join(PRESETS)}) or a local folder; a hub id such as "
        f"{SMOLLM2_HUB_ID!r} needs network access or a filled Hugging Face cache.")


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(all, trainable) parameter counts; 4-bit weights count as their logical size."""
    total = trainable = 0
    for p in model.parameters():
        n = p.numel() * 2 if p.dtype == torch.uint8 and hasattr(p, "quant_state") else p.numel()
        total += n
        trainable += n if p.requires_grad else 0
    return total, trainable
