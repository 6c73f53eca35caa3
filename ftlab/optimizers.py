"""The optimizers a chapter may compare, and the state each one keeps per trainable parameter.

One table serves both readers: :data:`ftlab.config.OPTIMIZERS` (the names a RunConfig
accepts) is its keys, and the memory predictor prices optimizer state from its rows, so an
optimizer cannot be offered without also being priced. This module imports nothing from
``ftlab.config`` (config imports it).

What each family keeps, for one trainable parameter of ``n`` values:

* AdamW (``adamw_torch``, ``adamw_torch_fused``): two moments (``exp_avg`` and
  ``exp_avg_sq``) in the parameter's dtype: 8 bytes per fp32 parameter.
  ``paged_adamw_32bit`` (bitsandbytes) always keeps them in fp32.
* 8-bit AdamW (``adamw_8bit``, ``adamw_bnb_8bit``, ``paged_adamw_8bit``): the two moments as
  uint8 codes (2 bytes/param) plus one fp32 absmax per 256 values per moment and a
  reference to a 256-entry fp32 code map per moment; tensors under 4096 values (norms,
  small LoRA matrices) keep fp32 moments, as bitsandbytes' ``min_8bit_size`` decides.
* Lion keeps one moment (``lion_32bit``: fp32; ``lion_8bit``: as above, one state).
* ``rmsprop``: one ``square_avg`` per parameter (momentum 0, not centered).
* ``adafactor`` (transformers, ``beta1=None`` as Trainer uses it): a matrix keeps only a
  row vector and a column vector of second moments (rows + cols values, not rows x
  cols); a vector keeps a full second moment.
* ``sgd``: Trainer's default momentum is 0, so SGD keeps no state at all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .quant import dynamic_8bit_code

OPTIM_8BIT_BLOCK = 256
"""bitsandbytes 8-bit optimizers keep one fp32 absmax per 256 state values (blockwise)."""
OPTIM_8BIT_MIN_SIZE = 4096
"""bitsandbytes keeps 32-bit state for tensors with fewer elements than this (``min_8bit_size``)."""
QMAP_BYTES = dynamic_8bit_code().nbytes
"""The fp32 quantization map (bitsandbytes' 256-entry signed dynamic code) each 8-bit
optimizer state keeps a reference to.

The map is one tensor shared by all parameters, but it is listed in every parameter's
state and ``optimizer_state_bytes`` counts it per parameter; the predictor counts it the
same way.
"""


@dataclass(frozen=True)
class OptimizerSpec:
    """What one optimizer keeps per trainable parameter.

    ``moments``: full-size state tensors per parameter (AdamW 2, Lion and RMSprop 1, SGD 0),
    stored in the parameter's dtype unless ``fp32`` (always 4 bytes per value) or
    ``blockwise_8bit`` (bitsandbytes' 8-bit codes with per-block fp32 scales).
    ``factored``: Adafactor's row and column second moments instead of full moments.
    ``gpu_only``: the state pages between GPU and CPU memory, meaningless without CUDA.
    """

    description: str
    moments: int = 0
    fp32: bool = False
    blockwise_8bit: bool = False
    factored: bool = False
    gpu_only: bool = False

    def state_bytes(self, shape: tuple[int, ...], elem: int, moment_elem: int | None = None) -> int:
        """Bytes of state for one trainable parameter of ``shape`` stored with ``elem`` bytes
        per value. ``moment_elem`` forces the bytes per value of parameter-dtype moments
        (fp32 moments over bf16 weights); Adafactor's factored moments keep ``elem``."""
        n = math.prod(shape)
        if self.factored:
            if len(shape) >= 2:
                return (math.prod(shape[:-1]) + math.prod(shape[:-2]) * shape[-1]) * elem
            return n * elem
        if self.blockwise_8bit:
            if n < OPTIM_8BIT_MIN_SIZE:
                return self.moments * n * 4
            return self.moments * (n + 4 * math.ceil(n / OPTIM_8BIT_BLOCK) + QMAP_BYTES)
        if self.fp32:
            return self.moments * n * 4
        return self.moments * n * (moment_elem or elem)


OPTIMIZER_TABLE: dict[str, OptimizerSpec] = {
    "adamw_torch": OptimizerSpec("AdamW: two moments per parameter in its dtype", moments=2),
    "adamw_torch_fused": OptimizerSpec("AdamW in one fused kernel: the same two moments", moments=2),
    "adamw_bnb_8bit": OptimizerSpec("bitsandbytes AdamW with both moments as blockwise 8-bit codes", moments=2,
                                    blockwise_8bit=True),
    "adamw_8bit": OptimizerSpec("the same 8-bit AdamW under its short name", moments=2, blockwise_8bit=True),
    "paged_adamw_8bit": OptimizerSpec("8-bit AdamW whose state pages between GPU and CPU memory", moments=2,
                                      blockwise_8bit=True, gpu_only=True),
    "paged_adamw_32bit": OptimizerSpec("AdamW with fp32 moments paged between GPU and CPU memory", moments=2,
                                       fp32=True, gpu_only=True),
    "adafactor": OptimizerSpec("Adafactor: a row and a column vector of second moments per matrix", factored=True),
    "sgd": OptimizerSpec("SGD without momentum (Trainer's default): no state at all"),
    "lion_8bit": OptimizerSpec("Lion: one momentum per parameter as blockwise 8-bit codes", moments=1,
                               blockwise_8bit=True),
    "lion_32bit": OptimizerSpec("Lion: one fp32 momentum per parameter", moments=1, fp32=True),
    "rmsprop": OptimizerSpec("RMSprop (no momentum, not centered): one square average per parameter", moments=1),
}
"""Every optimizer a chapter may compare, by its transformers ``OptimizerNames`` value."""
