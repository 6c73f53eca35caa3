"""Knobs and their controls: which RunConfig field a widget sets, and the widget that shows it.

A ``Knob`` (``LogSlider``, ``Slider``, ``Dropdown``, ``Toggle``) is a frozen description a
chapter writes in one line; ``build_controls`` turns a list of them into live ``_Control``
objects, each wrapping one ipywidget (or a small group) with ``get``/``set`` in RunConfig
terms. Keeping the two apart lets a chapter reuse a knob list while every Playground gets
its own widgets.
"""
from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Mapping, Sequence

import ipywidgets as widgets

from ftlab.config.run_config import RunConfig, is_finite_number
from ftlab.errors import ConfigError

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
    """``value`` to ``digits`` significant digits: what a slider's readout shows of it."""
    return float(f"{value:.{digits - 1}e}") if value else 0.0


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
        """Call ``callback`` whenever the learner (or ``set``) changes the value."""
        self.input.observe(lambda change: callback(), names="value")

    def _reject(self, value: Any, expected: str) -> None:
        raise ConfigError(self.field, value, expected)


class _LogControl(_Control):
    def __init__(self, knob: LogSlider, initial: Any, zero: bool, description: str, style: dict[str, str]) -> None:
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
        if not is_finite_number(value):
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
    def __init__(self, knob: Slider, initial: Any, description: str, style: dict[str, str]) -> None:
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
        if not is_finite_number(value):
            self._reject(value, "a finite number")
        if self.integer and not isinstance(value, int):
            self._reject(value, "an int: this slider moves in whole steps")
        self.input.min = min(self.input.min, value)
        self.input.max = max(self.input.max, value)
        self.input.value = value
        self._exact = (self.input.value, value)


class _DropdownControl(_Control):
    def __init__(self, knob: Dropdown, initial: Any, description: str, style: dict[str, str]) -> None:
        self.field = knob.field
        self.labels, self.values = knob.pairs()
        # the widget's values are indices: options may be None or unhashable (tuples of modules)
        self.input = widgets.Dropdown(options=list(zip(self.labels, range(len(self.values)))), value=0,
                                      description=description, style=style)
        self.widget = self.input
        self.set(initial)

    def index(self, value: Any) -> int | None:
        """Where ``value`` is among the options (None if it is not one)."""
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
        """How the dropdown shows ``value`` ('off' for None), so a run label reads the same."""
        i = self.index(value)
        return self.labels[i] if i is not None else _fmt(value)

    def set(self, value: Any) -> None:
        i = self.index(value)
        if i is None:
            self._reject(value, f"one of this dropdown's options: {', '.join(map(repr, self.values))}")
        self.input.value = i


class _ToggleControl(_Control):
    def __init__(self, knob: Toggle, initial: Any, description: str) -> None:
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
    def _build(self, initial: Any, base: RunConfig, style: dict[str, str]) -> _Control:
        """The live control for this knob, starting at ``initial``."""

    def base_value(self, base: RunConfig) -> Any:
        """The value this knob shows for ``base`` (its field's value, for most knobs)."""
        return getattr(base, self.field)

    def resolve(self, value: Any, values: Mapping[str, Any], base: RunConfig) -> dict[str, Any]:
        """The RunConfig fields this knob's shown ``value`` sets, given the other knobs' ``values``."""
        return {self.field: value}

    def short_name(self) -> str:
        """The knob's name in a run label: its own label, else a short form of the field."""
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
        if not (is_finite_number(self.min) and is_finite_number(self.max) and 0 < self.min < self.max):
            raise ValueError(f"LogSlider({self.field!r}): need 0 < min < max, got min={self.min!r}, max={self.max!r}")

    def _build(self, initial: Any, base: RunConfig, style: dict[str, str]) -> _Control:
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
        if not (all(is_finite_number(v) for v in (self.min, self.max, self.step)) and self.min < self.max and self.step > 0):
            raise ValueError(f"Slider({self.field!r}): need min < max and step > 0, "
                             f"got min={self.min!r}, max={self.max!r}, step={self.step!r}")

    def _build(self, initial: Any, base: RunConfig, style: dict[str, str]) -> _Control:
        return _LinearControl(self, initial, self.label or self.field, style)


