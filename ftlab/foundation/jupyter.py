"""How ftlab behaves inside Jupyter: what ``import ftlab`` sets up so saved notebooks read well.

A notebook is read far more often than it runs: on GitHub, in nbviewer, in a JupyterLab
that does not trust it, or after a workshop teacher ran it headless with papermill. None
of those can run a widget, so every progress bar a library draws (datasets' ``Map:``,
transformers' ``Loading weights``) is saved as a frozen ``0%|          | 0/3000`` line
that says the opposite of what happened. ``import ftlab`` therefore switches those bars
off inside a Jupyter kernel; ftlab's own training progress is plain printed lines (see
``train.Recorder``), which read the same live and saved. In any IPython (a kernel or a
terminal) it also teaches the shell to draw ftlab's figures (:func:`show_figures_inline`).
"""
from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

__all__ = ["ipython_shell", "in_jupyter_kernel", "quiet_libraries", "show_figures_inline"]


def ipython_shell() -> Any | None:
    """The running IPython shell, or None outside IPython (without importing IPython)."""
    if "IPython" not in sys.modules:
        return None
    return sys.modules["IPython"].get_ipython()


def in_jupyter_kernel() -> bool:
    """True inside a Jupyter kernel (JupyterLab, papermill, nbval), where outputs are saved;
    False in a script or a terminal IPython, where a live progress bar is still useful."""
    return getattr(ipython_shell(), "kernel", None) is not None


def quiet_libraries() -> None:
    """Switch off the progress bars and info logging of the libraries ftlab drives.

    ``import ftlab`` calls it inside a Jupyter kernel only (``in_jupyter_kernel``); a
    script that wants quiet output may call it too. It covers datasets' ``Map:`` and
    ``Filter:`` bars, and every bar transformers makes through ``transformers.utils.logging.tqdm``:
    the ``Loading weights`` bar of ``from_pretrained`` (``core_model_loading``) and, as that
    switch also turns off huggingface_hub's bars, download bars. Logged errors and Python
    ``warnings`` still show, but one: peft reads transformers' deprecated
    ``is_gradient_checkpointing`` property whenever LoRA is added, a warning between two
    libraries that a learner can do nothing about. The libraries' info and warning log
    lines do not show. That includes bitsandbytes' warning, on CPUs with AVX512-BF16, that it
    could not fetch a faster 4-bit kernel from the Hub (the ``kernels`` package, which downloads
    code at run time): it falls back to its own kernel, which is what every other CPU runs.
    From ``kernels`` 0.19 the same attempt also logs, offline, that it skipped the Hub's
    publisher check: the ``kernels`` logger is quieted for the same reason.
    """
    import datasets  # here, not at the top: ``import ftlab`` outside a kernel never needs them
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # set before bitsandbytes is imported too
    logging.getLogger("kernels").setLevel(logging.ERROR)


def start_quiet_worker(threads: int) -> None:
    """Initializer of a worker process that trains runs for a notebook: it writes nothing, and
    uses ``threads`` threads (its share of the cores, so the workers never oversubscribe them).

    A kernel forwards its child processes' output into the notebook, where the libraries'
    progress bars and log lines would be saved as debris; a run's failure still reaches the
    caller, as the future's exception. The output goes first, before anything is imported:
    a spawned worker imports its initializer's module before running it, so the initializer
    lives here, in a module that imports nothing heavy (importing ftlab's training code pulls
    in bitsandbytes, which logs, on CPUs with AVX512-BF16, that it could not fetch a Hub kernel).
    """
    import os

    silent = os.open(os.devnull, os.O_WRONLY)
    os.dup2(silent, 1)
    os.dup2(silent, 2)
    import torch

    torch.set_num_threads(threads)
    quiet_libraries()


def show_figures_inline(shell: Any = None) -> bool:
    """Teach the running IPython to draw a matplotlib ``Figure`` as a PNG; True if it did.

    ftlab draws on ``matplotlib.figure.Figure`` objects rather than pyplot, so plots keep no
    global state between cells, widgets and tests. IPython, however, only learns to render a
    Figure when pyplot loads its inline backend; without this, a cell that returns a plot
    shows ``<Figure size 700x400 with 1 Axes>`` instead of the picture. ``import ftlab``
    calls it (it needs IPython, not matplotlib); outside IPython it does nothing (and does not import IPython).
    """
    if shell is None:
        shell = ipython_shell()
    if shell is None:
        return False
    from IPython.core.pylabtools import select_figure_formats
    select_figure_formats(shell, {"png"})
    return True
