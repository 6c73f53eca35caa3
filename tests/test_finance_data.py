import json
import subprocess
import sys
from pathlib import Path

from ftlab.data import SPLITS, data_dir, read_jsonl

FOLDER = data_dir() / "finance"
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
    script = Path(__file__).resolve().parent.parent / "data" / "make_finance_data.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True, capture_output=True)
    for split in SPLITS:
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (FOLDER / f"{split}.jsonl").read_bytes()


def test_answers_are_exact_for_a_few_hand_checked_rows():
    rows = [json.loads(line) for line in (FOLDER / "train.jsonl").read_text().splitlines()]
    by_prompt = {r["prompt"]: r["response"] for r in rows}
    # 441.00 -> 388.08 is (388.08 - 441) / 441 = -12%
    assert by_prompt["A stock went from 441.00 to 388.08. What is the percentage change?"] == "-12.00%"
    # 5000 * 1.03^4 = 5627.54405
    assert by_prompt["Final amount: principal 5000.00, 3% per year compounded yearly, 4 years?"] == "5627.54"
