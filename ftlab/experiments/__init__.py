"""Experiments: the tuning protocol every knob chapter follows (sweeps, verdicts and
searches live beside it)."""
from ftlab.experiments.protocol import (REPORT_KEYS, REPORT_SEEDS, SELECTION_SEED, SMALLEST_EFFECT, Flatness,
                                        Hyperparameters, ProtocolError, RateChoice, Report, epochs, flatness,
                                        interior_best, report, tune_rates, verdict_on)

__all__ = ["REPORT_KEYS", "REPORT_SEEDS", "SELECTION_SEED", "SMALLEST_EFFECT", "Flatness", "Hyperparameters",
           "ProtocolError", "RateChoice", "Report", "epochs", "flatness", "interior_best", "report", "tune_rates",
           "verdict_on"]
