"""Calibration of answer tokens: the reliability bins and the ECE, by hand and on a run."""
import pytest
import torch

from ftlab.training.calibration import expected_calibration_error, reliability


def test_reliability_bins_and_ece_by_hand():
    confidence = torch.tensor([0.95, 0.92, 0.55, 0.51, 0.15])
    correct = torch.tensor([True, False, True, True, False])
    rows = reliability(confidence, correct, bins=10)
    assert [(r["low"], r["tokens"]) for r in rows] == [(0.1, 1), (0.5, 2), (0.9, 2)]
    assert rows[1]["confidence"] == pytest.approx(0.53) and rows[1]["accuracy"] == 1.0
    expected = (1 * 0.15 + 2 * abs(1.0 - 0.53) + 2 * abs(0.5 - 0.935)) / 5
    assert expected_calibration_error(rows) == pytest.approx(expected)


def test_a_certain_and_always_right_model_is_perfectly_calibrated():
    rows = reliability(torch.ones(4), torch.ones(4, dtype=torch.bool))
    assert rows[-1]["tokens"] == 4 and expected_calibration_error(rows) == 0.0


def test_every_run_records_its_answer_tokens_calibration(tiny_config, tmp_path):
    from ftlab.training.train import train
    run = train(tiny_config.replace(max_steps=2, eval_steps=2, exact_match_size=0), runs_dir=tmp_path, progress=False)
    rows = run.metrics["reliability"]
    assert 0.0 <= run.metrics["answer_ece"] <= 1.0 and sum(r["tokens"] for r in rows) > 0
    assert run.metrics["answer_ece"] == pytest.approx(expected_calibration_error(rows))
