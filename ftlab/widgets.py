"""Playground: turn a few RunConfig knobs, press Run, watch the loss curve being drawn.

A chapter builds one Playground around its base config and the two or three knobs it is
about; the learner moves a slider, trains, and sees the new curve appear live on top of
the earlier ones, with the memory bars and a table of results underneath. Reruns of a
config that ran before come back instantly from the run cache (that is ``train()``'s
job), so replaying a notebook costs nothing.

Everything the buttons do is also a plain method (``set``, ``config``, ``run``, ``click``,
``table``), so papermill, nbval and the tests drive the same code without a browser.
Plots are rendered to PNG bytes in an ``ipywidgets.Image``: updating one is a plain
widget-state change, which works headless, streams to the browser while the cell is still
busy training, and needs no ``display()`` call and no pyplot global state.

    from ftlab.widgets import Playground, LogSlider, Dropdown, Toggle
    pg = Playground(base, [LogSlider("learning_rate", 1e-5, 1e-2),
                           Dropdown("lr_scheduler_type", ["linear", "cosine", "constant"])])
    pg                      # the widget
    pg.set(learning_rate=1e-3, lr_scheduler_type="cosine"); run = pg.run()
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
import html
import io
import math
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import ipywidgets as widgets
from matplotlib.figure import Figure
from transformers import TrainerCallback

from .config import RunConfig
from .errors import ConfigError
from .memory import MiB
from .plot import plot_losses, plot_memory
from .run import Run
from .train import train

__all__ = ["Playground", "LogSlider", "Slider", "Dropdown", "Toggle", "Knob", "LiveLossCallback"]

SHORT_NAMES: dict[str, str] = {
    "learning_rate": "lr", "weight_decay": "wd", "gradient_checkpointing": "ckpt", "warmup_steps": "warmup",
    "per_device_train_batch_size": "bs", "gradient_accumulation_steps": "accum", "max_steps": "steps",
    "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "lora dropout", "neftune_noise_alpha": "neftune",
    "label_smoothing_factor": "smoothing", "max_grad_norm": "clip", "max_seq_length": "seq",
    "load_in_4bit": "4bit", "load_in_8bit": "8bit",
}
"""How a changed knob is named in a default run label: labels must fit a plot legend."""

VALUE_ONLY_FIELDS = frozenset({"lr_scheduler_type", "optim", "model"})
"""Fields whose values name themselves ('cosine', 'adamw_8bit'): the label shows just the value."""

_FIELDS = {f.name for f in dataclasses.fields(RunConfig)}


def _fmt(value: Any) -> str:
    """Short, exact-enough number formatting for labels: 1e-3, 3.2e-4, 0.1, 12."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or value == 0 or not math.isfinite(value):
        return str(value)
    if 1e-2 <= abs(value) < 1e4:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def _round_sig(value: float, digits: int) -> float:
    return float(f"{value:.{digits - 1}e}") if value else 0.0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- controls: one widget (or a small group) per knob --------------------------------------


class _Control(ABC):
    """A knob's live widget: get/set the RunConfig value it stands for and watch changes.

    ``set`` raises ConfigError only for a value the widget cannot show (a string on a
    slider, 0 on a log scale, a choice not in a dropdown). A number outside the slider's
    range widens the range instead of being clamped silently: the config must hold what
    was asked for, and RunConfig, not the slider, decides whether it is allowed.
    """

    field: str
    widget: widgets.Widget
    """What the Playground lays out."""
    input: widgets.Widget
    """The main value widget (the slider, dropdown or checkbox)."""

    @abstractmethod
    def get(self) -> Any:
        """The RunConfig value the widget shows now."""

    @abstractmethod
    def set(self, value: Any) -> None:
        """Show ``value`` (ConfigError if the widget cannot show it)."""

    def observe(self, callback: Callable[[], None]) -> None:
        self.input.observe(lambda change: callback(), names="value")

    def _reject(self, value: Any, expected: str) -> None:
        raise ConfigError(self.field, value, expected)


