"""ftlab: a workbook for learning how fine-tuning hyperparameters really behave.

The public API is what the notebooks use: describe an experiment with RunConfig, run it
with train(), compare the Runs with the plot functions.
"""
from .version import __version__
from .notebook import in_jupyter_kernel, quiet_libraries

if in_jupyter_kernel():  # first, before any import of bitsandbytes, which logs at import
    quiet_libraries()  # saved notebooks keep no frozen progress bars or library log lines (see ftlab.notebook)

from .config import RunConfig
from .errors import ConfigError, DataError, DeviceError, FtlabError, ModelNotFoundError
from .memory import MemoryBreakdown, estimate
from .models import load_model, load_tokenizer
from .data import load_data
from .profiles import base_config, profile_name, workload
from .run import Run
from .train import train
from .plot import show_figures_inline

show_figures_inline()  # in a notebook, returned figures render as pictures (see its docstring)

__all__ = ["RunConfig", "load_model", "load_tokenizer", "load_data", "train", "Run", "MemoryBreakdown", "estimate",
           "base_config", "profile_name", "workload", "show_figures_inline", "ConfigError", "DataError", "DeviceError",
           "FtlabError", "ModelNotFoundError"]
