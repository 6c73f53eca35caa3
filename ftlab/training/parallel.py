"""Independent runs trained side by side in worker processes, on a CPU.

Why: the arms of a comparison are independent runs, and one PyTorch process does not keep
every core busy (its data loading, Python and Trainer bookkeeping run on one thread while
the others wait). Several one-thread processes fill those gaps: two of them on two cores
train more runs per minute than one two-thread process (``benchmarks/workers.py``
measures it).

The workers only fill the run cache; the caller then reads each run back with
:func:`ftlab.training.train.train`, which finds it there. So a run trained in a worker is
the same Run, under the same key, as one trained in the notebook's own process, and a
comparison never depends on where its runs were trained.
"""
from __future__ import annotations

import atexit
import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Collection, Sequence

import torch

from ftlab.config.run_config import RunConfig
from ftlab.errors import ConfigError
from ftlab.foundation.jupyter import start_quiet_worker
from ftlab.runs.cache import RunCache

WORKERS_ENV = "FTLAB_WORKERS"
"""Environment variable that sets how many worker processes train a chapter's arms (1 = none)."""

MIN_CORES = 4
"""Fewest cores on which the ``cpu`` profile trains in workers by default when step times are
read. On 2 cores, workers gained 1.10x on the old 60-step full fine-tunes
(``benchmarks/workers.py --base knob``), and runs that share the cores report slower steps
than one run alone, which would blur a step-time comparison; there the runs are trained one
after another unless FTLAB_WORKERS says otherwise."""

MIN_CORES_UNTIMED = 2
"""Fewest cores for workers where no step time is read (the tuning protocol's rate sweeps and
reports): two one-thread workers trained the protocol's 160-step LoRA runs 1.38x faster than
one two-thread process on the 2-core AMD host, their start included
(``benchmarks/workers.py --base protocol``)."""

_pool: ProcessPoolExecutor | None = None
_pool_size = 0


def default_workers(profile: str, *, timed: bool = True) -> int:
    """How many worker processes train independent runs: ``FTLAB_WORKERS`` if set, else one
    per CPU core on the ``cpu`` profile with at least :data:`MIN_CORES` cores
    (:data:`MIN_CORES_UNTIMED` when ``timed`` is False: nobody reads the runs' step times),
    and none (1) elsewhere.

    ``ci`` runs chapters on pytest-xdist workers that already fill the cores, and on a GPU
    the runs share one device, where processes would only contend for it.
    """
    text = os.environ.get(WORKERS_ENV)
    if text is not None:
        if not text.strip().isdigit() or int(text) < 1:
            raise ConfigError(WORKERS_ENV, text, "a whole number of worker processes, 1 or more "
                              "(1 trains every run in this process; environment variable)")
        return int(text)
    cores = usable_cores()
    if profile != "cpu" or torch.cuda.is_available() or cores < (MIN_CORES if timed else MIN_CORES_UNTIMED):
        return 1
    return cores


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or a batch
    system may narrow), not every core of the machine. A JupyterHub that caps a learner's
    CPU by quota rather than affinity is not seen here: set FTLAB_WORKERS there."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity call
        return max(1, os.cpu_count() or 1)


def _train_one(config_json: str, label: str, runs_dir: str | None, retrain: bool, keep: bool) -> float:
    """Train one run in a worker and save it to the run cache (with its weights if ``keep``);
    its wall seconds."""
    from ftlab.training.adapter_io import trained_model  # the worker's own imports, after its threads are set
    from ftlab.training.train import train

    started = time.perf_counter()
    config = RunConfig.from_json(config_json)
    if keep:
        trained_model(config, label=label, runs_dir=runs_dir, retrain=retrain, progress=False)
    else:
        train(config, label=label, runs_dir=runs_dir, retrain=retrain, progress=False)
    return time.perf_counter() - started


def _shared_pool(workers: int) -> ProcessPoolExecutor:
    """One pool per process, reused by every later sweep: a worker imports torch and
    transformers once (several seconds), not once per cell."""
    global _pool, _pool_size
    if _pool is None or _pool_size != workers:
        if _pool is not None:
            _pool.shutdown(cancel_futures=True)
        threads = max(1, usable_cores() // workers)
        _pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=start_quiet_worker, initargs=(threads,))
        _pool_size = workers
        atexit.register(_pool.shutdown, cancel_futures=True)
    return _pool


def train_in_workers(jobs: Sequence[tuple[str, RunConfig]], *, workers: int,
                     runs_dir: str | Path | None = None, retrain: bool = False, progress: bool = True,
                     keep: Collection[str] = ()) -> int:
    """Train the (label, config) ``jobs`` that the run cache lacks (all of them if ``retrain``)
    in ``workers`` processes, and return how many were trained.

    The jobs labelled in ``keep`` also keep their weights, as
    :func:`~ftlab.training.adapter_io.trained_model` does (and train where the cache has the
    run but not its weights): a chapter that studies those models then reads them from disk
    instead of training them once more in its own process.

    Nothing happens with one worker or fewer than two runs to train: the caller's own
    :func:`~ftlab.training.train.train` calls then train them in this process. A failure
    in a worker is raised here, with its traceback, once the other runs have finished.
    """
    from ftlab.training.adapter_io import has_weights, weights_folder

    cache = RunCache(runs_dir)
    todo = [(label, config) for label, config in jobs
            if retrain or cache.load_completed(cache.key_for(config)[0]) is None
            or (label in keep and not has_weights(weights_folder(config, runs_dir)))]
    if workers < 2 or len(todo) < 2:
        return 0
    pool = _shared_pool(min(workers, usable_cores()))
    folder = str(cache.folder)  # resolved here: a pool started earlier keeps the environment of its start
    futures: dict[Future[float], str] = {pool.submit(_train_one, config.to_json(), label, folder, retrain,
                                                                     label in keep): label
                                         for label, config in todo}
    if progress:
        print(f"training {len(todo)} runs in {_pool_size} worker processes")
    try:
        for future in as_completed(futures):
            seconds = future.result()
            if progress:
                print(f"  {futures[future]}: trained in {seconds:.0f} s")
    except BaseException:
        for future in futures:
            future.cancel()  # an interrupt stops what has not started; a started run finishes and is cached
        raise
    return len(todo)