class _LogControl(_Control):
    def __init__(self, knob: "LogSlider", initial: Any, zero: bool, description: str, style: dict) -> None:
        self.field = knob.field
        self.input = widgets.FloatLogSlider(value=knob.min, base=10, min=math.log10(knob.min), max=math.log10(knob.max),
                                            step=0.1, readout_format=".1e", description=description, style=style,
                                            continuous_update=False)
        self._exact: tuple[float, float] | None = None
        self.zero: widgets.Checkbox | None = None
        if zero:
            self.zero = widgets.Checkbox(value=False, description="0 (off)", indent=False,
                                         tooltip=f"{knob.field} = 0 exactly: a log scale cannot reach 0",
                                         layout=widgets.Layout(width="auto"))
            self.zero.observe(lambda change: setattr(self.input, "disabled", change["new"]), names="value")
            self.widget = widgets.HBox([self.input, self.zero])
        else:
            self.widget = self.input
        if zero and initial == 0:
            self.input.value = 10 ** ((self.input.min + self.input.max) / 2)  # where unticking "0" lands
        self.set(initial)

    def get(self) -> float:
        if self.zero is not None and self.zero.value:
            return 0.0
        v = self.input.value
        if self._exact is not None and v == self._exact[0]:
            return self._exact[1]  # a value given to set() is kept exactly, not rounded to the slider's grid
        # a dragged value sits on 10**(k/10): 1.995e-4 means 2e-4, and two significant digits
        # are what the readout shows, so the config (and its cache hash) gets what the learner read
        return _round_sig(v, 2)

    def set(self, value: Any) -> None:
        if not _is_number(value) or not math.isfinite(value):
            self._reject(value, "a finite number")
        if value == 0 and self.zero is not None:
            self.zero.value = True
            return
        if value <= 0:
            self._reject(value, "a value > 0: a log-scale slider cannot show 0 or negatives"
                         + ("" if self.zero is None else " (use 0 for the '0 (off)' box)"))
        exponent = math.log10(value)
        self.input.min = min(self.input.min, math.floor(exponent))
        self.input.max = max(self.input.max, math.ceil(exponent))
        self.input.value = float(value)
        self._exact = (self.input.value, float(value))
        if self.zero is not None:
            self.zero.value = False

    def observe(self, callback: Callable[[], None]) -> None:
        super().observe(callback)
        if self.zero is not None:
            self.zero.observe(lambda change: callback(), names="value")


class _LinearControl(_Control):
    def __init__(self, knob: "Slider", initial: Any, description: str, style: dict) -> None:
        self.field = knob.field
        self.integer = all(isinstance(v, int) and not isinstance(v, bool) for v in (knob.min, knob.max, knob.step))
        self._decimals = max(0, -Decimal(str(knob.step)).as_tuple().exponent)  # type: ignore[operator]
        self._exact: tuple[float, Any] | None = None
        if self.integer:
            self.input = widgets.IntSlider(value=knob.min, min=knob.min, max=knob.max, step=knob.step,
                                           description=description, style=style, continuous_update=False)
        else:
            self.input = widgets.FloatSlider(value=knob.min, min=knob.min, max=knob.max, step=knob.step,
                                             readout_format=f".{self._decimals}f", description=description,
                                             style=style, continuous_update=False)
        self.widget = self.input
        self.set(initial)

    def get(self) -> int | float:
        v = self.input.value
        if self._exact is not None and v == self._exact[0]:
            return self._exact[1]
        # the browser sends 0.30000000000000004; the step's decimals are the value meant
        return int(v) if self.integer else round(float(v), self._decimals)

    def set(self, value: Any) -> None:
        if not _is_number(value) or not math.isfinite(value):
            self._reject(value, "a finite number")
        if self.integer and not isinstance(value, int):
            self._reject(value, "an int: this slider moves in whole steps")
        self.input.min = min(self.input.min, value)
        self.input.max = max(self.input.max, value)
        self.input.value = value
        self._exact = (self.input.value, value)


