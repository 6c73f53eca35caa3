"""Widgets for the notebooks: a Playground to train with knobs, and a MemoryPredictor.

Widgets are optional sugar: each one drives plain ftlab calls (``train``, ``estimate``),
so every experiment also runs headless. The package splits by job: ``controls`` (knobs and
their widgets), ``panels`` (the plots), ``playground`` and ``memory_predictor``.

    from ftlab.widgets import Playground, LogSlider, Dropdown, Toggle
    pg = Playground(base, [LogSlider("learning_rate", 1e-5, 1e-2),
                           Dropdown("lr_scheduler_type", ["linear", "cosine", "constant"])])
    pg                      # the widget
    pg.set(learning_rate=1e-3, lr_scheduler_type="cosine"); run = pg.run()
"""
from .controls import Dropdown, Epochs, Knob, LogSlider, Slider, Toggle
from .class_study import ClassStudy
from .memory_predictor import MemoryPredictor
from .panels import PANELS
from .playground import LiveLossCallback, Playground
from .search_widget import SearchWidget

__all__ = ["Playground", "LogSlider", "Slider", "Dropdown", "Toggle", "Epochs", "Knob", "LiveLossCallback", "MemoryPredictor",
           "PANELS", "SearchWidget", "ClassStudy"]
