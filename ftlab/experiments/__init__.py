"""Experiments: many runs read together. Sweeps and arms (``sweep``), comparing arms
across seeds with a calibrated interval (``stats``: every verdict of a chapter goes
through it), and hyperparameter search on Optuna and Ray Tune (``search/``)."""
__all__ = ["sweep", "stats", "search"]
