"""The Playground driven headless, through the same methods its buttons call."""
import logging
import sys

import ipywidgets
import pytest
from transformers import TrainerCallback

from ftlab import ConfigError, MemoryBreakdown, Run, RunConfig
from ftlab.errors import ArgumentError
from ftlab.runs.cache import RunCache
from ftlab import sweep as sweep_module
from ftlab.setup.data import data_fingerprint
from ftlab.runs.table import metric_rows
from ftlab.memory import assumptions, fits_table, gpu_need
from ftlab.ui.widgets import PANELS, Dropdown, LogSlider, MemoryPredictor, Playground, Slider, Toggle
from ftlab.ui.widgets import playground as playground_module
from ftlab.ui.widgets.memory_predictor import CONTROL_WIDTH
from ftlab.ui.widgets.playground import TABLE_METRICS

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


def png_size(data):
    """(width, height) from a PNG's header."""
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def assert_static_fallback(bundle, panels):
    """What a reader without widgets sees (GitHub, nbviewer, untrusted JupyterLab): the
    widget view for those who have them, the panels as one picture, one line of text."""
    assert set(bundle) == {"application/vnd.jupyter.widget-view+json", "image/png", "text/plain"}
    picture = bundle["image/png"]
    assert picture.startswith(PNG)
    widths, heights = zip(*(png_size(bytes(image.value)) for image in panels))
    assert png_size(picture) == (sum(widths), max(heights))  # every panel, side by side
    text = bundle["text/plain"]
    assert "\n" not in text and "children=(" not in text
    return text


def test_display_is_headless_safe(tiny_config, tmp_path):
    pg = make(tiny_config, tmp_path)
    assert isinstance(pg.widget, ipywidgets.VBox)
    assert list(pg._images) == ["loss", "memory"]  # the default panels
    assert bytes(pg._images["loss"].value).startswith(PNG) and bytes(pg._images["memory"].value).startswith(PNG)
    text = assert_static_fallback(pg._repr_mimebundle_(), list(pg._images.values()))
    assert text == ("Playground 'LR': knobs learning_rate, lr_scheduler_type, gradient_checkpointing; 0 runs")
    pg.runs.extend([fake_run(tiny_config, "a"), fake_run(tiny_config, "b", i=1)])
    pg.runs[1].metrics["final_eval_loss"] = 1.2
    assert repr(pg).endswith("; 2 runs, best final eval loss 1.200 (b)")
    assert not hasattr(pg, "_ipython_display_")  # it would bypass the bundle and save the bare VBox


def test_memory_predictor_display_has_a_static_fallback():
    m = MemoryPredictor()
    text = assert_static_fallback(m._repr_mimebundle_(), [m.image])
    assert text.startswith("MemoryPredictor: smollm2-135m lora, batch 4 x 512 tokens, fp32 weights: ")
    assert "GiB on one GPU" in text
    m.method.value = "full"
    assert m._repr_mimebundle_()["text/plain"].startswith("MemoryPredictor: smollm2-135m full")


def test_memory_predictor_controls_keep_their_width_whatever_the_summary():
    # a summary that wraps to two lines must not squeeze the dropdowns (and hide their arrows)
    m = MemoryPredictor()
    controls_box, plot_box = m.widget.children
    assert list(controls_box.children) == m.controls
    assert controls_box.layout.flex == "0 0 auto"
    assert plot_box.layout.flex == "1 1 auto" and plot_box.layout.min_width == "0"
    assert list(plot_box.children) == [m.image, m.summary]
    for control in m.controls:
        assert (control.layout.width, control.layout.flex) == (CONTROL_WIDTH, "0 0 auto"), control.description
        assert control.style.description_width == "150px", control.description
    assert len({id(control.layout) for control in m.controls}) == len(m.controls)  # no shared Layout to mutate


