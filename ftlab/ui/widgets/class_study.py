"""ClassStudy: the teacher's view of a workshop's shared study, refreshed on demand.

Every learner's search and contributed run lands in one Optuna study (see
:mod:`ftlab.experiments.search.classroom`); this widget reads it back: the loss over the two
searched fields with every trial as a point, the best-so-far curve of the whole class,
how many trials and contributors there are, and who found the best point. Refresh
re-reads the storage, so the picture grows as the room searches.
"""
from __future__ import annotations

import html
from collections import Counter
from typing import Any

import ipywidgets as widgets
from matplotlib.figure import Figure

from ftlab.experiments.search.classroom import CLASS_STUDY, join_class_study
from ftlab.ui.search_plot import plot_best_so_far, plot_landscape
from ftlab.experiments.search.results import best_trial, contributors, finished_trials
from ftlab.experiments.search.space import describe
from ftlab.ui.widgets.panels import panel_image, png, with_fallback


class ClassStudy:
    """Landscape, best-so-far and a summary of the shared study ``name`` in ``storage``
    (a journal file path or a database URL); ``x``/``y`` pick the landscape's fields
    (default: the first two numeric ones). ``refresh()`` is the Refresh button."""

    def __init__(self, storage: Any, name: str = CLASS_STUDY, x: str | None = None, y: str | None = None) -> None:
        self.study = join_class_study(storage, name)
        self.x, self.y = x, y
        self.button = widgets.Button(description="Refresh", icon="refresh", tooltip="read the shared study again")
        self.button.on_click(lambda _b: self.refresh())
        self.button.add_class("ftlab-class-refresh")
        self._summary = widgets.HTML()
        self._landscape = panel_image()
        self._best = panel_image()
        self.widget = widgets.VBox([widgets.HBox([self.button, self._summary]),
                                    widgets.HBox([self._landscape, self._best],
                                                 layout=widgets.Layout(flex_flow="row wrap"))])
        self.widget.add_class("ftlab-class-study")
        self.refresh()

    def summary(self) -> dict[str, Any]:
        """Trials, trials per contributor (in order of their first trial), and the best
        trial's loss, values and contributor (None before a trial completes)."""
        counts = Counter(str(t.user_attrs.get("contributor", "?")) for t in finished_trials(self.study))
        best = best_trial(self.study)
        people = {name: counts[name] for name in contributors(self.study)}
        return {"trials": sum(counts.values()), "contributors": people,
                "best_value": best.value if best else None, "best_params": best.params if best else None,
                "best_contributor": best.user_attrs.get("contributor") if best else None}

    def text(self) -> str:
        """The summary in one line, as the widget shows it."""
        s = self.summary()
        people = ", ".join(f"{name} {n}" for name, n in s["contributors"].items())
        line = f"{s['trials']} trials from {len(s['contributors'])} contributors ({people or 'none yet'})"
        if s["best_value"] is not None:
            line += f"; best {s['best_value']:.4f} by {s['best_contributor']}: {describe(s['best_params'])}"
        return line

    def landscape_figure(self) -> Figure:
        return plot_landscape(self.study, self.x, self.y, title="The class's trials: final eval loss")

    def best_so_far_figure(self) -> Figure:
        return plot_best_so_far({"the class": self.study}, title="Best so far, whole class")

    def refresh(self) -> None:
        """Read the study again and redraw (the Refresh button)."""
        self._landscape.value = png(self.landscape_figure())
        self._best.value = png(self.best_so_far_figure())
        self._summary.value = html.escape(self.text())

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The widget view, plus both plots as one PNG for readers without widgets."""
        return with_fallback(self.widget, [bytes(self._landscape.value), bytes(self._best.value)], repr(self), **kwargs)

    def __repr__(self) -> str:
        return f"ClassStudy {self.study.study_name!r}: {self.text()}"
