"""ftlab: a workbook for learning how fine-tuning hyperparameters really behave.

The public API is what the notebooks use: describe an experiment with RunConfig, run it
with train(), compare the Runs with the plot functions.
"""
from ftlab.version import __version__
from ftlab.foundation.jupyter import in_jupyter_kernel, quiet_libraries

if in_jupyter_kernel():  # first, before any import of bitsandbytes, which logs at import
    quiet_libraries()  # saved notebooks keep no frozen progress bars or library log lines (see ftlab.foundation.jupyter)

from ftlab.config.run_config import RunConfig
from ftlab.errors import ArgumentError, ConfigError, DataError, DeviceError, FtlabError, ModelNotFoundError
from ftlab.memory import MemoryBreakdown, estimate
from ftlab.setup.models import load_model, load_tokenizer
from ftlab.setup.data import load_data
from ftlab.config.profiles import base_config, profile_name, workload
from ftlab.runs.record import Run
from ftlab.training.train import train
from ftlab.ui.plot import show_figures_inline

show_figures_inline()  # in a notebook, returned figures render as pictures (see its docstring)

__all__ = ["RunConfig", "load_model", "load_tokenizer", "load_data", "train", "Run", "MemoryBreakdown", "estimate",
           "base_config", "profile_name", "workload", "show_figures_inline", "ArgumentError", "ConfigError", "DataError", "DeviceError",
           "FtlabError", "ModelNotFoundError"]