class _DropdownControl(_Control):
    def __init__(self, knob: "Dropdown", initial: Any, description: str, style: dict) -> None:
        self.field = knob.field
        self.labels, self.values = knob.pairs()
        # the widget's values are indices: options may be None or unhashable (tuples of modules)
        self.input = widgets.Dropdown(options=list(zip(self.labels, range(len(self.values)))), value=0,
                                      description=description, style=style)
        self.widget = self.input
        self.set(initial)

    def index(self, value: Any) -> int | None:
        for i, v in enumerate(self.values):
            if v == value and type(v) is type(value):  # True != 1 here: a bool knob is not an int knob
                return i
        for i, v in enumerate(self.values):
            if v == value:
                return i
        return None

    def get(self) -> Any:
        return self.values[self.input.value]

    def label_of(self, value: Any) -> str:
        i = self.index(value)
        return self.labels[i] if i is not None else _fmt(value)

    def set(self, value: Any) -> None:
        i = self.index(value)
        if i is None:
            self._reject(value, f"one of this dropdown's options: {', '.join(map(repr, self.values))}")
        self.input.value = i


class _ToggleControl(_Control):
    def __init__(self, knob: "Toggle", initial: Any, description: str) -> None:
        self.field = knob.field
        self.input = widgets.Checkbox(value=False, description=description, indent=False)
        self.widget = self.input
        self.set(initial)

    def get(self) -> bool:
        return bool(self.input.value)

    def set(self, value: Any) -> None:
        if not isinstance(value, bool):
            self._reject(value, "True or False")
        self.input.value = value


# --- knob descriptions ------------------------------------------------------------------------


class Knob(ABC):
    """A description of one control: which RunConfig field it sets and how it is shown.

    Knobs are plain frozen dataclasses so a chapter can list them in one line and reuse
    them; the Playground builds the widgets. ``value=None`` starts from the base config.
    """

    field: str
    value: Any
    label: str | None

    @abstractmethod
    def _build(self, initial: Any, base: RunConfig, style: dict) -> _Control:
        """The live control for this knob, starting at ``initial``."""

    def short_name(self) -> str:
        return self.label or SHORT_NAMES.get(self.field, self.field)

    def describe(self, value: Any, control: _Control) -> str:
        """How this knob's value reads in a run label."""
        if self.field in VALUE_ONLY_FIELDS:
            return _fmt(value)
        return f"{self.short_name()}={_fmt(value)}"


@dataclass(frozen=True)
class LogSlider(Knob):
    """A log-scale slider (learning_rate, weight_decay): these knobs matter by factors of 10.

    Values between 10 stops per decade are read as two significant digits (the slider at
    10**-3.7 means 2e-4). ``zero=None`` adds a "0 (off)" checkbox when the field accepts 0
    (weight_decay, max_grad_norm): 0 is the most common weight decay, yet no log scale can
    reach it, and a checkbox says "off" more clearly than a tiny minimum would.
    """

    field: str
    min: float
    max: float
    value: float | None = None
    label: str | None = None
    zero: bool | None = None

    def __post_init__(self) -> None:
        if not (_is_number(self.min) and _is_number(self.max) and 0 < self.min < self.max):
            raise ValueError(f"LogSlider({self.field!r}): need 0 < min < max, got min={self.min!r}, max={self.max!r}")

    def _build(self, initial: Any, base: RunConfig, style: dict) -> _Control:
        zero = self.zero
        if zero is None:
            try:
                base.replace(**{self.field: 0.0})
                zero = True
            except ConfigError:
                zero = False
        return _LogControl(self, initial, zero, self.label or self.field, style)


