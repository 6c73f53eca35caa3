"""Where a model or data set comes from: a local folder, or a hub id, checked before loading.

A local model folder is checked for what ``from_pretrained`` would later fail on with an
unrelated error, or what would run code (:func:`check_model_folder`: config.json with a
``model_type``, safetensors weights, a tokenizer, no ``auto_map``). A hub id is checked
for offline mode and reachability (:func:`hub_source`), so on a machine without network it
answers within seconds, from the Hugging Face cache or with the reason and the fix,
instead of after transformers' or datasets' long retries.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from ftlab.errors import FtlabError, ModelError

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _read_json_file(path: Path, name: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelError(f"RunConfig.model={name!r}: {path} is not valid JSON (line {err.lineno}, column {err.colno}: "
                         f"{err.msg}); restore it, or save the model again with save_pretrained") from None
    except UnicodeDecodeError:
        raise ModelError(f"RunConfig.model={name!r}: {path} is not UTF-8 text; restore it, or save the model again "
                         f"with save_pretrained") from None
    if not isinstance(data, dict):
        raise ModelError(f"RunConfig.model={name!r}: {path} holds a {type(data).__name__}, not a JSON object; "
                         f"save the model again with save_pretrained")
    return data


def check_model_folder(path: Path, name: str) -> None:
    """Refuse, with the reason, a local model folder that ``from_pretrained`` would fail on
    later with an unrelated error, or that would run code: ftlab reads safetensors only
    (unpickling a ``pytorch_model.bin`` can run arbitrary code) and never runs a model's
    own code (``auto_map`` in its config means ``trust_remote_code``)."""
    config = _read_json_file(path / "config.json", name)
    for file in ("config.json", "tokenizer_config.json"):
        data = config if file == "config.json" else (_read_json_file(path / file, name) if (path / file).is_file() else {})
        if "auto_map" in data:
            raise ModelError(f"RunConfig.model={name!r}: {path / file} asks for remote code (auto_map: "
                             f"{sorted(data['auto_map'])}); ftlab never runs code shipped with a model "
                             f"(trust_remote_code=False): use a model whose architecture transformers ships "
                             f"(Llama, Qwen2, SmolLM2...)")
    if "model_type" not in config:
        raise ModelError(f"RunConfig.model={name!r}: {path / 'config.json'} has no 'model_type', so transformers cannot "
                         f"tell the architecture; save the model with save_pretrained, which writes it")
    files = [f.name for f in path.iterdir() if f.is_file()]
    if not any(f.endswith(".safetensors") or f.endswith(".safetensors.index.json") for f in files):
        pickles = sorted(f for f in files if f.endswith(_PICKLE_SUFFIXES))
        if pickles:
            raise ModelError(f"RunConfig.model={name!r}: {path} holds only pickle weights ({', '.join(pickles)}); ftlab "
                             f"loads safetensors only, because unpickling can run arbitrary code. Convert once, where you "
                             f"trust the file: AutoModelForCausalLM.from_pretrained(folder).save_pretrained(folder, "
                             f"safe_serialization=True)")
        raise ModelError(f"RunConfig.model={name!r}: {path} has no weights (*.safetensors); save the model there with "
                         f"save_pretrained(folder)")
    if not any(f in files for f in _TOKENIZER_FILES):
        raise ModelError(f"RunConfig.model={name!r}: {path} has no tokenizer files ({', '.join(_TOKENIZER_FILES[:2])}); "
                         f"save the tokenizer beside the model: tokenizer.save_pretrained(folder)")


HUB_PROBE_SECONDS = 2.5
"""How long :func:`hub_reachable` waits for huggingface.co: without network a hub id then
fails in about this long instead of the ~47 s of transformers' retries."""
_probe_cache: tuple[float, bool] | None = None


OFFLINE_VARIABLES = {"model": ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"), "dataset": ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
"""The environment variables that keep the Hugging Face libraries off the network, by kind of repo."""


def hub_offline(repo_type: str = "model") -> str | None:
    """The variable (HF_HUB_OFFLINE, or TRANSFORMERS_OFFLINE / HF_DATASETS_OFFLINE for models /
    data sets) that is set to a true value, or None."""
    for name in OFFLINE_VARIABLES[repo_type]:
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return name
    return None


def _hub_address() -> tuple[str, int]:
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether a TCP connection to the hub (HF_ENDPOINT, default huggingface.co:443) opens
    within ``timeout`` seconds, name lookup included (a thread bounds it: a stuck resolver
    does not block). The answer is kept for a minute."""
    global _probe_cache
    if _probe_cache is not None and time.monotonic() - _probe_cache[0] < 60:
        return _probe_cache[1]
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(_hub_address(), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    _probe_cache = (time.monotonic(), bool(result and result[0]))
    return _probe_cache[1]


def hub_snapshot(repo_id: str, repo_type: str = "model") -> Path | None:
    """The folder of ``repo_id`` in the local Hugging Face cache, or None (nothing is downloaded)."""
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(repo_id, repo_type=repo_type, local_files_only=True))
    except Exception:  # not cached, or not a valid repo id: either way not available here
        return None


def hub_source(repo_id: str, repo_type: str, error: Callable[[str], FtlabError]) -> str:
    """What to hand ``from_pretrained`` / ``load_dataset`` for a hub id, decided in seconds.

    With the hub reachable: the id (the library downloads it, or reads its cache). Offline
    (HF_HUB_OFFLINE=1, or no answer from the hub within :data:`HUB_PROBE_SECONDS`): its
    cached snapshot folder, so nothing waits on the network; not cached: ``error(why)``
    is raised at once.
    """
    offline = hub_offline(repo_type)
    if not offline and hub_reachable():
        return repo_id
    local = hub_snapshot(repo_id, repo_type)
    if local is not None:
        return str(local)
    host, port = _hub_address()
    why = (f"{offline}={os.environ[offline]} is set and it is not in the Hugging Face cache" if offline else
           f"the hub ({host}:{port}) does not answer from this machine within {HUB_PROBE_SECONDS:g} s and it is not "
           f"in the Hugging Face cache")
    raise error(why)
