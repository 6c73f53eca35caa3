"""Playground: turn a few RunConfig knobs, press Run, watch the loss curve being drawn.

A chapter builds one Playground around its base config and the two or three knobs it is
about; the learner moves a slider, trains, and sees the new curve appear live on top of
the earlier ones, with the memory bars (or other ``panels``) and a table of results
underneath. Reruns of a config that ran before come back instantly from the run cache
(that is ``train()``'s job, and ``Run.from_cache`` says it happened), so replaying a
notebook costs nothing.

A chapter hands over the runs it has already made (``runs=``): they are drawn and
tabulated from the start, so a learner's first press adds a curve to the chapter's
comparison, and pressing Run for a config already on show adds no duplicate.

Everything the buttons do is also a plain method (``set``, ``config``, ``run``, ``click``,
``table``), so papermill, nbval and the tests drive the same code without a browser.
Plots are rendered to PNG bytes in an ``ipywidgets.Image`` (see ``panels.png``); a saved
notebook shows them as one picture where no widget can run (``panels.with_fallback``).
"""
from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import ipywidgets as widgets
from matplotlib.figure import Figure
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ftlab.config.run_config import RunConfig
from ftlab.setup.data import data_fingerprint
from ftlab.errors import ArgumentError
from ftlab.memory import MiB
from ftlab.runs.record import Run
from ftlab.runs.table import metric_rows
from ftlab.training.train import train
from ftlab.ui.widgets.base import RunnerWidget
from ftlab.ui.widgets.controls import Knob, _Control, build_controls, description_style
from ftlab.ui.widgets.panels import check_panels, loss_figure, memory_figure, panel_figure, panel_image, png

KNOB_VALUE_WIDTH = 220
"""Pixels a knob's slider and readout, or dropdown, get beside its description: ipywidgets' own
(a 300 px control with an 80 px description)."""

TABLE_METRICS = ("train_loss", "final_eval_loss", "exact_match", "seconds_per_step")
"""The final metrics the Playground's table shows, read by ``ftlab.runs.table.metric_rows``."""

_HTML_COLUMNS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("label", "label", str), ("status", "status", str), ("steps", "steps", str),
    ("train_loss", "train loss (last steps)", "{:.3f}".format), ("final_eval_loss", "final eval loss", "{:.3f}".format),
    ("exact_match", "exact match", "{:.0%}".format), ("seconds_per_step", "s / step", "{:.3f}".format),
    ("memory_mib", "memory MiB", "{:.1f}".format)]
"""(row key, column heading, formatter) of the HTML table."""


class LiveLossCallback(TrainerCallback):
    """Collects (step, loss) and (step, eval_loss) from the Trainer's logs and asks for a redraw.

    It keeps its own copy of the curve instead of reaching into train()'s Recorder: the
    logs are the public contract, and a redraw then never sees a half-written history row.
    Train-loss redraws are throttled by time, not by step count: at least ``min_interval``
    seconds apart and at least 10x the last redraw's own duration apart, so rendering never
    costs more than about a tenth of the run (a 0.2 s/step tiny run is not slowed down, a
    5 s/step real run still redraws every step). Every evaluation redraws at once.
    """

    def __init__(self, redraw: Callable[[LiveLossCallback], None], min_interval: float = 1.0) -> None:
        self.redraw = redraw
        self.min_interval = min_interval
        self.train: list[tuple[int, float]] = []
        self.evals: list[tuple[int, float]] = []
        self.draws = 0
        self.error: Exception | None = None
        self._last = 0.0
        self._cost = 0.0

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kw: Any) -> None:
        logs = logs or {}
        due = False
        if "loss" in logs and state.global_step > 0:
            self.train.append((state.global_step, float(logs["loss"])))
            due = time.perf_counter() - self._last >= max(self.min_interval, 10 * self._cost)
        if "eval_loss" in logs:
            self.evals.append((state.global_step, float(logs["eval_loss"])))
            due = True
        if due:
            self.draw()

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        self.draw()

    def draw(self) -> None:
        """Redraw; a plotting failure is kept in ``error`` and never stops the training run."""
        if self.error is not None:
            return
        started = time.perf_counter()
        try:
            self.redraw(self)
            self.draws += 1
        except Exception as exc:  # the curve is a view; losing the run over it would be worse
            self.error = exc
        self._last = time.perf_counter()
        self._cost = self._last - started


# --- what a finished run reads as ---------------------------------------------------------------


def trained_steps(run: Run) -> int:
    """The last optimizer step with a train loss: where an interrupted run stopped."""
    return max((r["step"] for r in run.history if r.get("loss") is not None), default=0)


