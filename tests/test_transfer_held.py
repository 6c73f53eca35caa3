"""ftlab.experiments.transfer: whether a tiny-base verdict held on SmolLM2, read from the transfer
benchmark's results file, and the takeaway's "Held on SmolLM2?" column built from it."""
from __future__ import annotations

import json
import re

import pytest

from ftlab.experiments.transfer import budgets, held_order, held_verdict, results_path, transfer_rows
from ftlab.ui.published import takeaway


def v(difference, effect):
    return {"difference": difference, "low": difference - 0.01, "high": difference + 0.01, "effect": effect,
            "verdict": "an effect" if effect else "can't tell"}


@pytest.mark.parametrize("tiny, smollm2, held", [
    (v(-0.1, True), v(-0.2, True), "yes"),
    (v(-0.1, True), v(+0.2, True), "no"),
    (v(-0.1, True), v(-0.01, False), "can't tell"),
    (v(-0.01, False), v(+0.1, True), "no"),
    (v(-0.01, False), v(+0.01, False), "yes: can't tell on both"),
])
def test_a_verdict_holds_by_its_direction_and_its_verdict_not_its_number(tiny, smollm2, held):
    assert held_verdict(tiny, smollm2) == held


def test_chosen_rates_hold_by_their_order():
    assert held_order(0.3, 0.1) == "yes" and held_order(3.0, 0.3) == "no" and held_order(1.0, 1.0) == "yes"
    assert held_order(1.0, 3.0) == "no"


def slot(unit, verdicts, rates, flat=True):
    return {"baseline": "b16", "unit": unit, "budget_text": f"budget in {unit}", "precision": "fp32",
            "verdicts": {"test_loss": {"b4": verdicts[0]}, "test_token_accuracy": {"b4": verdicts[1]}},
            "arms": {"b16": {"chosen_rate": rates[0], "flat": True}, "b4": {"chosen_rate": rates[1], "flat": flat}}}


@pytest.fixture()
def results(tmp_path):
    path = tmp_path / "transfer_smollm2.json"
    path.write_text(json.dumps({"studies": {"batch": {
        "tiny": slot("nats per byte", (v(-0.10, True), v(0.02, True)), (1e-3, 1e-3)),
        "smollm2": slot("nats per token", (v(+0.05, True), v(0.01, False)), (1e-3, 3e-4), flat=False)},
        "lora": {"tiny": slot("nats per byte", (v(0, False), v(0, False)), (1e-3, 1e-3)), "smollm2": None}}}))
    return path


def test_rows_and_takeaway_say_what_held_and_what_to_carry_instead(results):
    rows = transfer_rows("batch", results)
    assert [(r.carried, r.held) for r in rows] == [("b4 minus b16, test loss", "no"),
                                                  ("b4 minus b16, answer-token accuracy", "can't tell"),
                                                  ("best rate, b4 against b16", "no")]
    assert rows[0].tiny.startswith("-0.100 nats per byte") and rows[0].smollm2.startswith("+0.050 nats per token")
    assert "carry SmolLM2's reading (an effect, +0.050 nats per token)" in rows[0].instead
    text = takeaway(["a"], ["b"], held=rows, held_budget=budgets("batch", results))
    assert "| Verdict carried | Tiny base | SmolLM2-135M | Held on SmolLM2? |" in text
    assert "| b4 minus b16, test loss | -0.100 nats per byte [-0.110, -0.090], an effect |" in text
    assert "SmolLM2-135M LoRA: budget in nats per token, fp32, still moving: b4" in text
    assert text.count("\n- ") == 3  # each row that did not hold says what to carry instead
    assert "Held on SmolLM2" not in takeaway(["a"], ["b"])


def test_a_missing_file_or_study_names_the_command_that_writes_it(results, tmp_path):
    with pytest.raises(FileNotFoundError, match="benchmarks/transfer_smollm2.py --study batch"):
        transfer_rows("batch", tmp_path / "none.json")
    with pytest.raises(KeyError, match="--study lora --base both"):
        transfer_rows("lora", results)


def test_every_study_a_chapter_cites_is_in_the_committed_results_on_both_bases():
    cited = {m for path in (results_path().parents[2] / "notebooks").glob("*.ipynb")
             for m in re.findall(r'transfer_rows\(\\?"(\w+)', path.read_text(encoding="utf-8"))}
    assert cited >= {"schedule", "batch"}  # chapters 02, 05, 07b
    for study in cited:
        rows = transfer_rows(study)
        assert len(rows) >= 3 and all(r.held for r in rows)
