"""The Playground driven headless, through the same methods its buttons call."""
import time

import ipywidgets
import pytest
from transformers import TrainerCallback

from ftlab import ConfigError
from ftlab.widgets import Dropdown, LogSlider, Playground, Slider, Toggle

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def small(tiny_config):
    """tiny_config at half length: the widget, not the training, is under test here."""
    return tiny_config.replace(max_steps=6, eval_steps=3, eval_size=8, exact_match_size=2)


def make(tiny_config, runs_dir, **kw):
    return Playground(tiny_config, [LogSlider("learning_rate", 1e-4, 1e-2),
                                    Dropdown("lr_scheduler_type", ["linear", "cosine", "constant"]),
                                    Toggle("gradient_checkpointing")], runs_dir=runs_dir, title="LR", **kw)


def test_set_changes_config_and_default_label(tiny_config, tmp_path):
    pg = make(tiny_config, tmp_path)
    assert pg.config() == tiny_config and pg.label == "base"
    pg.set(learning_rate=1e-3, lr_scheduler_type="cosine", gradient_checkpointing=True)
    cfg = pg.config()
    assert (cfg.learning_rate, cfg.lr_scheduler_type, cfg.gradient_checkpointing) == (1e-3, "cosine", True)
    assert cfg.max_steps == tiny_config.max_steps  # untouched fields come from the base
    assert pg.label == "lr=1e-3, cosine, ckpt"
    assert pg.controls["learning_rate"].value == 1e-3 and pg.controls["gradient_checkpointing"].value is True
    # a dragged log slider sits on 10**(k/10); the config gets the two digits the readout shows
    pg.controls["learning_rate"].value = 10 ** -3.7
    assert pg.config().learning_rate == 2e-4 and pg.label.startswith("lr=2e-4")
    # a typed label is kept while knobs move
    pg.label_box.value = "mine"
    pg.set(lr_scheduler_type="constant")
    assert pg.label == "mine"


def test_display_is_headless_safe(tiny_config, tmp_path):
    pg = make(tiny_config, tmp_path)
    assert isinstance(pg.widget, ipywidgets.VBox)
    bundle = pg._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and "text/plain" in bundle
    assert bytes(pg._loss_image.value).startswith(PNG) and bytes(pg._memory_image.value).startswith(PNG)


def test_click_trains_live_then_second_click_comes_from_cache(small, tmp_path):
    pg = make(small, tmp_path)
    pg.set(learning_rate=1e-3, lr_scheduler_type="cosine")
    pg.click()
    assert len(pg.runs) == 1, pg.status
    run = pg.runs[0]
    assert run.status == "completed" and run.label == "lr=1e-3, cosine"
    assert run.config.learning_rate == 1e-3 and run.config.lr_scheduler_type == "cosine"
    assert run.config.gradient_checkpointing is False
    assert pg.live_draws >= 1  # the plot was redrawn while training, not only at the end
    assert "trained" in pg.status and "eval loss" in pg.status
    assert not pg.button.disabled

    t0 = time.perf_counter()
    pg.click()
    assert time.perf_counter() - t0 < 1.0
    assert len(pg.runs) == 2 and pg.live_draws == 0 and "cache" in pg.status
    rows = pg.table()
    assert [r["label"] for r in rows] == ["lr=1e-3, cosine", "lr=1e-3, cosine"]
    assert [r["source"] for r in rows] == ["trained", "cache"]
    for row in rows:
        assert row["steps"] == 6 and row["final_eval_loss"] < run.metrics["initial_eval_loss"]
        assert row["memory_mib"] > 0 and 0 <= row["exact_match"] <= 1 and row["seconds_per_step"] > 0
    assert pg._table.value.count("<tr>") == 3 and "cached" in pg._table.value
    assert len(pg.loss_figure().axes[0].get_lines()) == 4  # train + eval line per run
    # an explicit label wins over the text box
    assert pg.run(label="again").label == "again"


