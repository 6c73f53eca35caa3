"""Instruction data for a run: reading, chat-templating, loss masking and packing.

The model should learn to write the *answer*, not to reproduce the question, so by default
(``RunConfig.completion_only_loss=True``) every prompt token (system turn, user turn, the
assistant header) gets label -100 and only the response tokens plus the closing
``<|im_end|>`` are scored; ``completion_only_loss=False`` scores every token of the training
rows. Validation and test rows are always scored on the answer tokens alone, so both
settings are measured on the same scale. Packing puts several examples
into one row to waste no compute on padding; each example restarts its ``position_ids``
at 0 and no attention mask is passed, which makes transformers build a block-diagonal
causal mask, so an example never attends to the one packed before it.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import datasets
import torch
from datasets import Dataset, DatasetDict
from transformers import PreTrainedTokenizerBase

from ftlab.config.run_config import RunConfig
from ftlab.errors import DataError
from ftlab.setup.models import load_tokenizer
from ftlab.setup.sources import hub_source
from ftlab.foundation.storage import data_dir

SPLITS = ("train", "validation", "test")
SHIPPED = ("finance",)
FILE_TYPES = (".jsonl", ".json", ".csv")
"""Local file types a data set may be; ``datasets`` reads .json and .csv, ftlab reads .jsonl."""
_OTHER_FILE_TYPES = (".txt", ".tsv", ".parquet", ".arrow", ".xlsx", ".xls", ".md", ".gz", ".zip")


def read_jsonl(path: str | Path, required: Sequence[str] = ("prompt", "response")) -> list[dict[str, Any]]:
    """Every line of a JSONL file as a dict, or a DataError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; give a .jsonl file with one JSON object per line")
    rows: list[dict[str, Any]] = []
    for lineno, line in utf8_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno}); "
                            f"each line must be one object like {{\"prompt\": \"...\", \"response\": \"...\"}}") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        for key in required:
            if key not in row:
                raise DataError(f"{path}:{lineno}: missing field '{key}' (fields present: {', '.join(row) or 'none'}); "
                                f"set RunConfig.prompt_field / response_field if your file names them differently")
            if not isinstance(row[key], str) or not row[key].strip():
                raise DataError(f"{path}:{lineno}: field '{key}' must be a non-empty string, got {row[key]!r}")
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no examples in the file")
    return rows