def test_click_trains_live_then_second_click_comes_from_cache(small, tmp_path, monkeypatch):
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

    # the same knobs again: the run is on show already, so no duplicate row or legend entry
    pg.click()
    assert pg.runs == [run] and pg.status == "already shown: lr=1e-3, cosine" and pg.live_draws == 0
    assert pg._table.value.count("<tr>") == 2
    assert len(pg.loss_figure().axes[0].get_lines()) == 2  # train + eval line of the one run

    # a new playground over the same runs folder: the run comes from the cache, no model is even loaded
    again = make(small, tmp_path).set(learning_rate=1e-3, lr_scheduler_type="cosine")
    monkeypatch.setattr(sys.modules["ftlab.training.train"], "load_model",
                        lambda *a, **k: pytest.fail("a cached run was trained again"))
    cached = again.run(label="again")  # an explicit label wins over the text box
    monkeypatch.undo()
    assert cached.label == "again" and again.live_draws == 0 and "cache" in again.status
    row = again.table()[0]
    assert (row["label"], row["source"]) == ("again", "cache")
    assert row["steps"] == 6 and row["final_eval_loss"] < run.metrics["initial_eval_loss"]
    assert row["memory_mib"] > 0 and 0 <= row["exact_match"] <= 1 and row["seconds_per_step"] > 0
    assert row["train_loss"] > 0  # every column the table shows is a metric train() writes
    assert "cached" in again._table.value


def test_unknown_or_duplicate_knob_field_raises(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match="learning_rat"):
        Playground(tiny_config, [LogSlider("learning_rat", 1e-4, 1e-2)], runs_dir=tmp_path)
    with pytest.raises(ConfigError, match="one knob per field"):
        Playground(tiny_config, [Toggle("packing"), Toggle("packing")], runs_dir=tmp_path)
    with pytest.raises(ArgumentError, match=r"^Playground\.set\(no_such=1\) is not allowed: a knob of this playground"):
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


def test_an_error_after_training_shows_in_the_status_line_and_the_log(tiny_config, tmp_path, monkeypatch, caplog):
    """Training went well, tabulating it did not: run() has no handler there, so the press
    must say so, not leave "loading model and data…" on show with the error swallowed."""
    pg = make(tiny_config, tmp_path)
    monkeypatch.setattr(playground_module, "train", lambda config, label, **kw: Run(config=config, label=label))

    def broken_table(rows):
        raise RuntimeError("the table broke")

    monkeypatch.setattr(playground_module, "table_html", broken_table)
    with caplog.at_level(logging.ERROR, logger="ftlab.ui.widgets.base"):
        pg.click()  # no exception escapes the button
    assert len(pg.runs) == 1  # trained, then failed
    assert pg.status == "RuntimeError: the table broke" and "#c62828" in pg._status.value
    assert isinstance(pg.last_error, RuntimeError) and not pg.button.disabled
    [record] = caplog.records
    assert record.getMessage() == "Playground: Run failed" and record.exc_info[1] is pg.last_error


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
    m = MemoryPredictor()
    first = m.summary.value
    assert m.need() == gpu_need(m.config(), seq_len=m.seq_len.value)
    assert m.predict().total == m.need()["total"] - m.need()["transient"]
    m.checkpointing.value = True
    assert m.summary.value != first and "GiB" in m.summary.value
    m.model.value, m.method.value = "7B", "lora"
    lora = m.predict()
    m.method.value = "qlora"
    qlora = m.predict()
    assert qlora.weights < 0.6 * lora.weights  # the 4-bit base (embeddings stay unquantized)
    assert len(m.image.value) > 1000  # a real PNG was drawn


def fake_run(config, label, i=0, from_cache=False):
    """A finished Run without training: the widget's tables and plots are under test."""
    history = [{"step": s, "loss": 3.0 / (s + i), "learning_rate": 1e-3 * (1 - s / 8), "grad_norm": 1.0 + 0.1 * s,
                "weight_norm": 10.0 + 0.01 * s * (i + 1)} for s in range(1, 9)]
    return Run(config=config, history=history, evals=[{"step": 4, "eval_loss": 2.0}, {"step": 8, "eval_loss": 1.5}],
               metrics={"train_loss": 0.4 + i, "final_eval_loss": 1.5, "initial_eval_loss": 3.0, "exact_match": 0.5,
                        "seconds_per_step": 0.2},
               memory=MemoryBreakdown(weights=4 << 20, gradients=4 << 20, optimizer=8 << 20, activations=2 << 20),
               label=label, from_cache=from_cache)


