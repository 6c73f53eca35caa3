"""MemoryPredictor: will this fine-tune fit? Knobs in, predicted memory breakdown out, instantly.

It trains nothing and loads no weights (the prediction works from the architecture alone),
so a learner can ask about a 70B model on a laptop. It answers with the accounting of the
fits table (``ftlab.memory.fits.gpu_need``), and prints what that accounting assumes, so
the widget and the table never give two answers to one question.
"""
from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from ftlab.config.run_config import RunConfig
from ftlab.errors import ArgumentError
from ftlab.memory import STRATEGIES, GiB, MemoryBreakdown
from ftlab.memory.fits import DEFAULT_WEIGHTS, HEADROOM, METHODS, MODEL_SIZES, assumptions, fits, gpu_need, method_config
from ftlab.ui.plot import plot_memory
from ftlab.ui.widgets.panels import panel_image, png, with_fallback

PRESETS = ("tiny", "smollm2-135m")
"""Models ftlab can load; the other choices are MODEL_SIZES architectures, estimated only."""

DEVICES = (1, 2, 4, 8, 16, 32, 64)
"""GPU counts a data-parallel group is sized in (powers of two, as ``devices_needed`` counts)."""

GPUS_GIB = (16, 24, 40, 48, 80)
"""Card sizes to check the prediction against (T4/V100 16, RTX 4090 24, A100 40 and 80, L40S/A6000 48)."""

WEIGHTS_SHORT = {"float32": "fp32", "bfloat16": "bf16"}

PARTS = ("weights", "gradients", "optimizer", "activations", "gathered", "transient")

CONTROL_WIDTH = "340px"
"""Every control's fixed width. In a flex row a control may otherwise shrink when the
summary beside it wraps to a second line, and a dropdown that loses 20 px loses its arrow."""

CONTROL_STYLE = {"description_width": "150px"}
"""One description width, so the controls line up and none is cut by its own label."""


def _fixed() -> widgets.Layout:
    """A layout that neither shrinks nor grows: the control keeps ``CONTROL_WIDTH``."""
    return widgets.Layout(width=CONTROL_WIDTH, flex="0 0 auto")


def need_parts(need: dict[str, int]) -> str:
    """'weights 513 MiB, gradients 0 MiB, ...': every part of one GPU's predicted need."""
    return ", ".join(f"{k} {need[k] / 2**20:,.0f} MiB" for k in PARTS)


