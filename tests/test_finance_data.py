import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from ftlab.setup.data import SPLITS, data_dir, read_jsonl

FOLDER = data_dir() / "finance"
SCRIPT = Path(__file__).resolve().parent.parent / "data" / "make_finance_data.py"
TASKS = {"percent_change", "simple_interest", "compound_interest", "currency_conversion", "discount_price",
         "extract_amount", "extract_date"}


def test_files_parse_with_the_expected_shape():
    sizes = {"train": 3000, "validation": 300, "test": 300}
    prompts = {}
    for split in SPLITS:
        rows = read_jsonl(FOLDER / f"{split}.jsonl")
        assert len(rows) == sizes[split]
        assert all(set(r) == {"id", "task", "prompt", "response"} for r in rows)
        assert {r["task"] for r in rows} == TASKS
        prompts[split] = {r["prompt"] for r in rows}
        assert len(prompts[split]) == len(rows)
    assert not prompts["train"] & prompts["validation"]
    assert not prompts["train"] & prompts["test"]
    assert not prompts["validation"] & prompts["test"]


def test_generator_reproduces_the_committed_files(tmp_path):
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], check=True, capture_output=True)
    for split in SPLITS:
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (FOLDER / f"{split}.jsonl").read_bytes()


def test_answers_are_exact_for_a_few_hand_checked_rows():
    rows = [json.loads(line) for line in (FOLDER / "train.jsonl").read_text().splitlines()]
    by_prompt = {r["prompt"]: r["response"] for r in rows}
    # 441.00 -> 388.08 is (388.08 - 441) / 441 = -12%
    assert by_prompt["A stock went from 441.00 to 388.08. What is the percentage change?"] == "-12.00%"
    # 5000 * 1.03^4 = 5627.54405
    assert by_prompt["Final amount: principal 5000.00, 3% per year compounded yearly, 4 years?"] == "5627.54"


def test_tasks_are_balanced_and_examples_are_short():
    for split in SPLITS:
        rows = read_jsonl(FOLDER / f"{split}.jsonl")
        counts = Counter(r["task"] for r in rows)
        assert max(counts.values()) - min(counts.values()) <= 1, counts
        assert max(len(r["prompt"]) for r in rows) <= 200
        assert max(len(r["response"]) for r in rows) <= 20
        assert [r["id"] for r in rows] == [f"fin-{split}-{i:05d}" for i in range(1, len(rows) + 1)]


def test_the_generator_refuses_a_prompt_shared_by_two_splits():
    spec = importlib.util.spec_from_file_location("make_finance_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    splits = module.generate()
    module.check(splits)  # the real data passes
    splits["test"][0] = dict(splits["test"][0], prompt=splits["train"][5]["prompt"])
    with pytest.raises(ValueError, match="also appears in train"):
        module.check(splits)


# Wide bands around 2025-26 market rates (units of the second currency per one of the first):
# a rate drawn without regard to the pair (1 USD = 0.8 JPY, 1 AUD = 150 USD) falls outside.
PLAUSIBLE_RATES = {("USD", "EUR"): (0.75, 1.0), ("EUR", "USD"): (1.0, 1.3), ("GBP", "USD"): (1.15, 1.5),
                   ("USD", "JPY"): (120, 180), ("EUR", "GBP"): (0.75, 0.95), ("CHF", "EUR"): (0.9, 1.2),
                   ("USD", "CAD"): (1.2, 1.55), ("AUD", "USD"): (0.55, 0.8)}


def test_currency_rates_are_plausible_for_their_pair_and_answers_exact():
    import re
    from decimal import ROUND_HALF_UP, Decimal
    seen = Counter()
    for split in SPLITS:
        for row in read_jsonl(FOLDER / f"{split}.jsonl"):
            if row["task"] != "currency_conversion":
                continue
            src, dst = re.search(r"\b([A-Z]{3}) (?:to|into|in) ([A-Z]{3})\b", row["prompt"]).groups()
            rate = Decimal(re.search(rf"([\d.]+) {dst}(?: per {src}|\.|,)", row["prompt"]).group(1))
            value = Decimal(re.search(rf"([\d.]+) {src}\b(?! =)", row["prompt"]).group(1))
            low, high = PLAUSIBLE_RATES[src, dst]
            assert low <= rate <= high, row
            assert row["response"] == f"{(value * rate).quantize(Decimal('0.01'), rounding=ROUND_HALF_UP)} {dst}", row
            seen[src, dst] += 1
    assert set(seen) == set(PLAUSIBLE_RATES)