@dataclass(frozen=True)
class Slider(Knob):
    """A linear slider: an IntSlider when min, max and step are all ints, else a FloatSlider."""

    field: str
    min: float
    max: float
    step: float
    value: float | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if not (all(_is_number(v) for v in (self.min, self.max, self.step)) and self.min < self.max and self.step > 0):
            raise ValueError(f"Slider({self.field!r}): need min < max and step > 0, "
                             f"got min={self.min!r}, max={self.max!r}, step={self.step!r}")

    def _build(self, initial: Any, base: RunConfig, style: dict) -> _Control:
        return _LinearControl(self, initial, self.label or self.field, style)


@dataclass(frozen=True)
class Dropdown(Knob):
    """A choice among a few values (scheduler, optimizer, LoRA targets).

    ``options`` is a list of values, or a mapping ``{shown label: value}`` for values
    that read badly (``{"off": None, "5": 5.0}`` for neftune_noise_alpha).
    """

    field: str
    options: Sequence[Any] | Mapping[str, Any]
    value: Any = None
    label: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.options, Mapping):
            object.__setattr__(self, "options", dict(self.options))
        else:
            object.__setattr__(self, "options", tuple(self.options))
        if not self.options:
            raise ValueError(f"Dropdown({self.field!r}): options is empty")

    def pairs(self) -> tuple[list[str], list[Any]]:
        if isinstance(self.options, Mapping):
            return [str(k) for k in self.options], list(self.options.values())
        return [_fmt(v) for v in self.options], list(self.options)

    def _build(self, initial: Any, base: RunConfig, style: dict) -> _Control:
        return _DropdownControl(self, initial, self.label or self.field, style)

    def describe(self, value: Any, control: _Control) -> str:
        shown = control.label_of(value) if isinstance(control, _DropdownControl) else _fmt(value)
        return shown if self.field in VALUE_ONLY_FIELDS else f"{self.short_name()}={shown}"


@dataclass(frozen=True)
class Toggle(Knob):
    """An on/off checkbox (gradient_checkpointing, packing, load_in_4bit)."""

    field: str
    value: bool | None = None
    label: str | None = None

    def _build(self, initial: Any, base: RunConfig, style: dict) -> _Control:
        return _ToggleControl(self, initial, self.label or self.field)

    def describe(self, value: Any, control: _Control) -> str:
        return self.short_name() if value else f"no {self.short_name()}"


# --- the live plot callback -----------------------------------------------------------------


class LiveLossCallback(TrainerCallback):
    """Collects (step, loss) and (step, eval_loss) from the Trainer's logs and asks for a redraw.

    It keeps its own copy of the curve instead of reaching into train()'s Recorder: the
    logs are the public contract, and a redraw then never sees a half-written history row.
    Train-loss redraws are throttled by time, not by step count: at least ``min_interval``
    seconds apart and at least 10x the last redraw's own duration apart, so rendering never
    costs more than about a tenth of the run (a 0.2 s/step tiny run is not slowed down, a
    5 s/step real run still redraws every step). Every evaluation redraws at once.
    """

    def __init__(self, redraw: Callable[["LiveLossCallback"], None], min_interval: float = 1.0) -> None:
        self.redraw = redraw
        self.min_interval = min_interval
        self.train: list[tuple[int, float]] = []
        self.evals: list[tuple[int, float]] = []
        self.started = False
        """True once a Trainer was built: False after train() means the Run came from the cache."""
        self.draws = 0
        self.error: Exception | None = None
        self._last = 0.0
        self._cost = 0.0

    def on_init_end(self, args, state, control, **kw):
        self.started = True

    def on_log(self, args, state, control, logs=None, **kw):
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

    def on_train_end(self, args, state, control, **kw):
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


# --- the playground ---------------------------------------------------------------------------


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


_COLORS = {"info": "#555", "busy": "#1f5fbf", "ok": "#1a7f37", "warn": "#b35900", "error": "#c62828"}