def test_unknown_or_duplicate_knob_field_raises(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match="learning_rat"):
        Playground(tiny_config, [LogSlider("learning_rat", 1e-4, 1e-2)], runs_dir=tmp_path)
    with pytest.raises(ConfigError, match="one knob per field"):
        Playground(tiny_config, [Toggle("packing"), Toggle("packing")], runs_dir=tmp_path)
    with pytest.raises(ConfigError, match="no_such"):
        make(tiny_config, tmp_path).set(no_such=1)
    with pytest.raises(ConfigError, match="lr_scheduler_type"):
        make(tiny_config, tmp_path).set(lr_scheduler_type="bogus")


def test_invalid_value_raises_from_run_and_shows_in_status_on_click(tiny_config, tmp_path):
    pg = make(tiny_config, tmp_path)
    pg.set(learning_rate=5.0)  # the slider widens to show it; RunConfig decides it is not allowed
    assert pg.controls["learning_rate"].value == 5.0
    with pytest.raises(ConfigError, match="learning_rate"):
        pg.run()
    pg._status.value = ""
    pg.click()  # no exception escapes the button
    assert pg.status.startswith("ConfigError") and "learning_rate" in pg.status
    assert "#c62828" in pg._status.value  # red
    assert pg.runs == [] and isinstance(pg.last_error, ConfigError)


def test_weight_decay_zero_box_and_linear_slider(tiny_config, tmp_path):
    pg = Playground(tiny_config, [LogSlider("weight_decay", 1e-4, 1e-1), Slider("max_steps", 4, 40, 4),
                                  Slider("warmup_steps", 0.0, 0.5, 0.05),
                                  Dropdown("neftune_noise_alpha", {"off": None, "5": 5.0})], runs_dir=tmp_path)
    assert pg.config() == tiny_config  # weight_decay 0 starts with the "0 (off)" box ticked
    pg.set(weight_decay=0.01, max_steps=8, warmup_steps=0.1, neftune_noise_alpha=5.0)
    cfg = pg.config()
    assert (cfg.weight_decay, cfg.max_steps, cfg.warmup_steps, cfg.neftune_noise_alpha) == (0.01, 8, 0.1, 5.0)
    assert pg.label == "wd=0.01, steps=8, warmup=0.1, neftune=5"
    pg.controls["warmup_steps"].value = 0.15000000000000002  # what a browser sends
    assert pg.config().warmup_steps == 0.15
    pg.set(weight_decay=0)
    assert pg.config().weight_decay == 0.0
    with pytest.raises(ConfigError, match="int"):
        pg.set(max_steps=2.5)
    with pytest.raises(ConfigError, match="log-scale"):
        make(tiny_config, tmp_path).set(learning_rate=0)  # no "0" box: learning_rate must be > 0


class _StopAt(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 3:
            raise KeyboardInterrupt


def test_interrupted_run_is_kept(small, tmp_path):
    pg = make(small, tmp_path, callbacks=[_StopAt()])
    run = pg.run()
    assert run.status == "interrupted" and pg.runs == [run]
    row = pg.table()[0]
    assert row["status"] == "interrupted" and 0 < row["steps"] < 6
    assert f"interrupted after step {row['steps']}" in pg.status
    assert not list(tmp_path.glob("*.json"))  # not cached


def test_memory_predictor_updates_with_its_controls():
    from ftlab.estimate import estimate
    from ftlab.widgets import MemoryPredictor

    m = MemoryPredictor()
    first = m.summary.value
    assert m.predict().total == estimate(m.config(), seq_len=m.seq_len.value).total
    m.checkpointing.value = True
    assert m.summary.value != first and "GiB" in m.summary.value
    m.model.value, m.method.value = "7B", "lora"
    lora = m.predict()
    m.method.value = "qlora"
    qlora = m.predict()
    assert qlora.weights < 0.6 * lora.weights  # the 4-bit base (embeddings stay unquantized)
    assert len(m.image.value) > 1000  # a real PNG was drawn
