"""The optimizers a chapter may compare, and the state each one keeps per trainable parameter.

One table serves both readers: :data:`ftlab.config.run_config.OPTIMIZERS` (the names a RunConfig
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
* ``rmsprop``: one ``square_avg`` per parameter; ``optim_args`` ``momentum > 0`` adds a
  ``momentum_buffer`` and ``centered=true`` a ``grad_avg``, each the parameter's size and dtype.
* ``adafactor`` (transformers, ``beta1=None`` as Trainer uses it): a matrix keeps only a
  row vector and a column vector of second moments (rows + cols values, not rows x
  cols); a vector keeps a full second moment (:mod:`ftlab.lessons.adafactor`). Always at least
  fp32: a 16-bit gradient is cast to fp32 before its statistics are taken.
* ``sgd``: Trainer's default momentum is 0, so SGD keeps no state at all; with
  ``optim_args="momentum=0.9"`` it keeps one ``momentum_buffer`` per parameter in its dtype.

The buffers that ``optim_args`` switch on are in the table too (``OptimizerSpec.buffer_args``),
and :func:`optimizer_spec` applies them, so the predictor prices the optimizer a run builds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ftlab.errors import ConfigError
from ftlab.config.formats import DYNAMIC_CODE_ENTRIES, FP32_BYTES

OPTIM_8BIT_BLOCK = 256
"""bitsandbytes 8-bit optimizers keep one fp32 absmax per 256 state values (blockwise)."""
OPTIM_8BIT_MIN_SIZE = 4096
"""bitsandbytes keeps 32-bit state for tensors with fewer elements than this (``min_8bit_size``)."""
QMAP_BYTES = DYNAMIC_CODE_ENTRIES * FP32_BYTES
"""The fp32 quantization map (bitsandbytes' 256-entry signed dynamic code) each 8-bit
optimizer state keeps a reference to.

The map is one tensor shared by all parameters, but it is listed in every parameter's
state and ``optimizer_state_bytes`` counts it per parameter; the predictor counts it the
same way.
"""


def second_moment_shapes(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The shapes of the second-moment tensors Adafactor keeps for one parameter of ``shape``.

    A tensor of 2 or more dimensions is factored over its **last two**: one value per row
    (``shape[:-1]``: the last dimension averaged away) and one per column (``shape[:-2] +
    shape[-1:]``: the second-to-last averaged away). Leading dimensions are kept, so a stack
    of matrices gets one row and one column vector per matrix. A 1-D or 0-D tensor keeps a
    full second moment of its own shape.
    """
    shape = tuple(shape)
    if len(shape) >= 2:
        return [shape[:-1], shape[:-2] + shape[-1:]]
    return [shape]


def second_moment_numel(shape: tuple[int, ...]) -> int:
    """Values of state Adafactor keeps for one parameter of ``shape`` (see
    :func:`second_moment_shapes`): ``rows + cols`` for a ``rows x cols`` matrix, where Adam's
    second moment alone would be ``rows * cols``."""
    return sum(math.prod(s) for s in second_moment_shapes(shape))


@dataclass(frozen=True)
class OptimizerSpec:
    """What one optimizer keeps per trainable parameter.

    ``moments``: full-size state tensors per parameter (AdamW 2, Lion and RMSprop 1, SGD 0;
    before the ``buffer_args``),
    stored in the parameter's dtype unless ``fp32`` (always 4 bytes per value) or
    ``blockwise_8bit`` (bitsandbytes' 8-bit codes with per-block fp32 scales).
    ``factored``: Adafactor's row and column second moments instead of full moments.
    ``gpu_only``: the state pages between GPU and CPU memory, meaningless without CUDA.
    ``bitsandbytes``: Trainer builds it from bitsandbytes (``tests/test_precision.py`` asks
    Trainer), which has no Apple MPS backend and keeps embeddings' 8-bit state in 32 bits.
    ``buffer_args``: ``optim_args`` keys that each add one more full-size moment when set
    (nonzero or true), e.g. SGD's ``momentum``; :meth:`with_args` applies them.
    """

    description: str
    moments: int = 0
    fp32: bool = False
    blockwise_8bit: bool = False
    factored: bool = False
    gpu_only: bool = False
    bitsandbytes: bool = False
    buffer_args: tuple[str, ...] = ()

    def with_args(self, optim_args: dict[str, float | bool]) -> "OptimizerSpec":
        """This optimizer as ``optim_args`` (parsed, see :func:`parse_optim_args`) configure it:
        one more moment per :attr:`buffer_args` key that is set (``momentum=0.0`` adds none)."""
        return replace(self, moments=self.moments + sum(1 for key in self.buffer_args if optim_args.get(key)))

    def state_bytes(self, shape: tuple[int, ...], elem: int, moment_elem: int | None = None) -> int:
        """Bytes of state for one trainable parameter of ``shape`` stored with ``elem`` bytes
        per value. ``moment_elem`` forces the bytes per value of parameter-dtype moments
        (fp32 moments over bf16 weights); Adafactor's factored moments take at least 4 bytes
        per value (it casts 16-bit gradients to fp32)."""
        n = math.prod(shape)
        if self.factored:
            return second_moment_numel(shape) * max(elem, 4)
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
                                    blockwise_8bit=True, bitsandbytes=True),
    "adamw_8bit": OptimizerSpec("the same 8-bit AdamW under its short name", moments=2, blockwise_8bit=True,
                                bitsandbytes=True),
    "paged_adamw_8bit": OptimizerSpec("8-bit AdamW whose state pages between GPU and CPU memory", moments=2,
                                      blockwise_8bit=True, gpu_only=True, bitsandbytes=True),
    "paged_adamw_32bit": OptimizerSpec("AdamW with fp32 moments paged between GPU and CPU memory", moments=2,
                                       fp32=True, gpu_only=True, bitsandbytes=True),
    "adafactor": OptimizerSpec("Adafactor: a row and a column vector of second moments per matrix", factored=True),
    "sgd": OptimizerSpec("SGD: no state at momentum 0 (Trainer's default); one momentum buffer per parameter "
                         "with momentum > 0", buffer_args=("momentum",)),
    "lion_8bit": OptimizerSpec("Lion: one momentum per parameter as blockwise 8-bit codes", moments=1,
                               blockwise_8bit=True, bitsandbytes=True),
    "lion_32bit": OptimizerSpec("Lion: one fp32 momentum per parameter", moments=1, fp32=True, bitsandbytes=True),
    "rmsprop": OptimizerSpec("RMSprop: one square average per parameter, plus a momentum buffer (momentum > 0) and "
                             "a gradient average (centered)", moments=1, buffer_args=("momentum", "centered")),
}
"""Every optimizer a chapter may compare, by its transformers ``OptimizerNames`` value: the one
owner of what each keeps, whether it needs CUDA and whether it comes from bitsandbytes."""