class MemoryPredictor:
    """Sliders over model size, method, batch, sequence length, checkpointing, optimizer,
    precision, weight storage, card size, GPU count and data-parallel strategy; the predicted
    need of one GPU (the busiest rank) redraws on every change.

    Nothing is loaded or trained, so it answers "will it fit?" instantly, also for model
    sizes this machine could never hold. ``need()`` is the same computation as a plain call
    (``gpu_need``), for headless use; ``predict()`` its four parts as a ``MemoryBreakdown``.
    Its defaults are those of ``fits_table``: RunConfig's LoRA on a bf16 base computing in bf16,
    with fp32 adapters and optimizer state, as practitioners fine-tune; "weights stored in"
    switches to ftlab's own fp32 base (where the "bf16 autocast" box then applies).
    """

    def __init__(self) -> None:
        self.model = widgets.Dropdown(options=[*PRESETS, *MODEL_SIZES], value="smollm2-135m", description="model",
                                      layout=_fixed(), style=CONTROL_STYLE)
        self.method = widgets.Dropdown(options=list(METHODS), value="lora", description="method",
                                       layout=_fixed(), style=CONTROL_STYLE)
        self.batch = widgets.IntSlider(value=4, min=1, max=64, description="batch", layout=_fixed(), style=CONTROL_STYLE)
        self.seq_len = widgets.IntSlider(value=512, min=32, max=8192, step=32, description="seq len",
                                         layout=_fixed(), style=CONTROL_STYLE)
        self.checkpointing = widgets.Checkbox(value=False, description="gradient checkpointing", layout=_fixed(),
                                              style=CONTROL_STYLE)
        self.optim = widgets.Dropdown(options=["adamw_torch", "adamw_8bit", "adafactor", "sgd"], value="adamw_torch",
                                      description="optimizer", layout=_fixed(), style=CONTROL_STYLE)
        self.bf16 = widgets.Checkbox(value=True, description="bf16 autocast", layout=_fixed(), style=CONTROL_STYLE)
        self.weights = widgets.Dropdown(options=[("bf16 (as TRL, axolotl load)", "bfloat16"),
                                                 ("fp32 (as ftlab loads)", "float32")],
                                        value=DEFAULT_WEIGHTS, description="weights stored in", layout=_fixed(),
                                        style=CONTROL_STYLE)
        self.gpu = widgets.Dropdown(options=[(f"{g} GiB", g) for g in GPUS_GIB], value=24, description="GPU",
                                    layout=_fixed(), style=CONTROL_STYLE)
        self.devices = widgets.Dropdown(options=list(DEVICES), value=1, description="GPUs", layout=_fixed(),
                                        style=CONTROL_STYLE)
        self.strategy = widgets.Dropdown(options=list(STRATEGIES), value="ddp", description="strategy",
                                         layout=_fixed(), style=CONTROL_STYLE)
        self.image = panel_image()
        self.summary = widgets.HTML()
        self.controls: list[widgets.Widget] = [self.model, self.method, self.batch, self.seq_len, self.checkpointing,
                                               self.optim, self.bf16, self.weights, self.gpu, self.devices,
                                               self.strategy]
        """The input widgets, in the order shown."""
        for control in self.controls:
            control.observe(lambda change: self.redraw(), names="value")
        # stable CSS classes: what the browser tests (tests/browser) and a learner's own CSS select by
        for name in ("model", "method", "batch", "seq_len", "checkpointing", "optim", "bf16", "weights", "gpu",
                     "devices", "strategy"):
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
        """The RunConfig the controls describe: ``method_config`` with the controls' values (a
        MODEL_SIZES choice stands on the smollm2 preset; ``need`` swaps in its architecture)."""
        name = self.model.value
        return method_config(self.method.value, self.checkpointing.value).replace(
            model=name if name in PRESETS else "smollm2-135m", per_device_train_batch_size=self.batch.value,
            max_seq_length=max(16, self.seq_len.value), optim=self.optim.value, bf16=self.bf16.value)

    def need(self) -> dict[str, int]:
        """What one GPU (the busiest of ``devices``) needs for a training step with the current
        settings: bytes per part, ``gathered`` (FSDP's whole layers) and ``total``."""
        return gpu_need(self.config(), weights=self.weights.value, seq_len=self.seq_len.value,
                        model_config=MODEL_SIZES.get(self.model.value), devices=self.devices.value,
                        strategy=self.strategy.value)

    def predict(self) -> MemoryBreakdown:
        """The four parts of :meth:`need` that a measured step also reports (no transient buffers)."""
        n = self.need()
        return MemoryBreakdown(weights=n["weights"], gradients=n["gradients"], optimizer=n["optimizer"],
                               activations=n["activations"])

    def where(self) -> str:
        """'one GPU', or 'each of 8 GPUs (fsdp, the busiest)'."""
        if self.devices.value == 1 and self.strategy.value == "ddp":
            return "one GPU"
        return f"each of {self.devices.value} GPUs ({self.strategy.value}, the busiest)"

    def redraw(self) -> None:
        """Predict again and redraw the bars, the summary and the assumptions; a combination
        ftlab cannot predict (a sharded 4-bit base, say) is said in the summary instead."""
        try:
            need = self.need()
        except ArgumentError as error:
            self._need, self._refused = None, str(error)
            self.summary.value = f"<b>Not predicted:</b> {html.escape(str(error))}"
            return
        self._need, self._refused = need, ""
        fig = plot_memory({f"{self.model.value} {self.method.value}": self.predict()},
                          title=f"Predicted memory of one step (+ {need['transient'] / GiB:.2f} GiB transient"
                                + (f", {need['gathered'] / GiB:.2f} GiB gathered)" if need["gathered"] else ")"))
        self.image.value = png(fig)
        verdict = "fits" if fits(need["total"], self.gpu.value) else "does not fit"
        card = f"{'an' if str(self.gpu.value).startswith('8') else 'a'} {self.gpu.value} GiB card"
        self.summary.value = (f"<b>{need['total'] / GiB:.2f} GiB</b> on {self.where()}: {verdict} {card} "
                              f"with {HEADROOM:.0%} kept free ({need_parts(need)})"
                              f"<br><small>{assumptions(self.weights.value, self.config())}</small>")

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The widget view, plus the chart as PNG and ``repr`` for readers without widgets."""
        return with_fallback(self.widget, [bytes(self.image.value)], repr(self), **kwargs)

    def __repr__(self) -> str:
        """One line: the settings and the prediction the widget shows."""
        n = self._need
        if n is None:
            return f"MemoryPredictor: {self.model.value} {self.method.value}: not predicted: {self._refused}"
        verdict = "fits" if fits(n["total"], self.gpu.value) else "does not fit"
        return (f"MemoryPredictor: {self.model.value} {self.method.value}, batch {self.batch.value} x "
                f"{self.seq_len.value} tokens, {WEIGHTS_SHORT[self.weights.value]} weights: {n['total'] / GiB:.2f} GiB "
                f"on {self.where()}, {verdict} {self.gpu.value} GiB ({need_parts(n)})")
