"""Widgets for the notebooks: a Playground to train with knobs, and a MemoryPredictor.

Widgets are optional sugar: each one drives plain ftlab calls (``train``, ``estimate``),
so every experiment also runs headless. The package splits by job: ``controls`` (knobs and
their widgets), ``panels`` (the plots), ``base`` (the button and status line a Playground and
a SearchWidget share, and what a press does with an error), ``playground``,
``search_widget``, ``class_study`` and ``memory_predictor``.

    from ftlab.ui.widgets import Playground, LogSlider, Dropdown, Toggle
    pg = Playground(base, [LogSlider("learning_rate", 1e-5, 1e-2),
                           Dropdown("lr_scheduler_type", ["linear", "cosine", "constant"])])
    pg                      # the widget
    pg.set(learning_rate=1e-3, lr_scheduler_type="cosine"); run = pg.run()
"""
from ftlab.ui.widgets.controls import Dropdown, Epochs, Knob, LogSlider, Slider, Toggle
from ftlab.ui.widgets.class_study import ClassStudy
from ftlab.ui.widgets.memory_predictor import MemoryPredictor
from ftlab.ui.widgets.panels import PANELS
from ftlab.ui.widgets.playground import LiveLossCallback, Playground
from ftlab.ui.widgets.search_widget import SearchWidget

__all__ = ["Playground", "LogSlider", "Slider", "Dropdown", "Toggle", "Epochs", "Knob", "LiveLossCallback", "MemoryPredictor",
           "PANELS", "SearchWidget", "ClassStudy"]