class Playground:
    """Knob widgets, a Run button, a live loss plot, a memory panel and a table of runs.

    ``base`` fixes every field the knobs do not touch. A knob on an unknown field raises
    ConfigError here, before anything is shown. ``callbacks`` are extra TrainerCallbacks
    given to every train() call. Display it by ending a cell with ``pg`` (or ``pg.widget``).
    """

    def __init__(self, base: RunConfig, knobs: Sequence[Knob], runs_dir: str | Path | None = None, title: str = "",
                 callbacks: Iterable[TrainerCallback] = (), live_interval: float = 1.0) -> None:
        self.base = base
        self.knobs: list[Knob] = list(knobs)
        self.runs_dir = runs_dir
        self.title = title
        self.callbacks = list(callbacks)
        self.live_interval = live_interval
        self.runs: list[Run] = []
        """Every Run produced here, in order (interrupted ones included)."""
        self.live_draws = 0
        """How many times the loss plot was redrawn live during the latest run."""
        self.last_error: BaseException | None = None
        self._source: dict[int, tuple[Run, str]] = {}
        self._status_text = ""

        seen: set[str] = set()
        width = max([len(k.label or k.field) for k in self.knobs] + [8])
        style = {"description_width": f"{width * 7 + 10}px"}  # aligned sliders despite long field names
        self.controls: dict[str, widgets.Widget] = {}
        """Field -> its value widget (slider, dropdown, checkbox), for layouts and tests."""
        self._controls: dict[str, _Control] = {}
        for knob in self.knobs:
            if knob.field in seen:
                raise ConfigError(knob.field, knob.value, "one knob per field: this field has two")
            seen.add(knob.field)
            if knob.field not in _FIELDS:
                base.replace(**{knob.field: knob.value})  # raises ConfigError with a 'did you mean' hint
            initial = getattr(base, knob.field) if knob.value is None else knob.value
            if initial is None and not isinstance(knob, Dropdown):  # a dropdown may offer None ("off")
                raise ConfigError(knob.field, None, f"a start value: the base config has None here, so give "
                                                    f"{type(knob).__name__}(..., value=...)")
            base.replace(**{knob.field: initial})  # the starting point must itself be a valid config
            control = knob._build(initial, base, style)
            self._controls[knob.field] = control
            self.controls[knob.field] = control.input

        self.label_box = widgets.Text(value="", description="label", placeholder="derived from the changed knobs",
                                   style={"description_width": style["description_width"]},
                                   layout=widgets.Layout(width="420px"))
        self._auto_label = ""
        self.button = widgets.Button(description="Run", button_style="primary", icon="play",
                                     tooltip="train with these values (instant if this config ran before)")
        self.button.on_click(lambda _button: self._on_click())
        self._status = widgets.HTML()
        self._loss_image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self._memory_image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self._table = widgets.HTML()
        for control in self._controls.values():
            control.observe(self._knobs_changed)

        header = [widgets.HTML(f"<h3>{html.escape(title)}</h3>")] if title else []
        self.widget = widgets.VBox(header + [
            widgets.VBox([c.widget for c in self._controls.values()]),
            widgets.HBox([self.label_box, self.button]),
            self._status,
            widgets.HBox([self._loss_image, self._memory_image], layout=widgets.Layout(flex_flow="row wrap")),
            self._table,
        ])
        """The VBox to display."""
        self._knobs_changed()
        self._refresh()
        self._set_status("ready: set the knobs and press Run", "info")

    # --- values -------------------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        """The current knob values, by field."""
        return {field: c.get() for field, c in self._controls.items()}

    def set(self, **values: Any) -> "Playground":
        """Move knobs as if by hand. A value the widget cannot show raises ConfigError now;
        a value RunConfig rejects (learning_rate=5) is kept and fails at config()/run()."""
        for field, value in values.items():
            if field not in self._controls:
                known = ", ".join(self._controls) or "none"
                raise ConfigError(field, value, f"a knob of this playground; its knobs are: {known}")
        for field, value in values.items():
            self._controls[field].set(value)
        return self

    def config(self) -> RunConfig:
        """The RunConfig the widgets describe now (ConfigError if RunConfig rejects a value)."""
        return self.base.replace(**self.values())

    def default_label(self) -> str:
        """'lr=1e-3, cosine': the knobs that differ from the base config, or 'base'."""
        parts = []
        for knob in self.knobs:
            value = self._controls[knob.field].get()
            if value != getattr(self.base, knob.field):
                parts.append(knob.describe(value, self._controls[knob.field]))
        return ", ".join(parts) or "base"

    @property
    def label(self) -> str:
        """The label the next run gets: the text box if filled, else the derived one."""
        return self.label_box.value.strip() or self.default_label()

    @property
    def status(self) -> str:
        """The status line as plain text (what the widget shows, without colour)."""
        return self._status_text

    def _knobs_changed(self) -> None:
        # the text box follows the knobs until the learner types their own label
        new = self.default_label()
        if self.label_box.value in ("", self._auto_label):
            self.label_box.value = new
        self._auto_label = new

    # --- running ------------------------------------------------------------------------
    def run(self, label: str | None = None) -> Run:
        """Train the current config (or fetch it from the run cache) and add it to ``runs``.

        Errors are shown in the status line and re-raised, so a headless notebook fails
        loudly. An interrupted run is kept in ``runs`` with status 'interrupted'.
        """
        label = label or self.label
        self.last_error = None
        try:
            config = self.config()
        except Exception as exc:
            self._show_error(exc)
            raise
        live = LiveLossCallback(lambda cb: self._draw_live(cb, label, config), self.live_interval)
        self.button.disabled = True
        self._set_status(f"{label}: loading model and data…", "busy")
        started = time.perf_counter()
        try:
            run = train(config, label=label, runs_dir=self.runs_dir, callbacks=[live, *self.callbacks], progress=False)
        except Exception as exc:
            self._show_error(exc)
            self._refresh()
            raise
        except KeyboardInterrupt as exc:
            self.last_error = exc
            self._set_status(f"{label}: interrupted before training started; nothing to keep", "warn")
            self._refresh()
            raise
        finally:
            self.button.disabled = False
        elapsed = time.perf_counter() - started
        self.runs.append(run)
        source = "trained" if live.started else "cache"
        self._source[id(run)] = (run, source)
        self.live_draws = live.draws
        self._refresh()
        self._set_status(*self._summary(run, source, elapsed, live))
        self.label_box.value = self._auto_label = self.default_label()  # a typed label was for this run only
        return run

    def click(self) -> None:
        """Press the Run button: what a learner's click does (errors go to the status line)."""
        self.button.click()

    def _on_click(self) -> None:
        try:
            self.run()
        except Exception:
            pass  # run() already put the message in the status line; a widget shows no traceback
        except KeyboardInterrupt:
            pass  # the stop button: the status line says what was kept

    def _summary(self, run: Run, source: str, elapsed: float, live: LiveLossCallback) -> tuple[str, str]:
        m = run.metrics
        facts = [f"{self._steps(run)} steps"]
        if isinstance(m.get("final_eval_loss"), float):
            facts.append(f"eval loss {m['initial_eval_loss']:.3f} → {m['final_eval_loss']:.3f}")
        if isinstance(m.get("exact_match"), float):
            facts.append(f"exact match {m['exact_match']:.0%}")
        if m.get("diverged"):
            facts.append("loss diverged (NaN/inf)")
        tail = f" (live plot failed: {live.error})" if live.error else ""
        if run.status == "interrupted":
            return (f"{run.label}: interrupted after step {self._steps(run)}; kept in the table, "
                    f"not cached{tail}"), "warn"
        where = f"from the run cache in {elapsed:.2f} s" if source == "cache" else f"trained in {elapsed:.1f} s"
        return f"{run.label}: {where} · {', '.join(facts)}{tail}", "ok"

    # --- drawing --------------------------------------------------------------------------
    def loss_figure(self, live: LiveLossCallback | None = None, live_label: str = "",
                    max_steps: int | None = None) -> Figure:
        """All runs' loss curves (plus the one being trained): also for static notebook output."""
        fig = Figure(figsize=(7, 4), layout="constrained")
        ax = fig.add_subplot()
        if self.runs:
            plot_losses(self.runs, ax=ax, title=self.title or "Loss")
        else:
            ax.set_xlabel("optimizer step")
            ax.set_ylabel("cross-entropy loss")
            ax.set_title(self.title or "Loss")
            ax.grid(alpha=0.3)
        if live is not None:
            color = f"C{len(self.runs) % 10}"  # the colour it keeps once it joins self.runs
            if live.train:
                ax.plot(*zip(*live.train), color=color, alpha=0.6, lw=1, label=f"{live_label} train (live)")
            if live.evals:
                ax.plot(*zip(*live.evals), color=color, marker="o", lw=2, label=f"{live_label} eval (live)")
            if max_steps:
                ax.set_xlim(0, max([max_steps] + [r.config.max_steps for r in self.runs]))  # no jumping x axis
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no runs yet: press Run", ha="center", va="center", transform=ax.transAxes, color="#888")
        return fig

    def memory_figure(self) -> Figure:
        """Measured training memory of every run (weights, gradients, optimizer, activations)."""
        if any(r.memory is not None for r in self.runs):
            return plot_memory(self.runs)
        fig = Figure(figsize=(5, 4), layout="constrained")
        ax = fig.add_subplot()
        ax.set_title("Training memory (measured)")
        ax.text(0.5, 0.5, "no runs yet", ha="center", va="center", transform=ax.transAxes, color="#888")
        ax.set_axis_off()
        return fig

    def _draw_live(self, live: LiveLossCallback, label: str, config: RunConfig) -> None:
        self._loss_image.value = _png(self.loss_figure(live, label, config.max_steps))
        step, loss = live.train[-1] if live.train else (0, None)
        facts = [f"step {step}/{config.max_steps}"]
        if loss is not None:
            facts.append(f"loss {loss:.3f}")
        if live.evals:
            facts.append(f"eval loss {live.evals[-1][1]:.3f}")
        self._set_status(f"{label}: training · {' · '.join(facts)}", "busy")

    def _refresh(self) -> None:
        self._loss_image.value = _png(self.loss_figure())
        self._memory_image.value = _png(self.memory_figure())
        self._table.value = self._table_html()

    # --- table ----------------------------------------------------------------------------
    @staticmethod
    def _steps(run: Run) -> int:
        steps = [r["step"] for r in run.history if r.get("loss") is not None]
        return max(steps, default=0)

    def table(self) -> list[dict[str, Any]]:
        """One row per run: what the HTML table shows, as plain values (None where unknown)."""
        rows = []
        for run in self.runs:
            m = run.metrics
            entry = self._source.get(id(run))
            rows.append({
                "label": run.label,
                "status": run.status,
                "source": entry[1] if entry and entry[0] is run else "",
                "steps": self._steps(run),
                "final_train_loss": m.get("final_train_loss"),
                "final_eval_loss": m.get("final_eval_loss"),
                "exact_match": m.get("exact_match"),
                "seconds_per_step": m.get("seconds_per_step"),
                "memory_mib": run.memory.total / MiB if run.memory is not None else None,
                "config_hash": run.config_hash,
            })
        return rows

    def _table_html(self) -> str:
        if not self.runs:
            return ""
        columns = [("label", "label", str), ("status", "status", str), ("steps", "steps", str),
                   ("final_train_loss", "final train loss", "{:.3f}".format),
                   ("final_eval_loss", "final eval loss", "{:.3f}".format),
                   ("exact_match", "exact match", "{:.0%}".format),
                   ("seconds_per_step", "s / step", "{:.3f}".format),
                   ("memory_mib", "memory MiB", "{:.1f}".format)]
        cell = "padding:2px 8px;text-align:right;border-bottom:1px solid #ddd"
        head = "".join(f"<th style='{cell}'>{name}</th>" for _, name, _ in columns)
        body = []
        for row in self.table():
            status = row["status"] if row["source"] != "cache" else "cached"
            values = {**row, "status": status}
            cells = "".join(f"<td style='{cell}'>{html.escape(fmt(values[key])) if values[key] is not None else '–'}</td>"
                            for key, _, fmt in columns)
            body.append(f"<tr>{cells}</tr>")
        return f"<table style='border-collapse:collapse;font-size:90%'><tr>{head}</tr>{''.join(body)}</table>"

    # --- status ---------------------------------------------------------------------------
    def _set_status(self, text: str, kind: str) -> None:
        self._status_text = text
        self._status.value = f"<span style='color:{_COLORS[kind]}'>{html.escape(text)}</span>"

    def _show_error(self, exc: BaseException) -> None:
        self.last_error = exc
        self._set_status(f"{type(exc).__name__}: {exc}", "error")

    # --- notebook display -----------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self) -> None:
        from IPython.display import display  # only IPython calls this, so a frontend is there
        display(self.widget)

    def __repr__(self) -> str:
        return f"Playground({', '.join(self._controls)}; {len(self.runs)} runs)"


