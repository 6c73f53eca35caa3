"""The tuning protocol's bookkeeping: interior bests, grid extension, fresh seeds, test split."""
from __future__ import annotations

import math

import pytest

import ftlab.experiments.protocol as protocol
from ftlab import Run, RunConfig
from ftlab.experiments.protocol import (Hyperparameters, ProtocolError, RateChoice, epochs, flatness, interior_best,
                                        report, tune_rates, verdict_on)


def test_interior_best_refuses_either_end_and_short_grids():
    assert interior_best([3.0, 1.0, 2.0]) == 1
    assert interior_best([1.0, 2.0, 3.0]) is None
    assert interior_best([3.0, 2.0, 1.0]) is None
    assert interior_best([2.0, 1.0]) is None
    assert interior_best([3.0, 1.0, 1.0, 2.0]) == 1  # ties: the first lowest


def _fake_training(monkeypatch, best_rate: dict[str, float], trained: list):
    """train() replaced by a bowl in log(rate) whose bottom is each arm's ``best_rate``; the
    arm is read from the label (``"<arm>, learning_rate=..."``)."""
    def fake_train(config, label=None, **_):
        trained.append((label, config.learning_rate, config.seed))
        arm = label.split(",")[0]
        loss = 1.0 + (math.log10(config.learning_rate) - math.log10(best_rate[arm])) ** 2
        return Run(config=config, label=label, metrics={"final_eval_loss": loss, "test_loss": loss})
    monkeypatch.setattr(protocol, "train", fake_train)
    monkeypatch.setattr(protocol, "train_in_workers", lambda *a, **k: 0)


def test_tune_rates_extends_a_grid_whose_best_is_at_an_end(monkeypatch):
    trained: list = []
    _fake_training(monkeypatch, {"a": 3e-3, "b": 3e-2}, trained)
    base = RunConfig(model="tiny")
    found = tune_rates([("a", base), ("b", base)], [1e-3, 3e-3, 1e-2], workers=1, progress=False)
    assert found["a"].best == pytest.approx(3e-3) and found["a"].grid == (1e-3, 3e-3, 1e-2)
    assert found["b"].best == pytest.approx(3e-2)  # 1e-2 was the top: points beyond it until one is interior
    assert found["b"].grid == (1e-3, 3e-3, 1e-2, 3e-2, 0.1)
    assert found["b"].config().learning_rate == pytest.approx(3e-2)
    assert {seed for *_, seed in trained} == {protocol.SELECTION_SEED}


def test_a_best_still_at_the_edge_is_not_named(monkeypatch):
    _fake_training(monkeypatch, {"a": 0.5}, [])
    found = tune_rates([("a", RunConfig(model="tiny"))], [1e-4, 1e-3, 1e-2], max_extensions=1, workers=1,
                       progress=False)
    assert found["a"].best is None and not found["a"].interior
    with pytest.raises(ProtocolError, match="highest of the grid .* extend the grid"):
        found["a"].config()
    assert "best at the grid's edge" in found["a"].describe()


def test_extensions_keep_a_grid_of_round_numbers():
    assert protocol._round_number(10 ** -3.5) == 3e-4 and protocol._round_number(10 ** -4.02) == 1e-4
    assert protocol._widened((1e-3, 3e-3, 1e-2), (1.0, 2.0, 3.0), 1.0) == (3e-4, 1e-3, 3e-3, 1e-2)


def test_an_extension_never_passes_the_limit(monkeypatch):
    _fake_training(monkeypatch, {"a": 0.9}, [])
    found = tune_rates([("a", RunConfig(model="tiny"))], [1e-2, 1e-1, 3e-1], max_extensions=3, limit=1.0,
                       workers=1, progress=False)
    assert found["a"].grid == (1e-2, 1e-1, 3e-1) and found["a"].best is None


