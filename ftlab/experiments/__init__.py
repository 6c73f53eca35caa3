"""Experiments: many runs read together. Sweeps and arms (``sweep``), comparing arms
across seeds with a calibrated interval (``stats``: every verdict of a chapter goes
through it), the tuning protocol every knob chapter follows (``protocol``: each arm at its
own best rate, chosen on validation, reported on test), and hyperparameter search on
Optuna and Ray Tune (``search/``)."""
__all__ = ["sweep", "stats", "protocol", "search"]
