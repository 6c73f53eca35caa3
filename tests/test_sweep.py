from ftlab import Run, RunConfig
from ftlab.sweep import metric_rows, metric_table


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