def test_a_diverged_run_is_never_the_best(monkeypatch):
    def fake_train(config, label=None, **_):
        metrics = {"final_eval_loss": {1e-3: 1.2, 3e-3: 1.1, 1e-2: 0.5}[config.learning_rate]}
        if config.learning_rate == 1e-2:
            metrics["diverged"] = "runaway"
        return Run(config=config, label=label, metrics=metrics)
    monkeypatch.setattr(protocol, "train", fake_train)
    monkeypatch.setattr(protocol, "train_in_workers", lambda *a, **k: 0)
    found = tune_rates([("a", RunConfig(model="tiny"))], [1e-3, 3e-3, 1e-2], max_extensions=0, workers=1,
                       progress=False)
    assert found["a"].best == 3e-3 and math.isinf(found["a"].scores[-1])


def test_rates_are_never_chosen_on_the_test_split():
    with pytest.raises(ProtocolError, match="reads the test split"):
        tune_rates([("a", RunConfig(model="tiny"))], [1e-3, 3e-3, 1e-2], key="test_loss")
    with pytest.raises(ProtocolError, match="at least 3 distinct"):
        tune_rates([("a", RunConfig(model="tiny"))], [1e-3, 3e-3])


def test_a_verdict_never_reads_the_split_or_the_seed_it_selected_on():
    with pytest.raises(ProtocolError, match="must read the test split"):
        verdict_on({"a": [1.0, 1.1], "b": [1.2, 1.3]}, "a", key="final_eval_loss")
    choice = RateChoice("a", RunConfig(model="tiny"), "learning_rate", (1e-3, 3e-3, 1e-2), (2.0, 1.0, 2.0), 3e-3)
    with pytest.raises(ProtocolError, match=r"seeds \[7\] chose the rates"):
        report({"a": choice}, "a", seeds=(7, 101))
    edge = RateChoice("b", RunConfig(model="tiny"), "learning_rate", (1e-3, 3e-3, 1e-2), (2.0, 1.5, 1.0), None)
    with pytest.raises(ProtocolError, match="arm 'b'.*extend the grid"):
        report({"a": choice, "b": edge}, "a", seeds=(101, 102))


def test_hyperparameters_take_one_role_each():
    roles = Hyperparameters(scientific={"lora_r": "the rank studied"},
                            nuisance={"learning_rate": "α/r scales the step, so each rank gets its own rate"},
                            fixed={"max_steps": "the budget where the curve has flattened"})
    text = roles.table(RunConfig(model="tiny", max_steps=96))
    assert "scientific" in text and "max_steps = 96" in text
    with pytest.raises(ProtocolError, match="two roles"):
        Hyperparameters(scientific={"lora_r": ""}, nuisance={"lora_r": ""})


def test_flatness_compares_the_last_change_with_the_seed_noise():
    def run(seed, tail):
        return Run(config=RunConfig(model="tiny", seed=seed, max_steps=40, per_device_train_batch_size=8),
                   evals=[{"step": 20, "eval_loss": tail[0]}, {"step": 40, "eval_loss": tail[1]}],
                   metrics={"data_train_examples": 160, "steps": 40})
    still = flatness([run(1, (1.30, 1.20)), run(2, (1.31, 1.21))])
    assert not still.flat and still.last_change == pytest.approx(0.10)
    flat = flatness([run(1, (1.201, 1.20)), run(2, (1.301, 1.30))])
    assert flat.flat and flat.epochs == 2.0 and "2 epochs of 160 examples" in flat.describe()
    assert epochs(run(1, (1, 1))) == 2.0


def test_a_reported_run_scores_the_test_split(tmp_path):
    """One real tiny run with test_size: loss and token accuracy over the test answers."""
    from ftlab import train
    cfg = RunConfig(model="tiny", lora_r=0, max_steps=2, eval_steps=2, eval_size=4, exact_match_size=0,
                    per_device_train_batch_size=2, test_size=3, system_prompt="")
    run = train(cfg, runs_dir=tmp_path, progress=False)
    m = run.metrics
    assert m["test_tokens"] > 0 and 0.0 <= m["test_token_accuracy"] <= 1.0 and 0 < m["test_loss"] < 10
    assert 0.0 <= m["eval_token_accuracy"] <= 1.0


