"""Training memory: measured exactly from the tensors, and predicted from a config alone.

A step's memory is a :class:`MemoryBreakdown` (weights, gradients, optimizer state,
activations). :mod:`~ftlab.memory.measure` reads it off a live model (any device);
:mod:`~ftlab.memory.predict` computes it before anything is loaded, with the activations
from the op-by-op walk in :mod:`~ftlab.memory.activations`; :mod:`~ftlab.memory.fits`
turns predictions into "what fits on which GPU".

Dependency direction: each module here imports only modules before it in the order
breakdown, measure, architecture, activations, predict, fits; the package sits above
``ftlab.setup`` (predict resolves preset names with ``ftlab.setup.presets``), so ``ftlab.setup`` must import
nothing from ``ftlab.memory``: importing any submodule first runs this file, which imports
``predict``.
:mod:`~ftlab.memory.peak` (the peak of live bytes through a step) imports only ``measure``.
"""
from ftlab.memory.architecture import Architecture
from ftlab.memory.breakdown import MEMORY_PARTS, GiB, MemoryBreakdown, MiB
from ftlab.memory.fits import MODEL_SIZES, assumptions, devices_needed, fits_table, gpu_need, transient_bytes
from ftlab.memory.measure import (ActivationMeter, describe_model, gradient_bytes, measure_training_step, optimizer_state_bytes,
                                  tensor_bytes, weight_bytes)
from ftlab.memory.peak import LiveTensors, StepPeak, measure_step_peak
from ftlab.memory.predict import (STRATEGIES, busiest_rank, communication_bytes, estimate, gathered_bytes, model_architecture,
                                  setup_for, shard_rows)

__all__ = ["MemoryBreakdown", "MEMORY_PARTS", "MiB", "GiB", "tensor_bytes", "weight_bytes", "gradient_bytes",
           "optimizer_state_bytes", "ActivationMeter", "measure_training_step", "describe_model", "Architecture",
           "model_architecture", "setup_for", "estimate", "MODEL_SIZES", "fits_table", "transient_bytes",
           "STRATEGIES", "busiest_rank", "communication_bytes", "gathered_bytes", "shard_rows", "devices_needed", "gpu_need",
           "assumptions", "LiveTensors", "StepPeak", "measure_step_peak"]