def run_summary(run: Run, elapsed: float, live_error: Exception | None) -> tuple[str, str]:
    """(status-line text, kind) once ``run`` is back: where it came from and what it reached."""
    m = run.metrics
    facts = [f"{trained_steps(run)} steps", run.summary()]  # the run's own summary, as everywhere
    if m.get("diverged"):
        facts.append(f"loss diverged ({m['diverged']}): {m.get('divergence_advice', 'lower the learning rate')}")
    tail = f" (live plot failed: {live_error})" if live_error else ""
    if run.status == "interrupted":
        return (f"{run.label}: interrupted after step {trained_steps(run)}; kept in the table, "
                f"not cached{tail}"), "warn"
    where = f"from the run cache in {elapsed:.2f} s" if run.from_cache else f"trained in {elapsed:.1f} s"
    return f"{run.label}: {where} · {', '.join(facts)}{tail}", "ok"


def table_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per run (None where unknown): ``metric_rows``' label and metrics, plus what only
    a Playground shows (status, cache or trained, steps reached, measured memory)."""
    rows = []
    for run, metrics in zip(runs, metric_rows(runs, TABLE_METRICS)):
        rows.append({
            "label": metrics.pop("label"),
            "status": run.status,
            "source": "cache" if run.from_cache else "trained",
            "steps": trained_steps(run),
            **metrics,
            "memory_mib": run.memory.total / MiB if run.memory is not None else None,
            "config_hash": run.config_hash,
        })
    return rows


def table_html(rows: Sequence[dict[str, Any]]) -> str:
    """``table_rows`` as a compact HTML table ('cached' as the status of a cache hit, '–' for None)."""
    if not rows:
        return ""
    cell = "padding:2px 8px;text-align:right;border-bottom:1px solid #ddd"
    head = "".join(f"<th style='{cell}'>{name}</th>" for _, name, _ in _HTML_COLUMNS)
    body = []
    for row in rows:
        values = {**row, "status": "cached" if row["source"] == "cache" else row["status"]}
        cells = "".join(f"<td style='{cell}'>{html.escape(fmt(values[key])) if values[key] is not None else '–'}</td>"
                        for key, _, fmt in _HTML_COLUMNS)
        body.append(f"<tr>{cells}</tr>")
    return f"<table style='border-collapse:collapse;font-size:90%'><tr>{head}</tr>{''.join(body)}</table>"


# --- the playground ---------------------------------------------------------------------------


class Playground(RunnerWidget):
    """Knob widgets, a Run button, a live loss plot, more plot panels and a table of runs.

    ``base`` fixes every field the knobs do not touch. A knob on an unknown field raises
    ConfigError here, before anything is shown. ``callbacks`` are extra TrainerCallbacks
    given to every train() call. ``panels`` names the plots under the button, in order:
    any of ``panels.PANELS`` ("loss", "memory", "learning_rate", "grad_norm", "weight_norm",
    "tokens_per_second"). ``runs`` are the chapter's runs so far, shown from the start.
    Display it by ending a cell with ``pg``: that also saves a picture of the panels and a
    one-line summary for readers without widgets (``pg.widget`` alone saves neither). The
    button, the status line and what a press does with an error are ``RunnerWidget``'s.
    """

    def __init__(self, base: RunConfig, knobs: Sequence[Knob], runs_dir: str | Path | None = None, title: str = "",
                 callbacks: Iterable[TrainerCallback] = (), live_interval: float = 1.0,
                 panels: Sequence[str] = ("loss", "memory"), runs: Iterable[Run] = ()) -> None:
        super().__init__(title, "Run", "play", "train with these values (instant if this config ran before)",
                         "ftlab-run")
        self.base = base
        self.knobs: list[Knob] = list(knobs)
        self.runs_dir = runs_dir
        self.callbacks = list(callbacks)
        self.live_interval = live_interval
        self.panels = check_panels(panels)
        self.runs: list[Run] = list(runs)
        """The runs on show, in order: the chapter's (``runs``), then every Run produced
        here (interrupted ones included)."""
        self.live_draws = 0
        """How many times the loss plot was redrawn live during the latest run."""
        style = description_style(self.knobs)
        self._controls: dict[str, _Control] = build_controls(base, self.knobs, style)
        self._build_widgets(style)
        self.widget = self._layout()
        """The VBox to display."""
        for control in self._controls.values():
            control.observe(self._knobs_changed)
        self._knobs_changed()
        self._refresh()
        shown = f"{len(self.runs)} run{'' if len(self.runs) == 1 else 's'} shown; " if self.runs else ""
        self._set_status(f"ready: {shown}set the knobs and press Run", "info")

    def _build_widgets(self, style: dict[str, str]) -> None:
        """The label box, one image per panel and the table (the button and status line are
        ``RunnerWidget``'s)."""
        self.label_box = widgets.Text(value="", description="label", placeholder="derived from the changed knobs",
                                      style=style, layout=widgets.Layout(width="420px"))
        self._auto_label = ""
        self._images = {name: panel_image() for name in self.panels}
        self._table = widgets.HTML()
        # stable CSS classes: what the browser tests (tests/browser) and a learner's own CSS select by
        self.label_box.add_class("ftlab-label")
        self._table.add_class("ftlab-table")
        for name, image in self._images.items():
            image.add_class("ftlab-panel").add_class(f"ftlab-panel-{name}")
        for field, control in self._controls.items():
            control.input.add_class("ftlab-knob").add_class(f"ftlab-knob-{field}")
        # every knob keeps ipywidgets' usual room for its value beside the shared description: at the
        # default 300 px in all, a long field name (per_device_train_batch_size: 199 px) left a slider
        # track of 5 px and cut a dropdown's options ("adamw_tor")
        width = f"{int(style['description_width'].removesuffix('px')) + KNOB_VALUE_WIDTH}px"
        for control in self._controls.values():
            if not isinstance(control.input, widgets.Checkbox):
                control.input.layout.width = width

    def _layout(self) -> widgets.VBox:
        """Title, knobs, label and button, status, the panels side by side (wrapping), table."""
        return widgets.VBox(self._header() + [
            widgets.VBox([c.widget for c in self._controls.values()]),
            widgets.HBox([self.label_box, self.button]),
            self._status,
            widgets.HBox(list(self._images.values()), layout=widgets.Layout(flex_flow="row wrap")),
            self._table,
        ]).add_class("ftlab-playground")

    # --- values -------------------------------------------------------------------------
    @property
    def controls(self) -> dict[str, widgets.Widget]:
        """Field -> its value widget (slider, dropdown, checkbox), for layouts and tests."""
        return {field: c.input for field, c in self._controls.items()}

    def values(self) -> dict[str, Any]:
        """The current knob values, by field."""
        return {field: c.get() for field, c in self._controls.items()}

    def set(self, **values: Any) -> Playground:
        """Move knobs as if by hand. A field without a knob here raises ArgumentError (it may be
        no RunConfig field at all, so it is this call that is wrong); a value the widget cannot
        show raises ConfigError now; a value RunConfig rejects (learning_rate=5) is kept and
        fails at config()/run()."""
        for field, value in values.items():
            if field not in self._controls:
                known = ", ".join(self._controls) or "none"
                raise ArgumentError("Playground.set", field, value,
                                    f"a knob of this playground; its knobs are: {known}")
        for field, value in values.items():
            self._controls[field].set(value)
        return self

    def config(self) -> RunConfig:
        """The RunConfig the widgets describe now (ConfigError if RunConfig rejects a value);
        a knob shown in other units (``Epochs``) sets the fields it stands for."""
        values = self.values()
        fields: dict[str, Any] = {}
        for knob in self.knobs:
            fields.update(knob.resolve(values[knob.field], values, self.base))
        return self.base.replace(**fields)

    def default_label(self) -> str:
        """'lr=1e-3, cosine': the knobs that differ from the base config, or 'base'."""
        parts = []
        for knob in self.knobs:
            control = self._controls[knob.field]
            value = control.get()
            if value != knob.base_value(self.base):
                parts.append(knob.describe(value, control))
        return ", ".join(parts) or "base"

    @property
    def label(self) -> str:
        """The label the next run gets: the text box if filled, else the derived one."""
        return self.label_box.value.strip() or self.default_label()

    def _knobs_changed(self) -> None:
        # the text box follows the knobs until the learner types their own label
        new = self.default_label()
        if self.label_box.value in ("", self._auto_label):
            self.label_box.value = new
        self._auto_label = new

    # --- running ------------------------------------------------------------------------
    def run(self, label: str | None = None) -> Run:
        """Train the current config (or fetch it from the run cache) and add it to ``runs``;
        a config already on show (``shown_run``) is not added again: that run is returned.

        An error in the config or in training is shown in the status line and re-raised, so
        a headless notebook fails loudly; a press of Run shows any error, a later one too
        (``RunnerWidget``). An interrupted run is kept in ``runs`` with status 'interrupted'.
        """
        label = label or self.label
        self.last_error = None
        try:
            config = self.config()
        except Exception as exc:
            self._show_error(exc)
            raise
        shown = self.shown_run(config)
        if shown is not None:
            self.live_draws = 0
            self._set_status(f"already shown: {shown.label or shown.config_hash}", "info")
            return shown
        live = LiveLossCallback(lambda cb: self._draw_live(cb, label, config), self.live_interval)
        run, elapsed = self._train(config, label, live)
        self.runs.append(run)
        self.live_draws = live.draws
        self._refresh()
        self._set_status(*run_summary(run, elapsed, live.error))
        self.label_box.value = self._auto_label = self.default_label()  # a typed label was for this run only
        return run

    def shown_run(self, config: RunConfig) -> Run | None:
        """The completed run on show for ``config`` (same hash, same data as the file holds
        now), if any: training it again would add a duplicate row and legend entry and
        teach nothing, while an edited data file or an interrupted run is worth a new one."""
        key = (config.hash(), data_fingerprint(config))
        return next((r for r in self.runs
                     if r.status == "completed" and (r.config_hash, r.metrics.get("data_sha256")) == key), None)

    def _train(self, config: RunConfig, label: str, live: LiveLossCallback) -> tuple[Run, float]:
        """train() with the button disabled meanwhile: (the Run, seconds it took). A failure
        goes to the status line and is re-raised."""
        with self._busy(f"{label}: loading model and data…"):
            started = time.perf_counter()
            try:
                run = train(config, label=label, runs_dir=self.runs_dir, callbacks=[live, *self.callbacks],
                            progress=False)
            except Exception as exc:
                self._show_error(exc)
                self._refresh()
                raise
            except KeyboardInterrupt as exc:
                self.last_error = exc
                self._set_status(f"{label}: interrupted before training started; nothing to keep", "warn")
                self._refresh()
                raise
        return run, time.perf_counter() - started

    def _press(self) -> None:
        """The Run button: ``run`` with the label in the text box."""
        self.run()

    # --- drawing --------------------------------------------------------------------------
    def loss_figure(self, live: LiveLossCallback | None = None, live_label: str = "",
                    max_steps: int | None = None) -> Figure:
        """All runs' loss curves (plus the one being trained): also for static notebook output."""
        if live is None:
            return loss_figure(self.runs, self.title or "Loss")
        return loss_figure(self.runs, self.title or "Loss", live.train, live.evals, live_label, max_steps)

    def memory_figure(self) -> Figure:
        """Measured training memory of every run (weights, gradients, optimizer, activations)."""
        return memory_figure(self.runs)

    def figure(self, panel: str) -> Figure:
        """The figure of one panel (see ``panels``) over every run so far, shown or not."""
        return panel_figure(panel, self.runs, self.title)

    def _draw_live(self, live: LiveLossCallback, label: str, config: RunConfig) -> None:
        if "loss" in self._images:
            self._images["loss"].value = png(self.loss_figure(live, label, config.max_steps))
        step, loss = live.train[-1] if live.train else (0, None)
        facts = [f"step {step}/{config.max_steps}"]
        if loss is not None:
            facts.append(f"loss {loss:.3f}")
        if live.evals:
            facts.append(f"eval loss {live.evals[-1][1]:.3f}")
        self._set_status(f"{label}: training · {' · '.join(facts)}", "busy")

    def _refresh(self) -> None:
        for name, image in self._images.items():
            image.value = png(self.figure(name))
        self._table.value = table_html(self.table())

    def table(self) -> list[dict[str, Any]]:
        """One row per run: what the HTML table shows, as plain values (None where unknown)."""
        return table_rows(self.runs)

    # --- notebook display -----------------------------------------------------------------
    def _panel_images(self) -> list[widgets.Image]:
        return list(self._images.values())

    def __repr__(self) -> str:
        """One line: title, knobs, runs and the best final eval loss among them."""
        title = " ".join(self.title.split())
        text = f"Playground{f' {title!r}' if title else ''}: knobs {', '.join(self._controls) or 'none'}; "
        text += f"{len(self.runs)} run{'' if len(self.runs) == 1 else 's'}"
        scored = [r for r in self.runs if isinstance(r.metrics.get("final_eval_loss"), float)]
        if scored:
            best = min(scored, key=lambda r: r.metrics["final_eval_loss"])
            text += f", best final eval loss {best.metrics['final_eval_loss']:.3f} ({best.label or best.config_hash})"
        return text
