"""The four kinds of training memory as one record, and the units they are shown in.

Both the measurement (:mod:`ftlab.memory.measure`) and the prediction
(:mod:`ftlab.memory.predict`) return a :class:`MemoryBreakdown`, so the two can be compared
field by field; a :class:`~ftlab.run.Run` stores one as JSON.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MiB = 1024 ** 2
GiB = 1024 ** 3


@dataclass
class MemoryBreakdown:
    """Bytes per kind of training memory (``cuda_peak`` only on a GPU)."""

    weights: int = 0
    gradients: int = 0
    optimizer: int = 0
    activations: int = 0
    cuda_peak: int | None = None

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MemoryBreakdown":
        return cls(**{k: d[k] for k in ("weights", "gradients", "optimizer", "activations", "cuda_peak") if k in d})

    def mib(self) -> dict[str, float]:
        return {k: round(v / MiB, 2) for k, v in self.to_dict().items() if v is not None}
