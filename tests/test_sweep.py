from ftlab import Run, RunConfig
from ftlab.sweep import metric_table


def test_metric_table_keeps_long_column_names_apart():
    run = Run(config=RunConfig(), label="LoRA", metrics={"seconds_per_step": 1.25, "trainable_parameters": 921600})
    head, rule, row = metric_table([run], keys=("seconds_per_step", "trainable_parameters")).splitlines()
    assert head.split() == ["run", "seconds_per_step", "trainable_parameters"]
    assert row.split() == ["LoRA", "1.2500", "921600"]
    assert len(head) == len(rule) == len(row)
