"""SearchWidget: pick a sampler, a budget, a pruner and the fields to search; press Search.

After every trial the landscape (final eval loss over two fields, each trial a point) and
the best-so-far curve redraw and the progress bar moves, so a learner watches a sampler
explore. It is a face on :func:`ftlab.experiments.search.search`, nothing more: the same arguments, the
same stored study (pressing Search again continues it), the same run cache. With a
storage and a study name and no base or space, it joins a shared study (a workshop's)
and searches that study's space.

Every button is also a method (``set``, ``search``, ``click``), for headless runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import ipywidgets as widgets
import optuna
from matplotlib.figure import Figure
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from ftlab.config.run_config import RunConfig
from ftlab.experiments.search import PRUNERS, SAMPLERS, SearchError, search
from ftlab.experiments.search.classroom import CLASS_STUDY, join_class_study
from ftlab.ui.search_plot import plot_best_so_far, plot_landscape
from ftlab.experiments.search.results import best_trial
from ftlab.experiments.search.space import describe
from ftlab.experiments.search.study import counted_contributor, default_contributor, finished_by, study_setup
from ftlab.ui.widgets.base import RunnerWidget
from ftlab.ui.widgets.panels import panel_image, png

NO_PRUNER = "none"
"""The pruner dropdown's choice for no pruning."""


