"""SearchWidget and ClassStudy driven headless, through the methods their buttons call."""
from __future__ import annotations

import logging

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from ftlab import Run
from ftlab.experiments.search import SearchError, contribute, open_class_study
from ftlab.ui.widgets import ClassStudy, SearchWidget
from ftlab.ui.widgets import search_widget as search_widget_module

PNG = b"\x89PNG\r\n\x1a\n"
SPACE = {"learning_rate": FloatDistribution(1e-3, 1e-2, log=True),
         "weight_decay": FloatDistribution(1e-3, 0.1, log=True),
         "lr_scheduler_type": CategoricalDistribution(["linear", "cosine"])}


@pytest.fixture()
def small(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("FTLAB_RUNS", str(tmp_path / "runs"))
    return tiny_config.replace(max_steps=2, eval_steps=1, eval_size=8, exact_match_size=0)


def assert_pictures(bundle):
    """What a reader without widgets sees: both plots as one picture, and one line of text."""
    assert bundle["image/png"].startswith(PNG) and "\n" not in bundle["text/plain"]
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_search_widget_searches_and_redraws_after_every_trial(small, monkeypatch):
    w = SearchWidget(small, SPACE, n_trials=3, sampler="tpe", title="Search")
    assert bytes(w._landscape.value).startswith(PNG) and "press Search" in w.status
    assert_pictures(w._repr_mimebundle_())
    w.set(sampler="random", n_trials=2, pruner="none", fields=["learning_rate", "weight_decay"])
    assert list(w.space()) == ["learning_rate", "weight_decay"]
    seen = []
    after = w._after_trial
    monkeypatch.setattr(w, "_after_trial", lambda study, trial: (seen.append((w.progress.value, trial.number)),
                                                                 after(study, trial)))
    w.click()
    assert w.last_error is None, w.status
    assert [n for _, n in seen] == [0, 1] and w.progress.value == w.progress.max == 2
    assert w.status.startswith("2 of 2 trials done; best ") and not w.button.disabled
    assert set(w.study.trials[0].params) == {"learning_rate", "weight_decay"}
    assert "SearchWidget: learning_rate, weight_decay; random; 2 of 2" in repr(w)
    # pressed again, the study is complete: nothing new
    assert len(w.search().trials) == 2
    # a bad choice goes to the status line, the button stays usable
    w.set(sampler="grid", n_trials=1, fields=["learning_rate"])
    w.click()
    assert isinstance(w.last_error, SearchError) and "n_trials=1 is too small for the grid" in w.status
    assert not w.button.disabled
    with pytest.raises(ValueError, match="not in this widget's space"):
        w.set(fields=["max_steps"])


def test_an_error_after_the_search_shows_in_the_status_line_and_the_log(small, monkeypatch, caplog):
    """The search went well, drawing it did not: search() has no handler there, so the
    press must say so, not leave "searching…" on show with the error swallowed."""
    w = SearchWidget(small, SPACE, n_trials=1)
    monkeypatch.setattr(search_widget_module, "search", lambda *args, **kwargs: optuna.create_study())

    def broken_landscape():
        raise RuntimeError("the landscape broke")

    monkeypatch.setattr(w, "landscape_figure", broken_landscape)
    with caplog.at_level(logging.ERROR, logger="ftlab.ui.widgets.base"):
        w.click()  # no exception escapes the button
    assert w.study is not None  # searched, then failed
    assert w.status == "RuntimeError: the landscape broke" and "#c62828" in w._status.value
    assert isinstance(w.last_error, RuntimeError) and not w.button.disabled
    [record] = caplog.records
    assert record.getMessage() == "SearchWidget: Search failed" and record.exc_info[1] is w.last_error


def test_class_study_widget_counts_contributors_and_refreshes(small, tmp_path):
    journal = str(tmp_path / "class.journal")
    study = open_class_study(journal, small, SPACE)
    def add(who, lr, loss):
        run = Run(config=small.replace(learning_rate=lr, weight_decay=0.01),
                  evals=[{"step": 0, "eval_loss": 3.0}, {"step": 2, "eval_loss": loss}],
                  metrics={"final_eval_loss": loss})
        contribute(run, study, who)
    add("ana", 2e-3, 2.5)
    view = ClassStudy(journal)
    assert view.summary()["trials"] == 1 and view.summary()["contributors"] == {"ana": 1}
    add("bo", 4e-3, 2.1)
    add("ana", 8e-3, 2.3)
    view.refresh()
    s = view.summary()
    assert s["trials"] == 3 and s["contributors"] == {"ana": 2, "bo": 1}
    assert (s["best_value"], s["best_contributor"], s["best_params"]["learning_rate"]) == (2.1, "bo", 4e-3)
    assert view.text().startswith("3 trials from 2 contributors (ana 2, bo 1); best 2.1000 by bo: learning_rate=0.004")
    assert_pictures(view._repr_mimebundle_())
    # a learner's widget joins the same study: its space is the study's, not editable
    joined = SearchWidget(storage=journal, study_name="class")
    assert joined.full_space == SPACE and all(box.disabled for box in joined.fields.values())
    assert "joined study 'class'" in joined.status
