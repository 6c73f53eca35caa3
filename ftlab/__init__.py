"""ftlab: a workbook for learning how fine-tuning hyperparameters really behave.

This namespace is the public surface the chapters use: describe an experiment with
``RunConfig`` (or ``base_config``/``knob_config``), run it with ``train``, run arms with
``arms`` and read them with ``verdicts``/``compare``, plot with the ``plot_*`` functions,
explore with the widgets, predict memory with ``estimate``/``fits_table`` and search with
``search``. A chapter imports from here (``from ftlab import RunConfig, train, plot_arms``),
plus the ``ftlab.lessons`` module whose mechanism it shows; the folders below are the
layers (see the README's module map) and may be rearranged without breaking a chapter.

``import ftlab`` is light: each name is imported from its module the first time it is
used (PEP 562's module ``__getattr__``), so a command, a worker process or a test that needs
one function does not pay for torch, transformers, peft, datasets, optuna and matplotlib.
Inside IPython, the import also quiets the libraries' progress bars (in a Jupyter kernel)
and teaches the shell to draw ftlab's figures (see :mod:`ftlab.foundation.jupyter`).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ftlab.foundation.jupyter import in_jupyter_kernel, ipython_shell, quiet_libraries, show_figures_inline
from ftlab.version import __version__

if in_jupyter_kernel():  # first, before any import of bitsandbytes, which logs at import
    quiet_libraries()  # saved notebooks keep no frozen progress bars or library log lines (see ftlab.foundation.jupyter)
if ipython_shell() is not None:
    show_figures_inline()  # in a notebook, returned figures render as pictures (see its docstring)

_PUBLIC: dict[str, tuple[str, ...]] = {
    "ftlab.errors": ("FtlabError", "ArgumentError", "ConfigError", "DataError", "DeviceError", "ModelNotFoundError"),
    "ftlab.foundation.jupyter": ("show_figures_inline",),
    "ftlab.config.run_config": ("RunConfig",),
    "ftlab.config.profiles": ("base_config", "knob_config", "finished_knob_config", "FINISHED_BUDGETS", "profile_name", "workload", "KNOB_SEEDS", "KNOB_STEPS"),
    "ftlab.config.optimizers": ("OPTIM_8BIT_BLOCK", "OPTIM_8BIT_MIN_SIZE"),
    "ftlab.config.precision": ("probe",),
    "ftlab.setup.presets": ("resolve_model",),
    "ftlab.setup.models": ("load_model", "load_tokenizer", "count_parameters"),
    "ftlab.setup.data": ("load_data", "load_raw", "encode_example", "split_summary"),
    "ftlab.setup.skewed_mix": ("skewed_mix",),
    "ftlab.memory": ("MemoryBreakdown", "MEMORY_PARTS", "MiB", "GiB", "estimate", "model_architecture", "setup_for",
                     "transient_bytes", "tensor_bytes", "optimizer_state_bytes", "describe_model", "ActivationMeter",
                     "measure_training_step", "measure_step_peak", "MODEL_SIZES", "fits_table", "gpu_need",
                     "assumptions", "communication_bytes", "gathered_bytes", "devices_needed", "wire_bytes",
                     "zero_paper_bytes"),
    "ftlab.memory.peers": ("peer_table", "MEASURED_NOTE"),
    "ftlab.memory.fits": ("method_config", "fits"),
    "ftlab.runs.record": ("Run",),
    "ftlab.runs.table": ("metric", "metric_table", "values", "early_values", "memory_cost"),
    "ftlab.training.train": ("train",),
    "ftlab.training.parallel": ("default_workers",),
    "ftlab.training.arguments": ("training_arguments", "training_optimizer"),
    "ftlab.training.evaluate": ("generate_answers",),
    "ftlab.training.step": ("weight_norm",),
    "ftlab.training.clipping": ("grad_norms", "clipped_fraction", "spikes", "clipping_summary"),
    "ftlab.training.adapter_io": ("trained_model", "merge_gap", "reload_gap", "saved_bytes", "generate_ways"),
    "ftlab.distributed": ("Plan", "average_gradients", "ring_all_reduce", "ring_traffic", "measure_or_explain",
                          "why_not_launch", "one_process"),
    "ftlab.distributed.scratch": ("global_token_count", "token_mean_loss"),
    "ftlab.experiments.sweep": ("arms", "train_each", "verdicts"),
    "ftlab.experiments.stats": ("compare", "compare_to_baseline", "proportion_interval"),
    "ftlab.experiments.transfer": ("transfer_rows", "budgets"),
    "ftlab.experiments.protocol": ("Hyperparameters", "RateChoice", "tune_rates", "report", "flatness", "verdict_on",
                                   "ProtocolError", "SELECTION_SEED", "REPORT_SEEDS", "SMALLEST_EFFECT"),
    "ftlab.experiments.search": ("search", "search_all", "tune_search", "SearchError", "trial_rows", "trial_run", "best_trial",
                                 "best_so_far", "finished_trials", "steps_run", "steps_saved", "default_storage_url",
                                 "open_class_study", "contribute", "trainer_search_example"),
    "ftlab.experiments.search.trials": ("eval_points",),
    "ftlab.ui.plot": ("loss_unit", "plot_losses", "plot_lr", "plot_memory", "plot_arms", "plot_final", "plot_rate_choices",
                      "plot_reliability", "plot_metric", "plot_schedules"),
    "ftlab.ui.search_plot": ("plot_landscape", "plot_best_so_far"),
    "ftlab.ui.source": ("code_of",),
    "ftlab.ui.published": ("show_takeaway",),
    "ftlab.ui.widgets": ("Playground", "LogSlider", "Slider", "Dropdown", "Toggle", "Epochs", "MemoryPredictor",
                         "SearchWidget", "ClassStudy"),
}
"""Each public name, by the module that owns it: the one list a name is added to."""

if TYPE_CHECKING:  # the same names for type checkers, editors and readers; a test keeps this block equal to _PUBLIC
    from ftlab.errors import FtlabError, ArgumentError, ConfigError, DataError, DeviceError, ModelNotFoundError
    from ftlab.foundation.jupyter import show_figures_inline
    from ftlab.config.run_config import RunConfig
    from ftlab.config.profiles import base_config, knob_config, finished_knob_config, FINISHED_BUDGETS, profile_name
    from ftlab.config.profiles import workload, KNOB_SEEDS, KNOB_STEPS
    from ftlab.config.optimizers import OPTIM_8BIT_BLOCK, OPTIM_8BIT_MIN_SIZE
    from ftlab.config.precision import probe
    from ftlab.setup.presets import resolve_model
    from ftlab.setup.models import load_model, load_tokenizer, count_parameters
    from ftlab.setup.data import load_data, load_raw, encode_example, split_summary
    from ftlab.setup.skewed_mix import skewed_mix
    from ftlab.memory import MemoryBreakdown, MEMORY_PARTS, MiB, GiB, estimate, model_architecture, setup_for
    from ftlab.memory import transient_bytes, tensor_bytes, optimizer_state_bytes, describe_model, ActivationMeter
    from ftlab.memory import measure_training_step, measure_step_peak, MODEL_SIZES, fits_table, gpu_need, assumptions
    from ftlab.memory import communication_bytes, gathered_bytes, devices_needed, wire_bytes, zero_paper_bytes
    from ftlab.memory.peers import peer_table, MEASURED_NOTE
    from ftlab.memory.fits import method_config, fits
    from ftlab.runs.record import Run
    from ftlab.runs.table import metric, metric_table, values, early_values, memory_cost
    from ftlab.training.train import train
    from ftlab.training.parallel import default_workers
    from ftlab.training.arguments import training_arguments, training_optimizer
    from ftlab.training.evaluate import generate_answers
    from ftlab.training.step import weight_norm
    from ftlab.training.clipping import grad_norms, clipped_fraction, spikes, clipping_summary
    from ftlab.training.adapter_io import trained_model, merge_gap, reload_gap, saved_bytes, generate_ways
    from ftlab.distributed import Plan, average_gradients, ring_all_reduce, ring_traffic, measure_or_explain
    from ftlab.distributed import why_not_launch, one_process
    from ftlab.distributed.scratch import global_token_count, token_mean_loss
    from ftlab.experiments.sweep import arms, train_each, verdicts
    from ftlab.experiments.stats import compare, compare_to_baseline, proportion_interval
    from ftlab.experiments.transfer import transfer_rows, budgets
    from ftlab.experiments.protocol import Hyperparameters, RateChoice, tune_rates, report, flatness, verdict_on
    from ftlab.experiments.protocol import ProtocolError, SELECTION_SEED, REPORT_SEEDS, SMALLEST_EFFECT
    from ftlab.experiments.search import search, search_all, tune_search, SearchError, trial_rows, trial_run, best_trial
    from ftlab.experiments.search import best_so_far, finished_trials, steps_run, steps_saved, default_storage_url
    from ftlab.experiments.search import open_class_study, contribute, trainer_search_example
    from ftlab.experiments.search.trials import eval_points
    from ftlab.ui.plot import loss_unit, plot_losses, plot_lr, plot_memory, plot_arms, plot_final, plot_rate_choices
    from ftlab.ui.plot import plot_reliability, plot_metric, plot_schedules
    from ftlab.ui.search_plot import plot_landscape, plot_best_so_far
    from ftlab.ui.source import code_of
    from ftlab.ui.published import show_takeaway
    from ftlab.ui.widgets import Playground, LogSlider, Slider, Dropdown, Toggle, Epochs, MemoryPredictor, SearchWidget
    from ftlab.ui.widgets import ClassStudy

_OWNER: dict[str, str] = {name: module for module, names in _PUBLIC.items() for name in names}

__all__ = ["__version__", *_OWNER]  # noqa: PLE0604  (the names of _PUBLIC, listed once there)


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use, and keep it here for the next."""
    module = _OWNER.get(name)
    if module is None:
        raise AttributeError(f"module 'ftlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
