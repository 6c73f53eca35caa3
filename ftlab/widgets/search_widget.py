"""SearchWidget: pick a sampler, a budget, a pruner and the fields to search; press Search.

After every trial the landscape (final eval loss over two fields, each trial a point) and
the best-so-far curve redraw and the progress bar moves, so a learner watches a sampler
explore. It is a face on :func:`ftlab.search.search`, nothing more: the same arguments, the
same stored study (pressing Search again continues it), the same run cache. With a
storage and a study name and no base or space, it joins a shared study (a workshop's)
and searches that study's space.

Every button is also a method (``set``, ``search``, ``click``), for headless runs.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Mapping

import ipywidgets as widgets
import optuna
from matplotlib.figure import Figure
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from ..config import RunConfig
from ..search import PRUNERS, SAMPLERS, SearchError, search
from ..search.classroom import CLASS_STUDY, join_class_study
from ..search.plot import plot_best_so_far, plot_landscape
from ..search.results import best_trial
from ..search.space import describe
from ..search.study import default_contributor, finished_by, study_setup
from .panels import png, with_fallback

_COLORS = {"info": "#555", "busy": "#1f5fbf", "ok": "#1a7f37", "error": "#c62828"}

NO_PRUNER = "none"
"""The pruner dropdown's choice for no pruning."""


class SearchWidget:
    """Sampler, budget, pruner and field choices, a Search button, a progress bar, the
    landscape and the best-so-far curve.

    ``space`` is every field a learner may search (each gets a checkbox, all ticked); the
    fields left unticked stay at ``base``. ``x`` and ``y`` pick the landscape's axes
    (default: the first two numeric fields searched). ``storage`` and ``study_name`` are
    :func:`ftlab.search.search`'s; without ``base`` and ``space`` they name a shared study to
    join (default name: the class study's).
    """

    def __init__(self, base: RunConfig | None = None, space: Mapping[str, BaseDistribution] | None = None, *,
                 n_trials: int = 12, sampler: str = "tpe", pruner: str | None = None, storage: Any = None,
                 study_name: str | None = None, contributor: str | None = None, runs_dir: str | Path | None = None,
                 x: str | None = None, y: str | None = None, title: str = "") -> None:
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
        self.x, self.y, self.title = x, y, title
        self.study: optuna.Study | None = None
        """The study of the latest search (None before the first)."""
        self.last_error: BaseException | None = None
        self._status_text = ""
        self.sampler = widgets.Dropdown(options=SAMPLERS, value=sampler, description="sampler")
        self.n_trials = widgets.BoundedIntText(value=n_trials, min=1, max=1000, description="trials")
        self.pruner = widgets.Dropdown(options=[NO_PRUNER, *PRUNERS], value=pruner or NO_PRUNER, description="pruner")
        self.fields = {name: widgets.Checkbox(value=True, description=f"{name} {_range(d)}", indent=False,
                                              disabled=self.joined)
                       for name, d in self.full_space.items()}
        self.button = widgets.Button(description="Search", button_style="primary", icon="search",
                                     tooltip="run the trials still missing from this search's study")
        self.button.on_click(lambda _b: self._on_click())
        self.progress = widgets.IntProgress(value=0, min=0, max=n_trials, description="trials")
        self._status = widgets.HTML()
        self._landscape = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self._best = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.widget = self._layout()
        self._draw()
        where = f"joined study {study_name!r}: " if self.joined else ""
        self._set_status(f"{where}choose a sampler, a budget and the fields, then press Search", "info")

    def _layout(self) -> widgets.VBox:
        header = [widgets.HTML(f"<h3>{html.escape(self.title)}</h3>")] if self.title else []
        self.button.add_class("ftlab-search")
        self._status.add_class("ftlab-status")
        return widgets.VBox(header + [
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
        redrawing after every trial; errors go to the status line and are re-raised."""
        self.last_error = None
        budget = self.n_trials.value
        self.progress.max, self.progress.value = budget, 0
        self.button.disabled = True
        self._set_status(f"searching: {self.sampler.value}, {budget} trials…", "busy")
        try:
            self.study = search(None if self.joined else self.base, None if self.joined else self.space(),
                                n_trials=budget, sampler=self.sampler.value,
                                pruner=None if self.pruner.value == NO_PRUNER else self.pruner.value,
                                storage=self.storage, study_name=self.study_name, contributor=self.contributor,
                                runs_dir=self.runs_dir, callbacks=[self._after_trial], progress=False)
        except (Exception, KeyboardInterrupt) as exc:
            self.last_error = exc
            self._set_status(f"{type(exc).__name__}: {exc}", "error")
            raise
        finally:
            self.button.disabled = False
        self.progress.value = min(finished_by(self.study, self.contributor), budget)
        self._draw()
        self._set_status(self._summary(), "ok")
        return self.study

    def click(self) -> None:
        """Press Search: what a learner's click does (errors go to the status line)."""
        self.button.click()

    def _on_click(self) -> None:
        try:
            self.search()
        except (Exception, KeyboardInterrupt):
            pass  # search() put the message in the status line; a widget shows no traceback

    def _after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.study = study
        self.progress.value = min(finished_by(study, self.contributor), self.progress.max)
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
        return f"{finished_by(self.study, self.contributor)} of {self.n_trials.value} trials done; {found}"

    @property
    def status(self) -> str:
        """The status line as plain text."""
        return self._status_text

    def _set_status(self, text: str, kind: str) -> None:
        self._status_text = text
        self._status.value = f"<span style='color:{_COLORS[kind]}'>{html.escape(text)}</span>"

    # --- notebook display -----------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The widget view, plus the landscape and best-so-far as one PNG for readers
        without widgets."""
        return with_fallback(self.widget, [bytes(self._landscape.value), bytes(self._best.value)], repr(self),
                             **kwargs)

    def __repr__(self) -> str:
        return f"SearchWidget: {', '.join(self.space()) or 'no fields'}; {self.sampler.value}; {self._summary()}"


def _range(distribution: BaseDistribution) -> str:
    """'[0.0001, 0.01] log' or '{linear, cosine}': a checkbox's description of its field's range."""
    if hasattr(distribution, "choices"):
        return "{" + ", ".join(map(str, distribution.choices)) + "}"
    return f"[{distribution.low:g}, {distribution.high:g}]{' log' if distribution.log else ''}"