def utf8_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line, decoded as UTF-8 (a leading byte-order mark, as
    Windows editors write it, is dropped); DataError naming the file, line and column of
    the first byte that is not UTF-8."""
    lines = []
    for lineno, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                            f"save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}` "
                            f"if it was written as Latin-1 / Windows-1252") from None
        lines.append((lineno, text))
    return lines


def local_path(name: str) -> Path:
    """Where a ``RunConfig.dataset`` name points on disk: a shipped set's folder, else the
    name read as a path. It may not exist (then the name is a hub id)."""
    return data_dir() / name if name in SHIPPED else Path(name).expanduser()


def split_files(folder: Path) -> dict[str, Path]:
    """The ``<split>.jsonl`` files present in a data folder, by split name."""
    return {s: folder / f"{s}.jsonl" for s in SPLITS if (folder / f"{s}.jsonl").is_file()}


def data_fingerprint(config: RunConfig) -> str | None:
    """A hash of the bytes of the local files ``config.dataset`` reads, or None for a hub
    data set (its name is all we know without downloading it).

    A run is cached under its config's hash, and a config names a data file, not its
    contents: without this, a learner who edits ``my_data.jsonl`` and runs the cell again
    would be shown the old run.
    """
    path = local_path(config.dataset)
    if path.is_dir():
        files = list(split_files(path).values())
    elif path.is_file():
        files = [path]
    else:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


_RAW: dict[tuple, DatasetDict] = {}
"""Local data sets already read in this process, by name, fields, split seed and the files'
bytes (:func:`data_fingerprint`): reading and renaming the finance splits took 0.6 s of every
run. An edited file has a new fingerprint, so it is read again; hub data sets are not kept."""


def load_raw(config: RunConfig) -> DatasetDict:
    """train / validation / test splits with ``prompt`` and ``response`` columns."""
    sha = data_fingerprint(config)
    if sha is None:
        return _read_raw(config)
    key = (config.dataset, str(local_path(config.dataset)), config.prompt_field, config.response_field, config.seed, sha)
    if key not in _RAW:
        if len(_RAW) >= 8:
            _RAW.clear()
        _RAW[key] = _read_raw(config)
    return _RAW[key]


def _read_raw(config: RunConfig) -> DatasetDict:
    name, fields = config.dataset, (config.prompt_field, config.response_field)
    path = local_path(name)
    if name in SHIPPED and not path.is_dir():
        raise DataError(f"RunConfig.dataset={name!r}: the shipped data set is not at {path} (FTLAB_DATA="
                        f"{os.environ.get('FTLAB_DATA')!r}); unset FTLAB_DATA, or point it at the repository's data/ folder")
    if path.is_dir():
        found = split_files(path)
        if "train" not in found:
            raise DataError(f"RunConfig.dataset={name!r}: the folder has no train.jsonl")
        splits = DatasetDict({s: Dataset.from_list(read_jsonl(p, fields)) for s, p in found.items()})
    elif path.suffix == ".jsonl":
        splits = DatasetDict({"train": Dataset.from_list(read_jsonl(path, fields))})
    elif path.is_file() or name.startswith((".", "/", "~")) or path.suffix in FILE_TYPES + _OTHER_FILE_TYPES:
        splits = _read_file(name, path)
    else:
        source = hub_source(name, "dataset", lambda why: DataError(
            f"RunConfig.dataset={name!r} is not a local file or folder, so it is a hub data set, and {why}; offline, "
            f"use 'finance' or a local .jsonl/.json/.csv file or folder"))
        try:
            splits = datasets.load_dataset(source)
        except Exception as err:  # the hub raises many types; all mean "not available here"
            raise DataError(f"RunConfig.dataset={name!r} could not be loaded ({type(err).__name__}); offline, use "
                            f"'finance' or a local .jsonl/.json/.csv file or folder") from err
    for split in splits.values():
        for key in fields:
            if key not in split.column_names:
                raise DataError(f"RunConfig.dataset={name!r} has no column '{key}' (columns: "
                                f"{', '.join(split.column_names)}); set prompt_field / response_field")
    return _complete_splits(DatasetDict(splits), config.seed).map(lambda r: _rename(r, fields))


def _read_file(name: str, path: Path) -> DatasetDict:
    """A local .json or .csv file through ``datasets``, checked first: it exists, its type is
    one ftlab reads, it is UTF-8 (the error names the line), and ``datasets`` can parse it."""
    if not path.is_file():
        raise DataError(f"RunConfig.dataset={name!r}: file not found")
    if path.suffix not in FILE_TYPES:
        raise DataError(f"RunConfig.dataset={name!r}: a {path.suffix or 'suffix-less'} file is not a data set ftlab reads; "
                        f"give a .jsonl file (one {{\"prompt\": ..., \"response\": ...}} object per line), a .json or a .csv")
    lines = utf8_lines(path)
    if path.suffix == ".json":
        _check_json(path, lines)
    try:
        return datasets.load_dataset(path.suffix.lstrip("."), data_files=str(path))
    except Exception as err:  # pyarrow and pandas raise many types for a malformed file
        first = str(err).splitlines()[0][:200] if str(err) else ""
        raise DataError(f"RunConfig.dataset={name!r}: {path} cannot be read as {path.suffix} ({type(err).__name__}: "
                        f"{first}); check the file, or convert it to .jsonl with one object per line") from None


def _check_json(path: Path, lines: list[tuple[int, str]]) -> None:
    """A .json data file is one JSON document or JSON Lines (``datasets`` reads both): if it is
    neither, DataError naming the line and column where the document stops being JSON."""
    try:
        json.loads("\n".join(text for _, text in lines))
        return
    except json.JSONDecodeError as err:
        document = err
    try:
        for _, text in lines:
            if text.strip():
                json.loads(text)
    except json.JSONDecodeError:
        raise DataError(f"{path}:{document.lineno}: not valid JSON ({document.msg} at column {document.colno}); a .json "
                        f"data file is a list of {{\"prompt\": ..., \"response\": ...}} objects or one such object "
                        f"per line") from None


def _rename(row: dict[str, Any], fields: tuple[str, str]) -> dict[str, Any]:
    return {"prompt": str(row[fields[0]]), "response": str(row[fields[1]])}


def _complete_splits(splits: DatasetDict, seed: int) -> DatasetDict:
    """Carve missing validation/test splits (10% each) out of train, reproducibly."""
    if "train" not in splits:
        raise DataError(f"the data set has no 'train' split (splits: {', '.join(splits)})")
    train = splits["train"]
    for split in ("validation", "test"):
        if split not in splits:
            if len(train) < 20:
                raise DataError(f"only {len(train)} training examples; need >= 20 to carve a {split} split")
            parts = train.train_test_split(test_size=0.1, seed=seed)
            train, splits[split] = parts["train"], parts["test"]
    splits["train"] = train
    return splits


def chat_messages(prompt: str, system_prompt: str, response: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": prompt})
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return messages


def _ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


def encode_example(tokenizer: PreTrainedTokenizerBase, prompt: str, response: str, system_prompt: str,
                   max_seq_length: int, completion_only_loss: bool = True) -> dict[str, list[int]] | None:
    """Token ids of one chat example and its labels: the prompt masked out (label -100) when
    ``completion_only_loss``, else every token its own label (whole-sequence loss).

    Returns None when the prompt alone fills ``max_seq_length`` (no answer token would be left).
    """
    prompt_ids = _ids(tokenizer, chat_messages(prompt, system_prompt), generation_prompt=True)
    full_ids = _ids(tokenizer, chat_messages(prompt, system_prompt, response), generation_prompt=False)
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise DataError("the tokenizer's chat template does not render the prompt as a prefix of the full "
                        "conversation, so prompt tokens cannot be masked reliably; use a model whose template does")
    if len(prompt_ids) >= max_seq_length:
        return None
    full_ids = full_ids[:max_seq_length]
    masked = len(prompt_ids) if completion_only_loss else 0
    labels = [-100] * masked + full_ids[masked:]
    return {"input_ids": full_ids, "labels": labels}


PACKER = "best-fit-decreasing"
"""How :func:`pack_groups` fills rows. Packed rows depend on it, so a packed run's cache key
names it (:func:`ftlab.runs.cache.run_key`): change it when the packing changes."""


def pack_groups(lengths: Sequence[int], max_seq_length: int) -> list[list[int]]:
    """Which examples (their indices) share each packed row: best-fit decreasing.

    Longest example first, each goes into the open row with the least room left that still
    holds it, else it opens a new row; an example is never split across rows. This is TRL's
    ``pack_dataset(..., strategy="bfd")``: the same order (longest first, equal lengths in
    their original order), the same rule and rows in the same order (as they were opened, the
    examples of a row as they were placed), so the same rows up to which of two equally tight
    rows an example joins (TRL: the one that reached that room first; here: the one opened
    first). It replaced next-fit (fill the current row, open the next when an example does
    not fit), which left 27% of the finance training split's rows of 256 tokens as padding
    where this leaves 4% (``benchmarks/README.md``).

    Kept apart from :func:`pack_examples` so that a measurement (:mod:`ftlab.lessons.packing`)
    knows what each row holds without re-deriving it.
    """
    groups: list[list[int]] = []
    open_rows: list[tuple[int, int]] = []  # (room left, row number) of rows not yet full, sorted
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):  # longest first
        n = lengths[index]
        at = bisect.bisect_left(open_rows, (n, 0))  # the tightest row with room for n
        if at < len(open_rows):
            room, row = open_rows.pop(at)
        else:
            room, row = max_seq_length, len(groups)
            groups.append([])
        groups[row].append(index)
        if room > n:
            bisect.insort(open_rows, (room - n, row))
    return groups


def pack_examples(examples: Sequence[dict[str, list[int]]], max_seq_length: int, pad_token_id: int
                  ) -> list[dict[str, list[int]]]:
    """Fill rows of exactly ``max_seq_length`` tokens with whole examples (:func:`pack_groups`).

    ``position_ids`` restart at 0 for each example (and for the padding tail). With no
    attention mask and no KV cache (``load_model`` sets ``use_cache=False``), transformers
    reads the restarts as sequence boundaries and builds a block-diagonal causal mask: no
    token sees another example. An all-ones attention mask would switch that detection off
    (measured in :func:`ftlab.lessons.packing.contamination`).
    """
    rows: list[dict[str, list[int]]] = []
    for group in pack_groups([len(ex["input_ids"]) for ex in examples], max_seq_length):
        ids = [t for i in group for t in examples[i]["input_ids"]]
        labels = [t for i in group for t in examples[i]["labels"]]
        pos = [p for i in group for p in range(len(examples[i]["input_ids"]))]
        pad = max_seq_length - len(ids)
        rows.append({"input_ids": ids + [pad_token_id] * pad, "labels": labels + [-100] * pad,
                     "position_ids": pos + list(range(pad))})
    return rows


@dataclass
class Collator:
    """Pads a batch on the right; packed rows are already full and carry position_ids, and
    get no attention mask (an all-ones mask would hide the packed examples' boundaries)."""

    pad_token_id: int

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        if "position_ids" in features[0]:
            return {k: torch.tensor([f[k] for f in features]) for k in ("input_ids", "labels", "position_ids")}
        width = max(len(f["input_ids"]) for f in features)
        batch = {"input_ids": [], "labels": [], "attention_mask": []}
        for f in features:
            pad = width - len(f["input_ids"])
            batch["input_ids"].append(f["input_ids"] + [self.pad_token_id] * pad)
            batch["labels"].append(f["labels"] + [-100] * pad)
            batch["attention_mask"].append([1] * len(f["input_ids"]) + [0] * pad)
        return {k: torch.tensor(v) for k, v in batch.items()}


@dataclass
class Data:
    """Everything a run needs from its data set."""

    train: Dataset
    """Tokenized training rows (input_ids, labels[, position_ids])."""
    validation: Dataset
    """Tokenized validation rows for eval loss (the first ``eval_size``)."""
    test: list[dict[str, str]]
    """Raw held-out examples scored by exact match (the first ``exact_match_size``)."""
    raw: DatasetDict
    collator: Collator
    test_rows: Dataset | None = None
    """Tokenized test rows whose answer-token loss and accuracy report a run (the first
    ``test_size``; None when ``test_size`` is 0)."""
    info: dict[str, Any] = field(default_factory=dict)


_ENCODED: dict[tuple, dict[str, list[int]] | None] = {}
"""Examples already encoded in this process, by tokenizer, template, length and text.

A chapter trains 10-40 runs on the same split, and templating 3,000 examples through the
chat template took 1.8 s of an 18 s knob run (and most of a 6-step ``ci`` run), each time
with the same result. The key holds everything :func:`encode_example` reads, so a hit is
the same ids; the values are never mutated (rows are copied into Arrow by ``Dataset``)."""
_ENCODED_MAX = 200_000


def _tokenizer_key(tokenizer: PreTrainedTokenizerBase) -> tuple:
    return (type(tokenizer).__name__, tokenizer.name_or_path, len(tokenizer), str(tokenizer.chat_template))


def _tokenize(rows: Dataset, tokenizer: PreTrainedTokenizerBase, config: RunConfig, completion_only_loss: bool = True
              ) -> tuple[list[dict], int]:
    out, dropped = [], 0
    key = (_tokenizer_key(tokenizer), config.system_prompt, config.max_seq_length, completion_only_loss)
    if len(_ENCODED) > _ENCODED_MAX:
        _ENCODED.clear()
    for row in rows:
        text_key = (*key, row["prompt"], row["response"])
        if text_key not in _ENCODED:
            _ENCODED[text_key] = encode_example(tokenizer, row["prompt"], row["response"], config.system_prompt,
                                                config.max_seq_length, completion_only_loss)
        ex = _ENCODED[text_key]
        if ex is None:
            dropped += 1
        else:
            out.append(ex)
    return out, dropped


def load_data(config: RunConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> Data:
    """Load, template, mask and (optionally) pack the configured data set."""
    if tokenizer is None:
        tokenizer = load_tokenizer(config)
    raw = load_raw(config)
    train_rows = raw["train"].select(range(min(config.train_size, len(raw["train"])))) if config.train_size else raw["train"]
    train, dropped = _tokenize(train_rows, tokenizer, config, config.completion_only_loss)
    # validation and test rows: answer tokens only, whatever the training loss (one scale for both settings)
    validation, dropped_val = _tokenize(raw["validation"].select(range(min(config.eval_size, len(raw["validation"])))),
                                        tokenizer, config)
    if not train:
        need = min(len(_ids(tokenizer, chat_messages(r["prompt"], config.system_prompt), generation_prompt=True))
                   for r in train_rows) + 1
        raise DataError(f"no training example fits in max_seq_length={config.max_seq_length}: the shortest prompt "
                        f"(with the system prompt and chat template) is {need - 1} tokens of model {config.model!r}; "
                        f"raise RunConfig.max_seq_length to well above {need} (None picks the model's default), or "
                        f"shorten system_prompt")
    lengths = [len(ex["input_ids"]) for ex in train]
    rows = pack_examples(train, config.max_seq_length, tokenizer.pad_token_id) if config.packing else train
    test = [dict(r) for r in raw["test"].select(range(min(config.exact_match_size, len(raw["test"]))))]
    test_rows = None
    if config.test_size:
        scored, _ = _tokenize(raw["test"].select(range(min(config.test_size, len(raw["test"])))), tokenizer, config)
        test_rows = Dataset.from_list(scored)
    info = {"train_examples": len(train), "train_rows": len(rows), "dropped_too_long": dropped + dropped_val,
            "mean_tokens": sum(lengths) / len(lengths), "max_tokens": max(lengths),
            "supervised_tokens": sum(sum(1 for t in ex["labels"][1:] if t != -100) for ex in train)}
    # (a row's first label is never scored: no token comes before it to predict it from)
    return Data(train=Dataset.from_list(rows), validation=Dataset.from_list(validation), test=test, raw=raw,
                collator=Collator(tokenizer.pad_token_id), info=info, test_rows=test_rows)


def split_summary(raw: DatasetDict) -> dict[str, dict[str, int]]:
    """Examples per split and, when the data has a ``task`` column, per task."""
    out: dict[str, dict[str, int]] = {}
    for name, split in raw.items():
        counts: dict[str, int] = {"total": len(split)}
        if "task" in split.column_names:
            for task in split["task"]:
                counts[task] = counts.get(task, 0) + 1
        out[name] = counts
    return out
