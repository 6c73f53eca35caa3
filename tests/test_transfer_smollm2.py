"""benchmarks/transfer_smollm2.py (issue 39) on the ci profile: the tiny base stands in for SmolLM2 and trains a
few steps, so the script's whole path (tune_rates, report, the verdicts, the JSON, the figure, resuming from the
run cache) runs in seconds. Its numbers are no verdicts; the test checks what the results file holds."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPT = BENCHMARKS / "transfer_smollm2.py"


@pytest.fixture()
def transfer(monkeypatch):
    """The script as a module (benchmarks/ on the path for its provenance import), one process, no profile set,
    one torch thread (ci runs are Trainer set-up more than matrices: a second thread only waits on a busy host)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setenv("FTLAB_WORKERS", "1")
    monkeypatch.delenv("FTLAB_PROFILE", raising=False)
    spec = importlib.util.spec_from_file_location("transfer_smollm2", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "transfer_smollm2", module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    torch.set_num_threads(threads)


def _check_slot(slot: dict, model: str) -> None:
    assert slot["model"] == model and slot["precision"] == "fp32"
    assert {"train_size", "max_steps", "batch", "evaluations", "eval_size", "epochs"} <= set(slot["budget"])
    assert slot["budget"]["epochs"] > 0 and slot["selection_seed"] == 7 and slot["report_seeds"] == [101, 102]
    assert "scientific" in slot["hyperparameters"] and "learning_rate" in slot["hyperparameters"]
    baseline = slot["baseline"]
    assert baseline in slot["arms"] and len(slot["arms"]) == 2
    for arm, entry in slot["arms"].items():
        assert len(entry["grid"]) >= 3 and len(entry["scores"]) == len(entry["grid"])
        rate = entry["chosen_rate"] if entry["interior"] else None
        assert entry["interior"] or entry["set_by_hand"]  # ci: an edge best gets the grid's middle, labelled
        assert rate is None or rate in entry["grid"]
        assert isinstance(entry["flat"], bool) and "epochs" in entry["flatness"]
        assert math.isfinite(entry["report_means"]["test_loss"])
    for key in ("test_loss", "test_token_accuracy", "exact_match"):
        verdicts = slot["verdicts"][key]
        assert set(verdicts) == set(slot["arms"]) - {baseline}
        for v in verdicts.values():
            assert v["low"] <= v["difference"] <= v["high"] and 0 < v["confidence"] < 1
            assert v["verdict"] == ("an effect" if v["effect"] else "can't tell")
    assert any("Verdicts against" in line for line in slot["lines"])


def test_the_ci_profile_writes_every_verdict_on_both_bases_and_resumes_from_the_run_cache(transfer, tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    argv = ["--profile", "ci", "--study", "lora", "--base", "both", "--runs", str(runs), "--out", str(out)]
    transfer.main(argv)
    result = json.loads((out / "transfer_smollm2.json").read_text(encoding="utf-8"))
    assert result["profile"] == "ci" and result["issue"] == 39
    assert {"commit", "cpu", "recorded"} <= set(result["provenance"])
    assert {"cpu", "cores", "cpu_bf16", "workers"} <= set(result["host"])
    entry = result["studies"]["lora"]
    assert entry["chapters"] == "06b"
    for base in ("smollm2", "tiny"):  # in ci both are the tiny base, so the second is read from the run cache
        _check_slot(entry[base], "tiny-pretrained")
    assert entry["tiny"]["runs_from_cache"] > 0
    assert (out / "transfer_smollm2.png").stat().st_size > 0

    again = transfer.main(argv)  # a second run, as after an interrupt: every run is found, none trained
    first = json.loads((out / "transfer_smollm2.json").read_text(encoding="utf-8"))["studies"]["lora"]["smollm2"]
    slot = again["studies"]["lora"]["smollm2"]
    assert slot["runs_from_cache"] == 6 + 4  # 2 arms x 3 rates, 2 arms x 2 report seeds
    assert slot["verdicts"] == first["verdicts"]
    text = transfer.main(["--profile", "ci", "--out", str(out), "--table"])["table"]
    arm = next(iter(slot["verdicts"]["test_loss"]))
    assert text.count(f"| lora | {arm} minus ") == 2 and "held on SmolLM2?" in text and "loss: " in text


def test_the_plan_names_every_study_on_both_bases_without_training(transfer, tmp_path):
    plans = transfer.main(["--profile", "cpu", "--base", "both", "--plan", "--runs", str(tmp_path)])["plan"]
    assert set(plans) == {f"{s}/{b}" for s in ("schedule", "batch", "lora") for b in ("smollm2", "tiny")}
    smollm2 = plans["lora/smollm2"]
    assert smollm2["model"] == "smollm2-135m" and (smollm2["train_size"], smollm2["max_steps"]) == (64, 32)
    assert plans["lora/tiny"]["model"] == "tiny-pretrained" and plans["lora/tiny"]["max_steps"] == 128
    assert smollm2["selection_runs"] == 6 and smollm2["report_runs"] == 6
    assert 15 < smollm2["minutes_two_workers"] <= 30  # each study fits about 30 minutes on 2 cores
    assert not list(tmp_path.iterdir())


def test_the_arms_mirror_the_chapters(transfer):
    from ftlab.config.profiles import finished_knob_config

    lora = transfer.study_base(transfer.STUDY["lora"], "tiny", "cpu")
    assert lora == finished_knob_config("cpu", lora_r=32, lora_alpha=16, lora_dropout=0.0)  # chapter 06b's base
    (_, base), (_, rslora) = transfer.STUDY["lora"].arms(lora)
    assert rslora == base.replace(use_rslora=True)
    batch = transfer.study_base(transfer.STUDY["batch"], "tiny", "cpu")
    (_, big), (_, small) = transfer.STUDY["batch"].arms(batch)
    seen = lambda c: c.max_steps * c.per_device_train_batch_size * c.gradient_accumulation_steps  # noqa: E731
    assert seen(small) == seen(big) and (big.per_device_train_batch_size, small.per_device_train_batch_size) == (16, 4)
    assert small.max_steps == 4 * big.max_steps and big.gradient_accumulation_steps == 1  # chapter 05's arms
    schedule = transfer.study_base(transfer.STUDY["schedule"], "tiny", "cpu")
    (_, linear), (_, constant) = transfer.STUDY["schedule"].arms(schedule)
    assert (linear.lr_scheduler_type, constant.lr_scheduler_type, linear.warmup_steps) == ("linear", "constant", 0)
