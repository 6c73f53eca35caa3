"""A length-skewed mix of the finance data: where packing pays (chapter 07b).

The shipped finance examples are all of a similar length (64-180 bytes with the byte-level
presets), so a batch padded to its longest example wastes little, and packing gains only
about 4% tokens per second over dynamic padding there. Real instruction sets are skewed:
many short answers and a few long worked ones, and then every batch is padded to its one
long example. This mix builds that case from the shipped data, deterministically, offline:

* **short**: the finance rows of the single-step tasks with the shortest examples
  (``discount_price``, ``percent_change``, ``currency_conversion``), copied unchanged;
* **long**: every ``extract_amount`` row turned into a three-step worked problem on the same
  invoice line: the total (the row's own answer), the total less an early-payment
  discount, and that split into equal monthly payments, each step written out with its
  arithmetic (``decimal``, ROUND_HALF_UP, like the finance data).

That is about three short examples per long one, shuffled with a fixed seed. Each split
is built only from the same finance split, so its validation and test questions are
finance's and the train split shares no question and no invoice with them (checked on
every build). Exact match scores the first line of an answer, which for a long example is
only its first step: judge this mix by loss, as the knob chapters do.

It is not shipped in data/: :func:`skewed_mix` writes it into the ftlab cache (a few
hundred KiB, about 0.1 s) and returns the folder to use as ``RunConfig.dataset``.
"""
from __future__ import annotations

import json
import random
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from ftlab.setup.data import SPLITS, data_dir, read_jsonl
from ftlab.errors import DataError
from ftlab.foundation.storage import cache_dir, write_bytes_atomic

VERSION = 1
"""Part of the folder name: bumped whenever the recipe changes, so a stale copy is never read."""
SEED = 7
SHORT_TASKS = ("discount_price", "percent_change", "currency_conversion")
LONG_SOURCE_TASK = "extract_amount"
LONG_TASK = "invoice_steps"
DISCOUNTS_PERCENT = (2, 3, 5, 10)
MONTHS = (2, 3, 4, 6, 12)
MAX_LONG_BYTES = 235
"""Prompt + response UTF-8 bytes of a long example at most: with ChatML's 21 template tokens
and no system prompt, a byte-level model's example is then at most 256 tokens, the knob
chapters' ``max_seq_length``, so no long answer is cut."""

_CENT = Decimal("0.01")


def _money(x: Decimal) -> str:
    return str(x.quantize(_CENT, rounding=ROUND_HALF_UP))


def long_example(row: dict[str, str], rng: random.Random) -> dict[str, str]:
    """An ``extract_amount`` row as a three-step worked problem on the same invoice line."""
    invoice = row["prompt"].split("\n", 1)[0]  # the invoice line, without its question
    total = Decimal(row["response"])
    discount, months = rng.choice(DISCOUNTS_PERCENT), rng.choice(MONTHS)
    factor = (Decimal(100) - discount) / 100
    discounted = (total * factor).quantize(_CENT, rounding=ROUND_HALF_UP)
    monthly = (discounted / months).quantize(_CENT, rounding=ROUND_HALF_UP)
    prompt = f"{invoice}\nSteps: total; less {discount}% for early payment; over {months} months."
    response = (f"Total: {_money(total)}\n{_money(total)} x {factor:.2f} = {_money(discounted)}\n"
                f"{_money(discounted)} / {months} = {_money(monthly)}")
    return {"id": f"{row['id']}-steps", "task": LONG_TASK, "prompt": prompt, "response": response}


def build_skewed_mix(source: Path | None = None) -> dict[str, list[dict[str, str]]]:
    """The mix's train / validation / test rows, from the finance files in ``source``
    (default: the shipped ``data/finance``); the same input always gives the same rows."""
    source = source or data_dir() / "finance"
    splits: dict[str, list[dict[str, str]]] = {}
    for split in SPLITS:
        rows = read_jsonl(source / f"{split}.jsonl", ("id", "task", "prompt", "response"))
        rng = random.Random(f"{SEED}-{split}")
        short = [{k: r[k] for k in ("id", "task", "prompt", "response")} for r in rows if r["task"] in SHORT_TASKS]
        long = [long_example(r, rng) for r in rows if r["task"] == LONG_SOURCE_TASK]
        mixed = short + long
        rng.shuffle(mixed)
        splits[split] = mixed
    _check(splits)
    return splits


def _check(splits: dict[str, list[dict[str, str]]]) -> None:
    """Both kinds in every split, every long example short enough, and no prompt or invoice
    of the train split in validation or test."""
    for split, rows in splits.items():
        tasks = {r["task"] for r in rows}
        if LONG_TASK not in tasks or not tasks & set(SHORT_TASKS):
            raise DataError(f"skewed mix: the {split} split lacks short or long examples (tasks: {sorted(tasks)}); "
                            f"the finance files it is built from must hold {LONG_SOURCE_TASK} and {SHORT_TASKS[0]} rows")
        for r in rows:
            size = len((r["prompt"] + r["response"]).encode("utf-8"))
            if r["task"] == LONG_TASK and size > MAX_LONG_BYTES:
                raise DataError(f"skewed mix: {r['id']} is {size} bytes, over {MAX_LONG_BYTES}; shorten the step "
                                f"wording in ftlab/skewed_mix.py")
    held_out = {r["prompt"] for split in ("validation", "test") for r in splits[split]}
    held_out_lines = {p.split("\n", 1)[0] for p in held_out}
    for r in splits["train"]:
        if r["prompt"] in held_out or r["prompt"].split("\n", 1)[0] in held_out_lines:
            raise DataError(f"skewed mix: train example {r['id']} repeats a validation/test question; regenerate "
                            f"the finance data with data/make_finance_data.py")


def skewed_mix(folder: str | Path | None = None) -> str:
    """Write the mix as ``train/validation/test.jsonl`` into ``folder`` (default: the ftlab
    cache) and return the folder's path, to pass as ``RunConfig.dataset``.

    A file is rewritten only when its bytes would change, so a run's data fingerprint stays
    the same from call to call and a cached run is found again.
    """
    target = Path(folder) if folder is not None else cache_dir() / "data" / f"finance-skewed-v{VERSION}"
    target.mkdir(parents=True, exist_ok=True)
    for split, rows in build_skewed_mix().items():
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        path = target / f"{split}.jsonl"
        if not path.is_file() or path.read_bytes() != text:
            write_bytes_atomic(path, text)
    return str(target)