GPU_ONLY_OPTIMIZERS: frozenset[str] = frozenset(name for name, spec in OPTIMIZER_TABLE.items() if spec.gpu_only)
"""Paged optimizers page state between GPU and CPU memory: meaningless without CUDA."""
BITSANDBYTES_OPTIMIZERS: frozenset[str] = frozenset(name for name, spec in OPTIMIZER_TABLE.items() if spec.bitsandbytes)
"""Optimizers Trainer builds from bitsandbytes, which has no Apple MPS backend."""


def optimizer_spec(optim: str, optim_args: str = "") -> OptimizerSpec:
    """The state ``optim`` keeps with ``optim_args`` (the ``TrainingArguments.optim_args``
    string): its :data:`OPTIMIZER_TABLE` row with the buffers those arguments switch on."""
    try:
        spec = OPTIMIZER_TABLE[optim]
    except KeyError:
        raise ConfigError("optim", optim, f"one of {', '.join(OPTIMIZER_TABLE)}") from None
    return spec.with_args(parse_optim_args(optim_args))


OPTIM_ARGS_KEYS: dict[str, frozenset[str]] = {
    "sgd": frozenset({"momentum", "dampening", "weight_decay", "nesterov"}),
    "rmsprop": frozenset({"momentum", "alpha", "eps", "weight_decay", "centered"}),
}
"""The ``optim_args`` keys Trainer reads for each optimizer (transformers' ``_get_sgd`` and
``_get_rmsprop``); every other optimizer in the table ignores ``optim_args``, so a key given
to it would silently change nothing."""
_BOOLEAN_OPTIM_ARGS = frozenset({"nesterov", "centered"})


def parse_optim_args(text: str) -> dict[str, float | bool]:
    """``"momentum=0.9,nesterov=true"`` -> ``{"momentum": 0.9, "nesterov": True}``: the
    ``TrainingArguments.optim_args`` string read the way Trainer reads it. A ValueError names
    the piece that is not ``key=value`` or whose value is not a number (or a boolean)."""
    values: dict[str, float | bool] = {}
    for piece in (p for p in text.replace(" ", "").split(",") if p):
        key, sep, value = piece.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"{piece!r} is not key=value")
        if key in _BOOLEAN_OPTIM_ARGS:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"{key}={value!r} is not true or false")
            values[key] = value.lower() in ("true", "1", "yes")
        else:
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"{key}={value!r} is not a number") from None
            if not math.isfinite(number) or number < 0:
                raise ValueError(f"{key}={value!r} is not a finite number >= 0")
            values[key] = number
    return values


def format_optim_args(values: dict[str, float | bool]) -> str:
    """The one spelling of an ``optim_args`` dict: keys sorted, ``momentum=0.9`` not ``.90``."""
    return ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else repr(float(v))}" for k, v in sorted(values.items()))