class MemoryPredictor:
    """Sliders over model size, method, batch, sequence length, checkpointing, optimizer and
    precision; the predicted memory breakdown (``ftlab.estimate``) redraws on every change.

    Nothing is loaded or trained, so it answers "will it fit?" instantly, also for model
    sizes this machine could never hold. ``predict()`` is the same computation as a plain
    call, for headless use.
    """

    def __init__(self) -> None:
        from .estimate import MODEL_SIZES

        self._sizes = MODEL_SIZES
        self.model = widgets.Dropdown(options=["tiny", "smollm2-135m", *MODEL_SIZES], value="smollm2-135m", description="model")
        self.method = widgets.Dropdown(options=["full", "lora", "qlora"], value="lora", description="method")
        self.batch = widgets.IntSlider(value=4, min=1, max=64, description="batch")
        self.seq_len = widgets.IntSlider(value=512, min=32, max=8192, step=32, description="seq len")
        self.checkpointing = widgets.Checkbox(value=False, description="gradient checkpointing")
        self.optim = widgets.Dropdown(options=["adamw_torch", "adamw_8bit", "adafactor", "sgd"], value="adamw_torch", description="optimizer")
        self.bf16 = widgets.Checkbox(value=False, description="bf16 autocast")
        self.image = widgets.Image(format="png")
        self.summary = widgets.HTML()
        controls = [self.model, self.method, self.batch, self.seq_len, self.checkpointing, self.optim, self.bf16]
        for control in controls:
            control.observe(lambda change: self.redraw(), names="value")
        self.widget = widgets.HBox([widgets.VBox(controls), widgets.VBox([self.image, self.summary])])
        self.redraw()

    def config(self) -> RunConfig:
        name = self.model.value
        return RunConfig(model=name if name in ("tiny", "smollm2-135m") else "smollm2-135m",
                         lora_r=0 if self.method.value == "full" else 16, load_in_4bit=self.method.value == "qlora",
                         per_device_train_batch_size=self.batch.value, max_seq_length=max(16, self.seq_len.value),
                         gradient_checkpointing=self.checkpointing.value, optim=self.optim.value, bf16=self.bf16.value)

    def predict(self):
        from .estimate import estimate

        arch = self._sizes.get(self.model.value)
        return estimate(self.config(), seq_len=self.seq_len.value, model_config=arch)

    def redraw(self) -> None:
        breakdown = self.predict()
        fig = plot_memory({f"{self.model.value} {self.method.value}": breakdown}, title="Predicted memory of one step")
        self.image.value = _png(fig)
        gib = breakdown.total / 2 ** 30
        self.summary.value = f"<b>{gib:.2f} GiB</b> predicted (" + ", ".join(
            f"{k} {v:,.0f} MiB" for k, v in breakdown.mib().items() if k != "total" and v is not None) + ")"

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)