def test_score_answers_is_the_models_own_loss_over_the_answer_tokens():
    """ftlab's held-out loss for one example equals the loss transformers computes from its labels."""
    import torch

    from ftlab import load_data, load_model, load_tokenizer
    from ftlab.training.heldout import score_answers
    cfg = RunConfig(model="tiny", lora_r=0, eval_size=1, exact_match_size=0, test_size=2, system_prompt="")
    tokenizer = load_tokenizer(cfg)
    data = load_data(cfg, tokenizer)
    model, _ = load_model(cfg, tokenizer)
    row = data.test_rows[0]
    batch = data.collator([row])
    with torch.no_grad():
        expected = model.eval()(**batch).loss
    score = score_answers(model, [row], data.collator)
    assert score.loss == pytest.approx(float(expected), rel=1e-5)
    assert score.tokens == sum(1 for t in row["labels"][1:] if t != -100)


def test_the_rate_plot_rings_each_chosen_rate_and_marks_a_diverged_run():
    from ftlab import plot_rate_choices
    base = RunConfig(model="tiny")
    choices = {"a": RateChoice("a", base, "learning_rate", (1e-3, 3e-3, 1e-2), (2.0, 1.0, math.inf), 3e-3),
               "b": RateChoice("b", base, "learning_rate", (1e-3, 3e-3, 1e-2), (3.0, 2.0, 1.5), None)}
    ax = plot_rate_choices(choices).axes[0]
    rings = [line for line in ax.lines if line.get_markerfacecolor() == "none"]
    assert [tuple(r.get_xdata()) for r in rings] == [(3e-3,)]  # b's best is at an edge: nothing ringed
    assert any(line.get_marker() == "x" and tuple(line.get_xdata()) == (1e-2,) for line in ax.lines)


def test_the_finished_budget_trains_a_small_split_for_several_epochs():
    from ftlab import FINISHED_BUDGETS, finished_knob_config
    cfg = finished_knob_config("cpu")
    budget = FINISHED_BUDGETS["cpu"]
    assert (cfg.train_size, cfg.max_steps) == (budget.train_size, budget.max_steps)
    assert cfg.max_steps * cfg.per_device_train_batch_size / cfg.train_size >= 3  # epochs, not a fraction of one
    assert finished_knob_config("cpu", max_steps=10).max_steps == 10


def test_a_rate_set_by_hand_is_an_arm_without_a_sweep():
    arm = RateChoice.fixed("shared", RunConfig(model="tiny"), 3e-3)
    assert arm.config().learning_rate == 3e-3 and "set by hand" in arm.describe()


def test_a_verdict_on_a_shared_rate_says_so_in_every_line():
    base = RunConfig(model="tiny")
    swept = RateChoice("base", base, "learning_rate", (1e-3, 3e-3, 1e-2), (1.2, 1.1, 1.3), 3e-3)
    shared = RateChoice.fixed("knob", base, 3e-3)
    rep = protocol.Report(choices={"base": swept, "knob": shared}, baseline="base", seeds=(101,), runs={},
                          verdicts={})
    assert rep.rates() == "rates base 0.003 (chosen), knob 0.003 (set by hand)"
    both = protocol.Report(choices={"base": swept, "other": swept}, baseline="base", seeds=(101,), runs={},
                           verdicts={})
    assert both.rates() == "each arm at its own best rate"


def test_each_arm_may_have_its_own_grid(monkeypatch):
    trained: list = []
    _fake_training(monkeypatch, {"AdamW": 3e-3, "Lion": 1e-3}, trained)
    base = RunConfig(model="tiny")
    grids = {"AdamW": (1e-3, 3e-3, 1e-2), "Lion": (3e-4, 1e-3, 3e-3)}
    found = tune_rates([("AdamW", base), ("Lion", base)], grids, workers=1, progress=False)
    assert (found["AdamW"].grid, found["Lion"].grid) == (grids["AdamW"], grids["Lion"])
    assert (found["AdamW"].best, found["Lion"].best) == (pytest.approx(3e-3), pytest.approx(1e-3))
    with pytest.raises(ProtocolError, match=r"no rates for arms \['Lion'\]"):
        tune_rates([("AdamW", base), ("Lion", base)], {"AdamW": grids["AdamW"]}, workers=1, progress=False)
