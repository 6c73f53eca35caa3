"""RunnerWidget: what the Playground and the SearchWidget share around their one long job.

Each is a primary button that starts a job of seconds to hours (train a run, search a
space), a status line that says what is happening, and PNG panels that are also the
widget's picture where no widget can run. This class owns the button, the status line and
what a press does with an error; a subclass says what the job is (``_press``) and which
images it shows (``_panel_images``).
"""
from __future__ import annotations

import html
import logging
from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import ipywidgets as widgets

from ftlab.ui.widgets.panels import with_fallback

log = logging.getLogger(__name__)

STATUS_COLORS = {"info": "#555", "busy": "#1f5fbf", "ok": "#1a7f37", "warn": "#b35900", "error": "#c62828"}
"""Status-line colour per kind of message."""


class RunnerWidget(ABC):
    """A titled widget with one button that runs a job, and a status line that reports on it.

    A press never lets an exception out, and never hides one. The button's callback runs
    in the kernel with no cell to show a traceback in, so every exception is shown in the
    status line as its type and message (what a learner can act on), kept in
    ``last_error`` (for tests and the curious) and logged with its traceback, at ERROR, on
    this module's logger. Logged rather than warned or printed into an output area under
    the widget: JupyterLab puts what a button's callback writes in its log console (View >
    Show Log Console), out of the learner's way yet there for whoever debugs; the widget's
    layout, and so its saved picture, stays as it is; and a warning would be shown only
    once per message and would become an exception under ``-W error``. It matters most
    for an error after the job itself (drawing, tabulating, saving), which the job's own
    method does not catch: the status line would otherwise keep saying "training".

    KeyboardInterrupt (the notebook's stop button) is not an error: the job's method has
    already said in the status line what was kept, and the press ends quietly.
    """

    widget: widgets.VBox
    """The box to display (built by the subclass, with ``button`` and ``_status`` in it)."""

    def __init__(self, title: str, action: str, icon: str, tooltip: str, css_class: str) -> None:
        self.title = title
        self.last_error: BaseException | None = None
        """What the latest job (or press) ended with; None after one that went well."""
        self._status_text = ""
        self.button = widgets.Button(description=action, button_style="primary", icon=icon, tooltip=tooltip)
        self.button.on_click(lambda _button: self._on_click())
        self.button.add_class(css_class)  # stable CSS classes: what tests/browser and a learner's CSS select by
        self._status = widgets.HTML()
        self._status.add_class("ftlab-status")

    @abstractmethod
    def _press(self) -> None:
        """The job the button runs; it may raise."""

    @abstractmethod
    def _panel_images(self) -> Sequence[widgets.Image]:
        """The images whose PNGs, side by side, are the widget's picture without widgets."""

    def _header(self) -> list[widgets.Widget]:
        """The title as a heading, or nothing without one."""
        return [widgets.HTML(f"<h3>{html.escape(self.title)}</h3>")] if self.title else []

    # --- the button ---------------------------------------------------------------------
    def click(self) -> None:
        """Press the button: what a learner's click does (errors go to the status line)."""
        self.button.click()

    def _on_click(self) -> None:
        try:
            self._press()
        except KeyboardInterrupt:
            pass  # the stop button: the job's method already said what was kept
        except Exception as exc:  # a callback has no cell to raise into: show it, keep it, log it
            self._show_error(exc)
            log.error("%s: %s failed", type(self).__name__, self.button.description, exc_info=exc)

    @contextmanager
    def _busy(self, text: str) -> Iterator[None]:
        """``text`` in the status line and the button disabled while the body runs, so a second
        press cannot start a second job; the button comes back however the body ends."""
        self.button.disabled = True
        self._set_status(text, "busy")
        try:
            yield
        finally:
            self.button.disabled = False

    # --- status ---------------------------------------------------------------------------
    @property
    def status(self) -> str:
        """The status line as plain text (what the widget shows, without colour)."""
        return self._status_text

    def _set_status(self, text: str, kind: str) -> None:
        self._status_text = text
        self._status.value = f"<span style='color:{STATUS_COLORS[kind]}'>{html.escape(text)}</span>"

    def _show_error(self, exc: BaseException) -> None:
        self.last_error = exc
        self._set_status(f"{type(exc).__name__}: {exc}", "error")

    # --- notebook display -----------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The widget view, plus the panels as one PNG and ``repr`` for readers without
        widgets: a picture of the widget as it was when the cell displayed it."""
        return with_fallback(self.widget, [bytes(image.value) for image in self._panel_images()], repr(self), **kwargs)