def test_panels_draw_history_keys_from_the_runs(tiny_config, tmp_path):
    pg = make(tiny_config, tmp_path, panels=("loss", "weight_norm", "learning_rate", "grad_norm"))
    assert list(pg._images) == ["loss", "weight_norm", "learning_rate", "grad_norm"]
    assert "memory" not in pg._images
    runs = [fake_run(tiny_config, "a"), fake_run(tiny_config, "b", i=1)]
    pg.runs.extend(runs)
    for key in ("weight_norm", "learning_rate", "grad_norm"):
        lines = pg.figure(key).axes[0].get_lines()
        assert [list(line.get_ydata()) for line in lines] == [run.series(key)[1] for run in runs], key
        assert [line.get_label() for line in lines] == ["a", "b"]
    assert len(pg.figure("loss").axes[0].get_lines()) == 4  # train + eval per run


def test_panels_before_any_run_and_unknown_panels(tiny_config, tmp_path):
    pg = make(tiny_config, tmp_path, panels=PANELS)
    for name in PANELS:
        assert bytes(pg._images[name].value).startswith(PNG), name
        assert pg.figure(name).axes[0].get_legend() is None, name  # no empty legend box, a hint instead
    with pytest.raises(ValueError, match="weight_nrom"):
        make(tiny_config, tmp_path, panels=("loss", "weight_nrom"))
    with pytest.raises(ValueError, match="twice"):
        make(tiny_config, tmp_path, panels=("loss", "loss"))


def test_a_cached_run_is_known_from_the_run_itself(tiny_config, tmp_path):
    run = fake_run(tiny_config, "a")
    cache = RunCache(tmp_path)
    cache.save(run)
    assert "from_cache" not in run.to_dict()
    cached = cache.load_completed(run.key)
    assert cached.from_cache and not run.from_cache and cached == run  # where it came from is not what it is
    pg = make(tiny_config, tmp_path)
    pg.runs.extend([run, cached])
    assert [r["source"] for r in pg.table()] == ["trained", "cache"]
    assert playground_module.run_summary(cached, 0.01, None)[0].startswith("a: from the run cache in 0.01 s")


def test_the_playground_table_and_the_text_table_read_the_same_rows(tiny_config, tmp_path, monkeypatch):
    runs = [fake_run(tiny_config, "a"), fake_run(tiny_config, "", i=1)]
    pg = make(tiny_config, tmp_path)
    pg.runs.extend(runs)
    expected = metric_rows(runs, TABLE_METRICS)
    assert [{k: row[k] for k in ("label", *TABLE_METRICS)} for row in pg.table()] == expected
    assert pg.table()[1]["label"] == runs[1].config_hash  # no label: the hash, as in metric_table
    calls = []

    def spy(runs, keys):
        calls.append(list(keys))
        return metric_rows(runs, keys)

    monkeypatch.setattr(playground_module, "metric_rows", spy)
    pg.table()
    monkeypatch.setattr(sweep_module, "metric_rows", spy)
    sweep_module.metric_table(runs, keys=("final_eval_loss",))
    assert calls == [list(TABLE_METRICS), ["final_eval_loss"]]


def test_the_chapters_runs_are_shown_from_the_start_and_a_press_adds_to_them(small, tmp_path):
    chapter = [fake_run(small, "chapter base"), fake_run(small.replace(learning_rate=1e-3), "chapter lr", i=1)]
    chapter[0].metrics["data_sha256"] = data_fingerprint(small)  # as train() records it
    pg = make(small, tmp_path, runs=chapter)
    assert pg.runs == chapter and pg.runs is not chapter  # the chapter's list is not appended to
    assert [r["label"] for r in pg.table()] == ["chapter base", "chapter lr"]
    assert pg._table.value.count("<tr>") == 3 and pg.status.startswith("ready: 2 runs shown")
    legend = [t.get_text() for t in pg.figure("loss").axes[0].get_legend().get_texts()]
    assert legend == ["chapter base train", "chapter base eval", "chapter lr train", "chapter lr eval"]
    assert bytes(pg._images["loss"].value) == bytes(panels_png(pg, "loss"))  # drawn, not only known

    # the base knobs are the first chapter run's config: on show already, nothing is trained
    assert pg.run() is chapter[0] and pg.status == "already shown: chapter base" and len(pg.runs) == 2
    # the second chapter run's config, but it records no data fingerprint (trained on data of
    # unknown age): a press trains it anew, and the new curve joins the chapter's comparison
    pg.set(learning_rate=1e-3)
    pg.click()
    assert len(pg.runs) == 3 and pg.runs[2].label == "lr=1e-3" and "trained" in pg.status
    lines = pg.figure("loss").axes[0].get_lines()
    assert [line.get_label() for line in lines][-2:] == ["lr=1e-3 train", "lr=1e-3 eval"]
    assert lines[-1].get_color() == "C2"  # the third colour, after the chapter's two
    pg.click()
    assert len(pg.runs) == 3 and pg.status == "already shown: lr=1e-3"
    assert len(pg.figure("loss").axes[0].get_legend().get_texts()) == 6 and pg._table.value.count("<tr>") == 4


