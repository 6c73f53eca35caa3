from ftlab import Run, RunConfig
from ftlab.runs.table import metric_rows, metric_table


def test_metric_table_keeps_long_column_names_apart():
    run = Run(config=RunConfig(), label="LoRA", metrics={"seconds_per_step": 1.25, "trainable_parameters": 921600})
    head, rule, row = metric_table([run], keys=("seconds_per_step", "trainable_parameters")).splitlines()
    assert head.split() == ["run", "seconds_per_step", "trainable_parameters"]
    assert row.split() == ["LoRA", "1.2500", "921600"]
    assert len(head) == len(rule) == len(row)


def test_metric_rows_are_what_the_text_table_prints():
    runs = [Run(config=RunConfig(), label="a", metrics={"final_eval_loss": 1.5, "exact_match": 0.25}),
            Run(config=RunConfig(learning_rate=1e-3), metrics={"final_eval_loss": 2.0})]
    rows = metric_rows(runs, keys=("final_eval_loss", "exact_match"))
    assert rows == [{"label": "a", "final_eval_loss": 1.5, "exact_match": 0.25},
                    {"label": runs[1].config_hash, "final_eval_loss": 2.0, "exact_match": None}]
    table = metric_table(runs, keys=("final_eval_loss", "exact_match")).splitlines()
    assert [line.split() for line in table[2:]] == [["a", "1.5000", "0.2500"], [runs[1].config_hash, "2.0000", "None"]]


def test_verdicts_compare_every_arm_with_the_baseline_paired_at_a_family_wise_level():
    from ftlab.experiments.stats import compare_to_baseline
    from ftlab.runs.table import values
    from ftlab.experiments.sweep import verdicts
    make = lambda finals: [Run(config=RunConfig(seed=s), metrics={"final_eval_loss": f}) for s, f in zip((42, 43, 44), finals)]
    arms = {"base": make([1.0, 1.1, 1.2]), "same": make([1.01, 1.09, 1.22]), "worse": make([1.5, 1.6, 1.7])}
    found = verdicts(arms, "base")
    assert list(found) == ["same", "worse"]
    expected = compare_to_baseline([1.0, 1.1, 1.2], {"same": [1.01, 1.09, 1.22], "worse": [1.5, 1.6, 1.7]}, paired=True)
    assert found == expected and found["worse"].effect and not found["same"].effect
    assert values(arms["worse"]) == [1.5, 1.6, 1.7]
    import pytest
    with pytest.raises(KeyError, match="baseline='nope' is not an arm"):
        verdicts(arms, "nope")
    with pytest.raises(KeyError, match="'best_eval_loss' is missing"):
        values(arms["base"], "best_eval_loss")


def test_metric_table_never_cuts_a_label():
    label = "attention dropout 0.1, seed 42"
    table = metric_table([Run(config=RunConfig(), label=label, metrics={"final_eval_loss": 1.5})], keys=("final_eval_loss",))
    assert table.splitlines()[2].startswith(label + " ")


def test_early_values_average_the_first_logged_training_losses():
    import pytest
    from ftlab.runs.table import early_values
    run = Run(config=RunConfig(), label="r", history=[{"step": s, "loss": l} for s, l in ((1, 4.0), (2, 2.0), (3, 1.0))])
    assert early_values([run, run], 2) == [3.0, 3.0]
    with pytest.raises(ValueError, match="logged 3 training losses, fewer than steps=4"):
        early_values([run], 4)
    with pytest.raises(ValueError, match="at least one step"):
        early_values([run], 0)


def test_a_config_names_its_loss_unit_like_its_runs():
    from ftlab.ui.plot import loss_unit
    assert loss_unit([RunConfig(model="tiny-pretrained")]) == "nats per byte"
    assert loss_unit([Run(config=RunConfig(model="smollm2-135m"))]) == "nats per token"


def test_rise_from_best_is_derived_on_read_and_never_written_into_a_run():
    import pytest
    from ftlab.runs.table import values
    from ftlab.experiments.sweep import verdicts
    runs = [Run(config=RunConfig(seed=s), label=f"r{s}", metrics={"final_eval_loss": f, "best_eval_loss": b})
            for s, f, b in ((42, 1.5, 1.25), (43, 1.4, 1.4), (44, 2.0, 1.0))]
    assert values(runs, "rise_from_best") == [0.25, 0.0, 1.0]
    assert all("rise_from_best" not in r.metrics for r in runs)
    assert metric_rows(runs[:1], keys=("rise_from_best",)) == [{"label": "r42", "rise_from_best": 0.25}]
    found = verdicts({"a": runs, "b": runs}, "a", key="rise_from_best")
    assert found["b"].difference == 0.0
    with pytest.raises(KeyError, match="'rise_from_best' is missing"):
        values([Run(config=RunConfig(), metrics={"final_eval_loss": 1.0})], "rise_from_best")