class SearchWidget(RunnerWidget):
    """Sampler, budget, pruner and field choices, a Search button, a progress bar, the
    landscape and the best-so-far curve.

    ``space`` is every field a learner may search (each gets a checkbox, all ticked); the
    fields left unticked stay at ``base``. ``x`` and ``y`` pick the landscape's axes
    (default: the first two numeric fields searched). ``storage`` and ``study_name`` are
    :func:`ftlab.experiments.search.search`'s; without ``base`` and ``space`` they name a shared study to
    join (default name: the class study's). The button, the status line and what a press
    does with an error are ``RunnerWidget``'s.
    """

    def __init__(self, base: RunConfig | None = None, space: Mapping[str, BaseDistribution] | None = None, *,
                 n_trials: int = 12, sampler: str = "tpe", pruner: str | None = None, storage: Any = None,
                 study_name: str | None = None, contributor: str | None = None, runs_dir: str | Path | None = None,
                 x: str | None = None, y: str | None = None, title: str = "") -> None:
        super().__init__(title, "Search", "search", "run the trials still missing from this search's study",
                         "ftlab-search")
        self.joined = base is None and space is None
        if self.joined:
            study_name = study_name or CLASS_STUDY
            base, space = study_setup(join_class_study(storage, study_name))
        elif base is None or space is None:
            raise SearchError(f"SearchWidget needs both base and space (or neither, to join a shared study); "
                              f"{'base' if base is None else 'space'} is missing")
        self.base, self.full_space = base, dict(space)
        self.storage, self.study_name, self.runs_dir = storage, study_name, runs_dir
        self.contributor = contributor or default_contributor()
        self.x, self.y = x, y
        self.study: optuna.Study | None = None
        """The study of the latest search (None before the first)."""
        self.sampler = widgets.Dropdown(options=SAMPLERS, value=sampler, description="sampler")
        self.n_trials = widgets.BoundedIntText(value=n_trials, min=1, max=1000, description="trials")
        self.pruner = widgets.Dropdown(options=[NO_PRUNER, *PRUNERS], value=pruner or NO_PRUNER, description="pruner")
        self.fields = {name: widgets.Checkbox(value=True, description=f"{name} {_range(d)}", indent=False,
                                              disabled=self.joined)
                       for name, d in self.full_space.items()}
        self.progress = widgets.IntProgress(value=0, min=0, max=n_trials, description="trials")
        self._landscape = panel_image()
        self._best = panel_image()
        self.widget = self._layout()
        self._draw()
        where = f"joined study {study_name!r}: " if self.joined else ""
        self._set_status(f"{where}choose a sampler, a budget and the fields, then press Search", "info")

    def _layout(self) -> widgets.VBox:
        return widgets.VBox(self._header() + [
            widgets.HBox([self.sampler, self.n_trials, self.pruner]),
            widgets.VBox(list(self.fields.values())),
            widgets.HBox([self.button, self.progress]),
            self._status,
            widgets.HBox([self._landscape, self._best], layout=widgets.Layout(flex_flow="row wrap")),
        ]).add_class("ftlab-search-widget")

    # --- values -------------------------------------------------------------------------
    def set(self, *, sampler: str | None = None, n_trials: int | None = None, pruner: str | None = None,
            fields: list[str] | None = None) -> SearchWidget:
        """Move the controls as if by hand (a name the controls do not have raises ValueError)."""
        if sampler is not None:
            self.sampler.value = sampler
        if n_trials is not None:
            self.n_trials.value = n_trials
        if pruner is not None:
            self.pruner.value = pruner
        if fields is not None:
            unknown = sorted(set(fields) - set(self.fields))
            if unknown:
                raise ValueError(f"fields {unknown} are not in this widget's space; choose from {list(self.fields)}")
            for name, box in self.fields.items():
                box.value = name in fields
        return self

    def space(self) -> dict[str, BaseDistribution]:
        """The ticked fields' distributions: the space the next search covers."""
        return {name: d for name, d in self.full_space.items() if self.fields[name].value}

    # --- searching ----------------------------------------------------------------------
    def search(self) -> optuna.Study:
        """Run the search the controls describe (the trials still missing from its study),
        redrawing after every trial. An error in the search goes to the status line and is
        re-raised; a press of Search shows any error, a later one too (``RunnerWidget``)."""
        self.last_error = None
        budget = self.n_trials.value
        self.progress.max, self.progress.value = budget, 0
        with self._busy(f"searching: {self.sampler.value}, {budget} trials…"):
            try:
                self.study = search(None if self.joined else self.base, None if self.joined else self.space(),
                                    n_trials=budget, sampler=self.sampler.value,
                                    pruner=None if self.pruner.value == NO_PRUNER else self.pruner.value,
                                    storage=self.storage, study_name=self.study_name, contributor=self.contributor,
                                    runs_dir=self.runs_dir, callbacks=[self._after_trial], progress=False)
            except (Exception, KeyboardInterrupt) as exc:
                self._show_error(exc)
                raise
        self.progress.value = min(self._done(self.study), budget)
        self._draw()
        self._set_status(self._summary(), "ok")
        return self.study

    def _done(self, study: optuna.Study) -> int:
        """Trials of ``study`` that count toward the budget, as ``search`` counts them."""
        return finished_by(study, counted_contributor(self.study_name, self.contributor))

    def _press(self) -> None:
        """The Search button: ``search`` with the controls' values."""
        self.search()

    def _after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.study = study
        self.progress.value = min(self._done(study), self.progress.max)
        self._draw()
        self._set_status(f"trial {trial.number} {trial.state.name.lower()}: {describe(trial.params)} · "
                         f"{self._summary()}", "busy")

    # --- drawing --------------------------------------------------------------------------
    def landscape_figure(self) -> Figure:
        """The landscape of the latest search's study (an empty frame before the first)."""
        return plot_landscape(self.study, self.x, self.y)

    def best_so_far_figure(self) -> Figure:
        """Best final eval loss after each trial of the latest search's study."""
        return plot_best_so_far({self.sampler.value: self.study})

    def _draw(self) -> None:
        self._landscape.value = png(self.landscape_figure())
        self._best.value = png(self.best_so_far_figure())

    def _summary(self) -> str:
        if self.study is None:
            return "no search yet"
        best = best_trial(self.study)
        found = f"best {best.value:.4f} at {describe(best.params)}" if best else "no completed trial yet"
        return f"{self._done(self.study)} of {self.n_trials.value} trials done; {found}"

    # --- notebook display -----------------------------------------------------------------
    def _panel_images(self) -> list[widgets.Image]:
        return [self._landscape, self._best]

    def __repr__(self) -> str:
        return f"SearchWidget: {', '.join(self.space()) or 'no fields'}; {self.sampler.value}; {self._summary()}"


def _range(distribution: BaseDistribution) -> str:
    """'[0.0001, 0.01] log' or '{linear, cosine}': a checkbox's description of its field's range."""
    if hasattr(distribution, "choices"):
        return "{" + ", ".join(map(str, distribution.choices)) + "}"
    return f"[{distribution.low:g}, {distribution.high:g}]{' log' if distribution.log else ''}"
