"""MemoryPredictor: will this fine-tune fit? Knobs in, predicted memory breakdown out, instantly.

It trains nothing and loads no weights (``ftlab.memory.estimate`` works from the
architecture alone), so a learner can ask about a 70B model on a laptop.
"""
from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from ftlab.config.run_config import RunConfig
from ftlab.memory import GiB, MemoryBreakdown, estimate
from ftlab.memory.fits import MODEL_SIZES
from ftlab.ui.plot import plot_memory
from ftlab.ui.widgets.panels import panel_image, png, with_fallback

PRESETS = ("tiny", "smollm2-135m")
"""Models ftlab can load; the other choices are MODEL_SIZES architectures, estimated only."""

CONTROL_WIDTH = "340px"
"""Every control's fixed width. In a flex row a control may otherwise shrink when the
summary beside it wraps to a second line, and a dropdown that loses 20 px loses its arrow."""

CONTROL_STYLE = {"description_width": "150px"}
"""One description width, so the controls line up and none is cut by its own label."""


def _fixed() -> widgets.Layout:
    """A layout that neither shrinks nor grows: the control keeps ``CONTROL_WIDTH``."""
    return widgets.Layout(width=CONTROL_WIDTH, flex="0 0 auto")


def breakdown_parts(breakdown: MemoryBreakdown) -> str:
    """'weights 513 MiB, gradients 0 MiB, ...': every known part of the prediction."""
    return ", ".join(f"{k} {v:,.0f} MiB" for k, v in breakdown.mib().items() if k != "total" and v is not None)


class MemoryPredictor:
    """Sliders over model size, method, batch, sequence length, checkpointing, optimizer and
    precision; the predicted memory breakdown (``ftlab.memory.estimate``) redraws on every change.

    Nothing is loaded or trained, so it answers "will it fit?" instantly, also for model
    sizes this machine could never hold. ``predict()`` is the same computation as a plain
    call, for headless use.
    """

    def __init__(self) -> None:
        self.model = widgets.Dropdown(options=[*PRESETS, *MODEL_SIZES], value="smollm2-135m", description="model",
                                      layout=_fixed(), style=CONTROL_STYLE)
        self.method = widgets.Dropdown(options=["full", "lora", "qlora"], value="lora", description="method",
                                       layout=_fixed(), style=CONTROL_STYLE)
        self.batch = widgets.IntSlider(value=4, min=1, max=64, description="batch", layout=_fixed(), style=CONTROL_STYLE)
        self.seq_len = widgets.IntSlider(value=512, min=32, max=8192, step=32, description="seq len",
                                         layout=_fixed(), style=CONTROL_STYLE)
        self.checkpointing = widgets.Checkbox(value=False, description="gradient checkpointing", layout=_fixed(),
                                              style=CONTROL_STYLE)
        self.optim = widgets.Dropdown(options=["adamw_torch", "adamw_8bit", "adafactor", "sgd"], value="adamw_torch",
                                      description="optimizer", layout=_fixed(), style=CONTROL_STYLE)
        self.bf16 = widgets.Checkbox(value=False, description="bf16 autocast", layout=_fixed(), style=CONTROL_STYLE)
        self.image = panel_image()
        self.summary = widgets.HTML()
        self.controls: list[widgets.Widget] = [self.model, self.method, self.batch, self.seq_len, self.checkpointing,
                                               self.optim, self.bf16]
        """The input widgets, in the order shown."""
        for control in self.controls:
            control.observe(lambda change: self.redraw(), names="value")
        # stable CSS classes: what the browser tests (tests/browser) and a learner's own CSS select by
        for name in ("model", "method", "batch", "seq_len", "checkpointing", "optim", "bf16"):
            getattr(self, name).add_class("ftlab-memory-control").add_class(f"ftlab-memory-{name}")
        self.image.add_class("ftlab-memory-plot")
        self.summary.add_class("ftlab-memory-summary")
        # the controls column never shrinks; the plot column takes the rest and wraps its summary
        self.widget = widgets.HBox([widgets.VBox(self.controls, layout=widgets.Layout(flex="0 0 auto")),
                                    widgets.VBox([self.image, self.summary],
                                                 layout=widgets.Layout(flex="1 1 auto", min_width="0"))])
        self.widget.add_class("ftlab-memory-predictor")
        self.redraw()

    def config(self) -> RunConfig:
        """The RunConfig the controls describe (a MODEL_SIZES choice stands on the smollm2 preset;
        ``predict`` swaps in its architecture)."""
        name = self.model.value
        return RunConfig(model=name if name in PRESETS else "smollm2-135m",
                         lora_r=0 if self.method.value == "full" else 16, load_in_4bit=self.method.value == "qlora",
                         per_device_train_batch_size=self.batch.value, max_seq_length=max(16, self.seq_len.value),
                         gradient_checkpointing=self.checkpointing.value, optim=self.optim.value, bf16=self.bf16.value)

    def predict(self) -> MemoryBreakdown:
        """The predicted memory of one training step with the current settings."""
        return estimate(self.config(), seq_len=self.seq_len.value, model_config=MODEL_SIZES.get(self.model.value))

    def redraw(self) -> None:
        """Predict again and redraw the bars and the one-line summary."""
        self._breakdown = breakdown = self.predict()
        fig = plot_memory({f"{self.model.value} {self.method.value}": breakdown}, title="Predicted memory of one step")
        self.image.value = png(fig)
        self.summary.value = f"<b>{breakdown.total / GiB:.2f} GiB</b> predicted ({breakdown_parts(breakdown)})"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The widget view, plus the chart as PNG and ``repr`` for readers without widgets."""
        return with_fallback(self.widget, [bytes(self.image.value)], repr(self), **kwargs)

    def __repr__(self) -> str:
        """One line: the settings and the prediction the widget shows."""
        b = self._breakdown
        return (f"MemoryPredictor: {self.model.value} {self.method.value}, batch {self.batch.value} x "
                f"{self.seq_len.value} tokens: {b.total / GiB:.2f} GiB predicted ({breakdown_parts(b)})")