@dataclass(frozen=True)
class Epochs(Knob):
    """Passes over the training split, shown as a whole number and set as ``max_steps``.

    RunConfig counts optimizer steps; a learner thinks in epochs. Steps per epoch are
    ``ceil(train_size / effective batch)``, so the knob needs a fixed ``train_size`` in the
    base config and recomputes ``max_steps`` (and evaluates once per epoch, ``eval_steps``)
    whenever the batch-size or accumulation knob moves.
    """

    min: int = 1
    max: int = 10
    value: int | None = None
    label: str | None = "epochs"
    field: str = "max_steps"

    def __post_init__(self) -> None:
        if not (isinstance(self.min, int) and isinstance(self.max, int) and 1 <= self.min < self.max):
            raise ValueError(f"Epochs: need whole numbers 1 <= min < max, got min={self.min!r}, max={self.max!r}")

    @staticmethod
    def steps_per_epoch(values: Mapping[str, Any], base: RunConfig) -> int:
        """Optimizer steps in one pass over ``base.train_size`` examples at the knobs' batch size."""
        if not base.train_size:
            raise ConfigError("train_size", base.train_size, "a fixed training split (train_size > 0) in the base "
                                                              "config: the Epochs knob turns epochs into steps with it")
        batch = values.get("per_device_train_batch_size", base.per_device_train_batch_size)
        accumulation = values.get("gradient_accumulation_steps", base.gradient_accumulation_steps)
        return math.ceil(base.train_size / (batch * accumulation))

    def base_value(self, base: RunConfig) -> int:
        return max(1, round(base.max_steps / self.steps_per_epoch({}, base)))

    def resolve(self, value: Any, values: Mapping[str, Any], base: RunConfig) -> dict[str, Any]:
        per_epoch = self.steps_per_epoch(values, base)
        return {"max_steps": value * per_epoch, "eval_steps": per_epoch}

    def _build(self, initial: Any, base: RunConfig, style: dict[str, str]) -> _Control:
        return _LinearControl(Slider(self.field, self.min, self.max, 1, label=self.label), initial,
                              self.label or "epochs", style)

    def describe(self, value: Any, control: _Control) -> str:
        return f"{value} epoch{'' if value == 1 else 's'}"


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
        """(shown labels, values), in the order the dropdown lists them."""
        if isinstance(self.options, Mapping):
            return [str(k) for k in self.options], list(self.options.values())
        return [_fmt(v) for v in self.options], list(self.options)

    def _build(self, initial: Any, base: RunConfig, style: dict[str, str]) -> _Control:
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

    def _build(self, initial: Any, base: RunConfig, style: dict[str, str]) -> _Control:
        return _ToggleControl(self, initial, self.label or self.field)

    def describe(self, value: Any, control: _Control) -> str:
        return self.short_name() if value else f"no {self.short_name()}"


# --- building a playground's controls ----------------------------------------------------------


def description_style(knobs: Sequence[Knob]) -> dict[str, str]:
    """One description width for every knob (and the label box beneath them), so the sliders
    line up despite long field names."""
    width = max([len(k.label or k.field) for k in knobs] + [8])
    return {"description_width": f"{width * 7 + 10}px"}


def build_controls(base: RunConfig, knobs: Sequence[Knob], style: dict[str, str]) -> dict[str, _Control]:
    """Field -> live control, in knob order, each starting at its knob's value or the base's.

    Every mistake a knob list can hold raises ConfigError here, before anything is shown:
    two knobs on one field, an unknown field (with RunConfig's 'did you mean' hint), no
    start value, or a start value RunConfig rejects.
    """
    controls: dict[str, _Control] = {}
    for knob in knobs:
        if knob.field in controls:
            raise ConfigError(knob.field, knob.value, "one knob per field: this field has two")
        if knob.field not in _FIELDS:
            base.replace(**{knob.field: knob.value})  # raises ConfigError with a 'did you mean' hint
        initial = knob.base_value(base) if knob.value is None else knob.value
        if initial is None and not isinstance(knob, Dropdown):  # a dropdown may offer None ("off")
            raise ConfigError(knob.field, None, f"a start value: the base config has None here, so give "
                                                f"{type(knob).__name__}(..., value=...)")
        base.replace(**knob.resolve(initial, {}, base))  # the starting point must itself be a valid config
        controls[knob.field] = knob._build(initial, base, style)
    return controls
