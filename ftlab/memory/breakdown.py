"""The four kinds of training memory as one record, and the units they are shown in.

Both the measurement (:mod:`ftlab.memory.measure`) and the prediction
(:mod:`ftlab.memory.predict`) return a :class:`MemoryBreakdown`, so the two can be compared
field by field; a :class:`~ftlab.runs.record.Run` stores one as JSON.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
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
        return sum(getattr(self, part) for part in MEMORY_PARTS)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MemoryBreakdown":
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def mib(self) -> dict[str, float]:
        return {k: round(v / MiB, 2) for k, v in self.to_dict().items() if v is not None}


MEMORY_PARTS: tuple[str, ...] = tuple(f.name for f in fields(MemoryBreakdown) if f.name != "cuda_peak")
"""The four kinds that add up to a step's memory, in the order they are stacked and listed:
every field of :class:`MemoryBreakdown` but ``cuda_peak``, which is the CUDA allocator's view
of the whole step, not one more kind. The stacked memory plot and the sweeps' memory cost
iterate this one tuple, so a fifth kind is added in one place."""
