"""The step measurement's CUDA peaks, checked without a GPU: a fake allocator stands in for
``torch.cuda``'s peak counters, so the split between training and evaluation is exercised."""
from __future__ import annotations

import pytest

from ftlab.training import step as step_module
from ftlab.training.step import CudaPeaks


class FakeAllocator:
    """``max_memory_allocated`` and ``reset_peak_memory_stats`` over a scripted allocation."""

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0

    def allocate(self, n: int) -> None:
        self.current += n
        self.peak = max(self.peak, self.current)

    def free(self, n: int) -> None:
        self.current -= n

    def max_memory_allocated(self) -> int:
        return self.peak

    def reset_peak_memory_stats(self) -> None:
        self.peak = self.current


def test_an_evaluation_at_a_large_batch_does_not_set_the_training_peak(monkeypatch):
    fake = FakeAllocator()
    for name in ("max_memory_allocated", "reset_peak_memory_stats"):
        monkeypatch.setattr(step_module.torch.cuda, name, getattr(fake, name))
    monkeypatch.setattr(step_module.torch.cuda, "is_available", lambda: True)
    peaks = CudaPeaks()
    peaks.start()
    fake.allocate(100)  # a training step
    fake.free(100)
    with peaks.evaluating():
        fake.allocate(300)  # evaluation at a large eval batch
        fake.free(300)
    fake.allocate(120)  # a later training step, higher than the first
    fake.free(120)
    peaks.finish()
    assert (peaks.train, peaks.eval) == (120, 300)


def test_without_cuda_nothing_is_read(monkeypatch):
    monkeypatch.setattr(step_module.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(step_module.torch.cuda, "max_memory_allocated",
                        lambda: pytest.fail("read a CUDA counter without CUDA"))
    peaks = CudaPeaks()
    peaks.start()
    with peaks.evaluating():
        pass
    peaks.finish()
    assert (peaks.train, peaks.eval) == (0, 0)