def panels_png(pg, name):
    """The PNG the Playground's panel ``name`` shows for its runs now."""
    return playground_module.png(pg.figure(name))


def test_epochs_knob_sets_steps_from_the_split_and_the_batch(tiny_config, tmp_path):
    """Epochs are steps per pass (ceil(train_size / effective batch)) times epochs, recomputed
    when the batch knobs move, with one evaluation per epoch."""
    from ftlab.ui.widgets import Epochs
    base = tiny_config.replace(train_size=50, per_device_train_batch_size=8, max_steps=14)  # 7 steps/epoch: 2 epochs
    pg = Playground(base, [Epochs(1, 8), Slider("per_device_train_batch_size", 2, 16, 2),
                           Slider("gradient_accumulation_steps", 1, 4, 1)], runs_dir=tmp_path)
    assert pg.values()["max_steps"] == 2 and pg.label == "base"
    assert (pg.config().max_steps, pg.config().eval_steps) == (14, 7)
    pg.set(max_steps=3, per_device_train_batch_size=4, gradient_accumulation_steps=2)
    assert (pg.config().max_steps, pg.config().eval_steps) == (21, 7)
    pg.set(per_device_train_batch_size=16, gradient_accumulation_steps=1)
    assert (pg.config().max_steps, pg.config().eval_steps) == (12, 4)
    assert pg.label == "3 epochs, bs=16"
    with pytest.raises(ConfigError, match="train_size"):
        Playground(tiny_config, [Epochs(1, 8)], runs_dir=tmp_path)


@pytest.mark.parametrize("weights", ["float32", "bfloat16"])
def test_the_predictor_and_the_fits_table_give_one_answer(weights):
    """Issue 22: the widget said 30.5 GiB for a 7B LoRA where the fits table said 18.8. Both now
    use one accounting (gpu_need of method_config), so the same settings give the same bytes."""
    m = MemoryPredictor()
    m.model.value, m.batch.value, m.seq_len.value, m.checkpointing.value = "7B", 1, 2048, True
    m.weights.value = weights
    for method in ("full", "lora", "qlora"):
        m.method.value = method
        [row] = fits_table(model_sizes=("7B",), methods=(method,), weights=weights)
        assert m.need()["total"] == row["total"], (method, weights)
        assert (f"{'fits' if row['fits_24GiB'] else 'does not fit'} a 24 GiB card") in m.summary.value
    assert assumptions(weights) in m.summary.value  # the assumptions are printed where the answer is


def test_the_predictor_defaults_are_what_ftlab_trains():
    """Its LoRA is RunConfig's (rank, modules), its weights fp32 as load_model loads them."""
    m = MemoryPredictor()
    config, default = m.config(), RunConfig()
    assert (config.lora_r, config.lora_target_modules) == (default.lora_r, default.lora_target_modules)
    assert m.weights.value == "float32" and config.bf16


def test_the_predictor_sizes_a_data_parallel_group_as_the_fits_table_does():
    """Issue 24: the widget gains a devices dimension, with the fits table's per-GPU accounting;
    a combination ftlab cannot predict is said in the summary, not raised into the notebook."""
    m = MemoryPredictor()
    m.model.value, m.batch.value, m.seq_len.value, m.checkpointing.value = "7B", 1, 2048, True
    m.method.value, m.devices.value, m.strategy.value, m.gpu.value = "full", 8, "fsdp", 80
    [row] = fits_table(model_sizes=("7B",), methods=("full",), devices=8, strategy="fsdp")
    assert m.need()["total"] == row["total"] and m.need()["gathered"] > 0
    assert "on each of 8 GPUs (fsdp, the busiest)" in m.summary.value and "an 80 GiB card" in m.summary.value
    m.method.value = "qlora"  # a sharded 4-bit base is not predicted
    assert m.summary.value.startswith("<b>Not predicted:</b>") and "zero1" in m.summary.value
    assert "not predicted" in repr(m)
