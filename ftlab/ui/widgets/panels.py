"""The Playground's plot panels: each is an ``ftlab.ui.plot`` function drawn on a fresh figure.

A panel is named by a string (``"loss"``, ``"memory"`` or a per-step history key such as
``"weight_norm"``), so a chapter picks what its learners watch in one argument. Every
figure comes from the same functions a notebook calls directly, so a widget and a static
plot of the same runs look alike; this module only adds what a panel needs beyond them:
a frame with a hint while there are no runs, and the curve of the run still training.
Figures are rendered to PNG bytes for an ``ipywidgets.Image`` (see ``png``), and those
bytes, joined, are a widget's static fallback (see ``with_fallback``).
"""
from __future__ import annotations

import io
from typing import Any, Sequence

import ipywidgets as widgets
import numpy as np
from matplotlib import image as mpimg
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ftlab.ui.plot import frame_steps, new_figure, plot_loss_curve, plot_losses, plot_lr, plot_memory, plot_metric
from ftlab.runs.record import Run

METRIC_PANELS: dict[str, str] = {
    "learning_rate": "Learning rate", "grad_norm": "Gradient norm", "weight_norm": "Weight norm (trainable)",
    "tokens_per_second": "Throughput",
}
"""History keys a panel can follow over the steps, with the panel's title."""

PANELS = ("loss", "memory", *METRIC_PANELS)
"""Every panel name a Playground accepts."""

LivePoints = Sequence[tuple[int, float]]
"""(step, value) pairs of the run being trained, in step order."""


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes: updating an ``ipywidgets.Image`` with them is a plain widget
    state change, which works headless and streams to the browser while a cell is busy."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def panel_image() -> widgets.Image:
    """An empty image for a figure's ``png`` bytes, never wider than the cell."""
    return widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))


def side_by_side(pngs: Sequence[bytes]) -> bytes:
    """PNG images joined left to right, top-aligned on white, as one PNG."""
    images = [mpimg.imread(io.BytesIO(data), format="png")[..., :3] for data in pngs]
    height = max(image.shape[0] for image in images)
    padded = [np.pad(image, ((0, height - image.shape[0]), (0, 0), (0, 0)), constant_values=1.0) for image in images]
    buf = io.BytesIO()
    mpimg.imsave(buf, np.hstack(padded), format="png")
    return buf.getvalue()


def with_fallback(widget: widgets.Widget, pngs: Sequence[bytes], text: str, **kwargs: Any) -> dict[str, Any]:
    """``widget``'s display data plus what shows where no widget can run.

    A saved notebook is read on GitHub, in nbviewer or in an untrusted JupyterLab, which
    cannot draw the widget view and fall back to the richest other type: the panels as
    one picture (``pngs`` side by side) and ``text``, one line, instead of ipywidgets'
    ``VBox(children=(...`` repr. Where widgets run, the view is drawn as before.
    """
    bundle = dict(widget._repr_mimebundle_(**kwargs))
    bundle["text/plain"] = text
    if pngs:
        bundle["image/png"] = side_by_side(pngs)
    return bundle


def check_panels(panels: Sequence[str]) -> tuple[str, ...]:
    """``panels`` as a tuple; ValueError naming the choices for an unknown or repeated name."""
    for name in panels:
        if name not in PANELS:
            raise ValueError(f"Playground panel {name!r} is unknown: choose from {', '.join(map(repr, PANELS))}")
    if len(set(panels)) != len(panels):
        raise ValueError(f"Playground panels {tuple(panels)!r} name a panel twice")
    return tuple(panels)


def _placeholder(ax: Axes, text: str) -> None:
    """A grey hint in the middle of an empty panel, so a blank plot never looks broken."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#888")


def loss_figure(runs: Sequence[Run], title: str, live_train: LivePoints = (), live_evals: LivePoints = (),
                live_label: str = "", max_steps: int | None = None) -> Figure:
    """All runs' loss curves, plus the one being trained (``live_*``) in the colour it keeps
    once it joins ``runs``. ``max_steps`` fixes the x axis to the full run, so the axis does
    not jump while the live curve grows."""
    fig, ax = new_figure()
    if runs:
        plot_losses(runs, ax=ax, title=title)
    else:
        frame_steps(ax, "cross-entropy loss", title)
    color = f"C{len(runs) % 10}"
    if live_train:
        plot_loss_curve(*zip(*live_train), "train", color, f"{live_label} train (live)", ax=ax)
    if live_evals:
        plot_loss_curve(*zip(*live_evals), "eval", color, f"{live_label} eval (live)", ax=ax)
    if max_steps:
        ax.set_xlim(0, max([max_steps] + [r.config.max_steps for r in runs]))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)  # again: the live curves joined after plot_losses drew its legend
    else:
        _placeholder(ax, "no runs yet: press Run")
    return fig


def memory_figure(runs: Sequence[Run]) -> Figure:
    """Measured training memory of every run (weights, gradients, optimizer, activations)."""
    if any(r.memory is not None for r in runs):
        return plot_memory(runs)
    fig, ax = new_figure((5, 4))
    ax.set_title("Training memory (measured)")
    _placeholder(ax, "no runs yet")
    ax.set_axis_off()
    return fig


def metric_figure(runs: Sequence[Run], key: str) -> Figure:
    """One per-step history key (``METRIC_PANELS``) of every run."""
    fig, ax = new_figure()
    ylabel = key.replace("_", " ")
    if not runs:
        frame_steps(ax, ylabel)
        _placeholder(ax, "no runs yet")
    elif key == "learning_rate":
        plot_lr(runs, ax=ax)
    else:
        plot_metric(runs, key, ax=ax, ylabel=ylabel)
    ax.set_title(METRIC_PANELS[key])
    return fig


def panel_figure(name: str, runs: Sequence[Run], title: str = "") -> Figure:
    """The finished figure of panel ``name`` (one of ``PANELS``); ``title`` heads the loss panel."""
    if name == "loss":
        return loss_figure(runs, title or "Loss")
    if name == "memory":
        return memory_figure(runs)
    return metric_figure(runs, name)
