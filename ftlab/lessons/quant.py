"""NF4 (4-bit NormalFloat) quantization written from scratch in plain torch.

This module re-implements the weight format that QLoRA (Dettmers et al., 2023,
https://arxiv.org/abs/2305.14314) uses for the frozen base model, so that the
notebook can show every step on a small tensor instead of treating
``bitsandbytes`` as a black box.  The implementation is deliberately written to
be *bit-exact* with ``bitsandbytes.functional.quantize_4bit(quant_type="nf4")``
and ``dequantize_4bit`` on CPU (checked by ``tests/test_quant.py``), so any
plot made with it describes exactly what a QLoRA run stores.  It is longer than
ftlab's other modules because it is a lesson: every bit-exactness detail below is
spelled out where it happens, to be read beside chapter 06.

The recipe, in one paragraph
----------------------------
Flatten the weight and cut it into blocks of ``blocksize`` (64) values.  Each
block is divided by its own absolute maximum, which maps it into [-1, 1];
every value is then replaced by the index (0..15) of the nearest of 16 fixed
"NF4 levels", and two 4-bit indices are packed into one byte.  To get the
weight back, look the index up in the level table and multiply by the block's
absmax.  *Double quantization* additionally compresses the per-block absmax
constants (32 bits per 64 weights = 0.5 bit/parameter) by storing them as 8-bit
codes with a second, much coarser, set of scales.

Details that matter for bit-exactness (found by reading bitsandbytes 0.50)
-------------------------------------------------------------------------
* All arithmetic happens in float32; bf16/fp16 inputs are upcast first and the
  dequantized float32 product is rounded to the original dtype at the very end.
* Full blocks are scaled with ``x * (1 / absmax)`` but the trailing partial
  block with ``x / absmax``; the two sometimes differ by one ulp, which flips
  a code when the value sits on a threshold, so both are reproduced.
* "Nearest level" means: count how many decision thresholds (midpoints between
  neighbouring levels) are *strictly* below the value; a value exactly on a
  threshold goes to the lower level.
* The first value of a pair goes into the *high* nibble of the byte.  An odd
  element count is padded with a 0.0, which encodes as the zero level (7).
* Double quantization subtracts the mean of the absmax constants, then uses
  bnb's 8-bit blockwise quantizer (blocks of 256, "dynamic" 8-bit code).  On
  CPU that quantizer does not search the code book directly: it first snaps the
  scaled value to a grid of 65,536 points on [-1, 1] (in float32) and looks the
  grid point up in a precomputed table.  See :func:`quantize_blockwise_8bit`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Union

import torch
from matplotlib.figure import Figure

from ftlab.config.formats import ABSMAX_BLOCKSIZE, NF4_BLOCKSIZE
from ftlab.ui.plot import MEMORY_COLORS, new_figure

__all__ = [
    "NF4_BLOCKSIZE",
    "NF4_CODE",
    "NF4Tensor",
    "bits_per_parameter",
    "dequantize_blockwise_8bit",
    "dequantize_nf4",
    "dynamic_8bit_code",
    "nf4_levels",
    "nf4_thresholds",
    "plot_quantization_error",
    "quantization_error",
    "quantize_blockwise_8bit",
    "quantize_nf4",
]


#: The 16 NF4 levels exactly as float32, in code order (code 0 = -1.0,
#: code 7 = 0.0, code 15 = 1.0).  These are the values published with the
#: QLoRA paper and hard-coded in bitsandbytes; :func:`nf4_levels` re-derives
#: them from normal quantiles and agrees to about 2e-7 (1-2 float32 ulps).
NF4_CODE: tuple[float, ...] = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)

_SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


# --------------------------------------------------------------------------- #
# The code books
# --------------------------------------------------------------------------- #
def nf4_levels(offset: Optional[float] = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Derive the 16 NF4 levels from quantiles of the standard normal N(0, 1).

    Why this shape of code book: pretrained weights are roughly normally
    distributed, and after dividing a block by its absmax they live in [-1, 1].
    If every level should be used equally often, the levels must sit at
    equal-probability quantiles of the normal distribution - dense near 0 where
    most weights are, sparse in the tails.

    The QLoRA construction:

    * It needs an *exact* zero (padding, ReLU-sparse or pruned weights, and the
      zero-initialised parts of a model must round-trip exactly).  With 16
      levels and symmetric halves zero cannot be a level, so the code is made
      asymmetric: 8 positive quantiles, 7 negative quantiles, and 0.
    * The quantiles are taken between probability ``offset`` and 0.5 for each
      half.  The outermost quantile of N(0, 1) at probability 1 would be
      infinite, so the paper stops at ``offset = 1 - delta`` with
      ``delta = (1/30 + 1/32) / 2``: the average of the half-bin widths of the
      7-level and 8-level halves.
    * Finally everything is divided by the largest level, so the code book
      spans exactly [-1, 1], matching the absmax-normalised block.

    The derivation is done in float64 with ``torch.special.ndtri`` (the inverse
    normal CDF) and only rounded to ``dtype`` at the end.  It agrees with the
    published float32 table (:data:`NF4_CODE`) to ~2e-7, i.e. one or two
    float32 ulps (one ulp, 1.2e-7, with ``offset=0.9677083``): the published
    table was generated from the offset rounded to 7 digits, float32
    probabilities and a float32 division.  Since a single ulp in a level moves
    a rounding threshold and can flip a code, the quantizer below uses the
    exact float32 table, not this derivation.
    """
    if offset is None:
        offset = 1.0 - 0.5 * (1.0 / 30.0 + 1.0 / 32.0)
    # 9 points from offset down to 0.5, drop the 0.5 itself (that is the zero
    # level): 8 positive levels.  8 points, drop 0.5: 7 negative levels.
    p_pos = torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1]
    p_neg = torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1]
    positive = torch.special.ndtri(p_pos).flip(0)  # ascending
    negative = -torch.special.ndtri(p_neg)  # already ascending (most negative first)
    levels = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive])
    levels = levels / levels.abs().max()
    return levels.to(dtype)


def nf4_code() -> torch.Tensor:
    """The exact float32 NF4 table (see :data:`NF4_CODE`), as a tensor."""
    return torch.tensor(NF4_CODE, dtype=torch.float32)


def nf4_thresholds(code: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Decision thresholds between neighbouring levels: the float32 midpoints.

    Rounding to the nearest level is the same as comparing against the 15
    midpoints, which is cheaper than computing 16 distances.  The midpoints
    are computed in float32 (not exactly) because that is what bitsandbytes
    compares against; a value that lands exactly on one goes to the lower code.
    """
    code = nf4_code() if code is None else code
    return (code[:-1] + code[1:]) / 2


@lru_cache(maxsize=1)
def _dynamic_8bit_code_cached() -> torch.Tensor:
    values = [0.0, 1.0]
    for exponent in range(7):
        # 2**exponent equal bins on [0.1, 1]; the level is the bin centre.
        edges = torch.linspace(0.1, 1.0, 2**exponent + 1, dtype=torch.float32)
        centres = (edges[:-1] + edges[1:]) / 2
        magnitudes = 10.0 ** (exponent - 6) * centres  # decade 1e-6 .. 1e0
        values += magnitudes.tolist() + (-magnitudes).tolist()
    return torch.tensor(sorted(values), dtype=torch.float32)


def dynamic_8bit_code() -> torch.Tensor:
    """bitsandbytes' signed "dynamic" 8-bit code book (256 sorted float32 values).

    Why it looks like this: it is a tiny floating-point format.  The leading
    bits pick a decade (1e-6, 1e-5, ..., 1e0) and the remaining bits split
    [0.1, 1] of that decade into equal bins (1 bin for 1e-6, 2 for 1e-5, ...,
    64 for 1e0); the level is the bin centre.  That gives ~3 significant digits
    for large magnitudes and still represents values down to 1e-6, which suits
    absmax constants (after their mean is subtracted they are small and of
    either sign).  254 signed values + 0 + 1.0 = 256 entries, sorted.
    Note the asymmetry: +1.0 is a level, the most negative level is -0.99297.
    """
    return _dynamic_8bit_code_cached().clone()


# --------------------------------------------------------------------------- #
# The 8-bit blockwise quantizer used for double quantization
# --------------------------------------------------------------------------- #
_GRID_POINTS = 65536


@lru_cache(maxsize=4)
def _grid_to_code_table(code_key: tuple[float, ...]) -> torch.Tensor:
    """For each of the 65,536 grid points on [-1, 1], the nearest code index."""
    code = torch.tensor(code_key, dtype=torch.float32)
    midpoints = (code[:-1] + code[1:]) * 0.5
    i = torch.arange(_GRID_POINTS, dtype=torch.float32)
    # Same float32 operation order as the C kernel: (2*i) / 65535 - 1.
    grid = (i + i) / torch.tensor(float(_GRID_POINTS - 1)) - 1.0
    # Index = number of midpoints strictly below the grid point (ties -> lower).
    return torch.searchsorted(midpoints, grid, right=False)


def _nearest_code_via_grid(scaled: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Map values in [-1, 1] to code indices the way bnb's CPU kernel does.

    Why a grid: bitsandbytes' CPU kernel avoids a binary search per element by
    rounding the value to the nearest of 65,536 evenly spaced points
    (``floor((v + 1) / 2 * 65535 + 0.5)``, evaluated in float32 with a fused
    multiply-add) and reading a precomputed table.  This is a *double
    rounding*: near a decision threshold the result can differ from the true
    nearest level, and near 0 the dynamic code's finest levels (1e-6 apart)
    are closer together than the grid spacing (3e-5), so some of them are
    never produced.  To be bit-exact we do the same.

    ``t * 65535`` is exact in float64 (24 + 16 significant bits), so
    ``float32(float64(t) * 65535 + 0.5)`` rounds the fused result once more to
    float32 just like the hardware FMA; the tests include values sitting on
    grid half-points where skipping that float32 rounding would give a
    different code.
    """
    table = _grid_to_code_table(tuple(code.tolist()))
    v = scaled.clamp(-1.0, 1.0)
    t = (v + 1.0) * 0.5  # float32, like the kernel
    grid_index = (t.double() * float(_GRID_POINTS - 1) + 0.5).float().long()
    return table[grid_index].to(torch.uint8)


def quantize_blockwise_8bit(
    x: torch.Tensor, blocksize: int = ABSMAX_BLOCKSIZE, code: Optional[torch.Tensor] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blockwise 8-bit quantization with the dynamic code (bnb CPU semantics).

    Returns ``(codes uint8 with x's shape, absmax float32 per block)``.  Each
    block is scaled by the reciprocal of its absmax (``x * (1/absmax)`` in
    float32) and mapped to a code index with :func:`_nearest_code_via_grid`.
    A block that is all zero gets code 0 everywhere (its absmax of 0 makes the
    dequantized value 0 regardless of the code).
    """
    code = dynamic_8bit_code() if code is None else code.float()
    flat = x.reshape(-1).float()
    n = flat.numel()
    n_blocks = -(-n // blocksize)
    padded = torch.nn.functional.pad(flat, (0, n_blocks * blocksize - n)).view(n_blocks, blocksize)
    absmax = padded.abs().amax(dim=1)  # padding zeros never win the max
    # float32 reciprocal, then multiply (like the C kernel).  An all-zero
    # block would give 0 * inf = NaN, so give it a dummy scale of 1.
    inv = 1.0 / absmax.masked_fill(absmax == 0, 1.0)
    scaled = padded * inv[:, None]
    codes = _nearest_code_via_grid(scaled, code)
    codes[absmax == 0] = 0
    return codes.reshape(-1)[:n].reshape(x.shape), absmax


def dequantize_blockwise_8bit(
    codes: torch.Tensor,
    absmax: torch.Tensor,
    blocksize: int = ABSMAX_BLOCKSIZE,
    code: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Inverse of :func:`quantize_blockwise_8bit`: ``code[c] * absmax[block]`` in float32."""
    code = dynamic_8bit_code() if code is None else code.float()
    flat = codes.reshape(-1).long()
    block_of = torch.arange(flat.numel()) // blocksize
    return (code[flat] * absmax.float()[block_of]).reshape(codes.shape)


# --------------------------------------------------------------------------- #
# NF4
# --------------------------------------------------------------------------- #
@dataclass
class NF4Tensor:
    """Everything that is stored for one NF4-quantized weight.

    Attributes:
        packed: uint8, ``ceil(numel / 2)`` bytes; element ``2k`` in the high
            nibble of byte ``k``, element ``2k + 1`` in the low nibble.
        blocksize: number of consecutive (flattened, row-major) weights that
            share one scale.
        shape, dtype: the original weight's shape and dtype (dequantization
            returns this dtype).
        absmax: float32 scale per block.  ``None`` when double-quantized.
        absmax_codes: double quant only: uint8 dynamic-code index per block,
            encoding ``absmax - absmax_offset``.
        absmax_scale: double quant only: float32 absmax of
            ``absmax - absmax_offset`` per group of ``absmax_blocksize`` blocks.
        absmax_offset: double quant only: 0-dim float32, the mean absmax.
        absmax_blocksize: group size of the second level (256 in bnb).
    """

    packed: torch.Tensor
    blocksize: int
    shape: torch.Size
    dtype: torch.dtype
    absmax: Optional[torch.Tensor] = None
    absmax_codes: Optional[torch.Tensor] = None
    absmax_scale: Optional[torch.Tensor] = None
    absmax_offset: Optional[torch.Tensor] = None
    absmax_blocksize: int = ABSMAX_BLOCKSIZE

    @property
    def double_quant(self) -> bool:
        return self.absmax_codes is not None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def n_blocks(self) -> int:
        return -(-self.numel // self.blocksize)

    def stored_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors that would have to be saved / kept in memory.

        The shared code books (16 NF4 levels, 256 dynamic levels) are constants
        of the format, not per-tensor state, so they are not included.
        """
        names = ("packed", "absmax", "absmax_codes", "absmax_scale", "absmax_offset")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    def block_absmax(self) -> torch.Tensor:
        """Per-block scales as used by dequantization (float32).

        With double quantization this is the *reconstructed* value
        ``dyn_code[absmax_codes] * absmax_scale[group] + absmax_offset``, which
        is what every weight of the block is multiplied by - so double quant
        error shows up as a per-block scale error.
        """
        if not self.double_quant:
            assert self.absmax is not None
            return self.absmax
        assert self.absmax_scale is not None and self.absmax_offset is not None
        scales = dequantize_blockwise_8bit(self.absmax_codes, self.absmax_scale, self.absmax_blocksize)
        return scales + self.absmax_offset


def _unpack(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Split bytes into 4-bit codes: high nibble first, then drop padding."""
    codes = torch.stack([packed >> 4, packed & 0x0F], dim=1).reshape(-1)
    return codes[:n]


def quantize_nf4(weight: torch.Tensor, blocksize: int = NF4_BLOCKSIZE, double_quant: bool = False) -> NF4Tensor:
    """Quantize ``weight`` to NF4, exactly as bitsandbytes' ``quantize_4bit``.

    Steps and why they exist:

    1. Flatten in row-major order and upcast to float32: blocks are runs of
       ``blocksize`` consecutive values regardless of shape (so a block may
       span two rows), and all arithmetic is float32 whatever the input dtype.
    2. absmax per block: a block-local scale means one outlier only hurts its
       own 64 neighbours, not the whole matrix.  The absmax itself is stored
       exactly (float32) unless ``double_quant``.
    3. Scale into [-1, 1]: full blocks multiply by the float32 reciprocal
       ``1/absmax`` (one division per block, then cheap multiplies), while the
       trailing partial block is divided directly - bnb does it this way and
       the two can differ by an ulp, so we copy it.  An absmax of 0 is clamped
       to 1e-38 to avoid 0/0; such a block simply encodes as all zeros.
    4. Nearest NF4 level via the 15 float32 thresholds (ties go down), giving a
       code 0..15.  Padding a last odd element with 0.0 makes the count even.
    5. Pack two codes per byte, first code in the high nibble: 4 bits/weight.
    6. Optional double quantization (``compress_statistics=True`` in bnb): the
       absmax values are all positive and similar, so subtract their mean to
       centre them at 0 (8-bit signed codes are then used on both sides), and
       quantize the residuals with the dynamic 8-bit code in groups of 256.
       This cuts the scale overhead from 32/64 = 0.5 to ~0.127 bit/parameter.
    """
    if weight.dtype not in _SUPPORTED_DTYPES:
        raise ValueError(f"NF4 quantization supports {_SUPPORTED_DTYPES}, got {weight.dtype}")
    if blocksize <= 0 or blocksize % 2:
        raise ValueError(f"blocksize must be a positive even number, got {blocksize}")
    shape, dtype = weight.shape, weight.dtype
    flat = weight.detach().reshape(-1).float()
    n = flat.numel()
    n_full = n // blocksize
    rem = n - n_full * blocksize

    # Steps 2-3: per-block absmax and scaling.
    full = flat[: n_full * blocksize].view(n_full, blocksize)
    absmax_full = full.abs().amax(dim=1)
    scaled_full = full * (1.0 / absmax_full.clamp(min=1e-38))[:, None]
    parts_absmax, parts_scaled = [absmax_full], [scaled_full.reshape(-1)]
    if rem:
        tail = flat[n_full * blocksize :]
        tail_absmax = tail.abs().amax()
        parts_absmax.append(tail_absmax.reshape(1))
        parts_scaled.append(tail / tail_absmax.clamp(min=1e-38))
    absmax = torch.cat(parts_absmax)
    scaled = torch.cat(parts_scaled).clamp(-1.0, 1.0)

    # Step 4: nearest level = number of thresholds strictly below the value.
    if n % 2:
        scaled = torch.nn.functional.pad(scaled, (0, 1))  # 0.0 -> zero level
    codes = torch.searchsorted(nf4_thresholds(), scaled, right=False).to(torch.uint8)

    # Step 5: pack pairs, first of each pair in the high nibble.
    packed = (codes[0::2] << 4) | codes[1::2]

    if not double_quant:
        return NF4Tensor(packed=packed, blocksize=blocksize, shape=shape, dtype=dtype, absmax=absmax)

    # Step 6: double quantization of the scales.
    offset = absmax.mean()
    absmax_codes, absmax_scale = quantize_blockwise_8bit(absmax - offset, ABSMAX_BLOCKSIZE)
    return NF4Tensor(
        packed=packed,
        blocksize=blocksize,
        shape=shape,
        dtype=dtype,
        absmax_codes=absmax_codes,
        absmax_scale=absmax_scale,
        absmax_offset=offset,
    )


def dequantize_nf4(q: NF4Tensor) -> torch.Tensor:
    """Reconstruct the weight: ``level[code] * block_scale``, in float32, then cast.

    The product is formed in float32 and rounded to ``q.dtype`` only once, at
    the end (round-to-nearest-even for bf16/fp16), which is what bitsandbytes'
    ``dequantize_4bit`` does.  Unlike bnb (which returns shape ``(1, n)`` for a
    1-D weight), the original shape is restored.
    """
    n = q.numel
    codes = _unpack(q.packed.reshape(-1), n).long()
    scales = q.block_absmax().float()
    block_of = torch.arange(n) // q.blocksize
    values = nf4_code()[codes] * scales[block_of]
    return values.reshape(q.shape).to(q.dtype)


# --------------------------------------------------------------------------- #
# Accounting and diagnostics
# --------------------------------------------------------------------------- #
def bits_per_parameter(q: NF4Tensor) -> float:
    """Storage cost in bits per weight, counted from the stored tensors' nbytes.

    4 bits for the code plus the scale overhead: 32/64 = 0.5 without double
    quant (4.5 total); 8/64 + 32/(64*256) (+ one float32 offset) with it
    (~4.127 total).  Shared code books are not counted (see
    :meth:`NF4Tensor.stored_tensors`).
    """
    total_bytes = sum(t.nbytes for t in q.stored_tensors().values())
    return 8.0 * total_bytes / q.numel


def quantization_error(weight: torch.Tensor, q: NF4Tensor) -> dict[str, Union[float, torch.Tensor]]:
    """Round-trip error statistics, for plots.

    Returns a dict with
        ``mean_abs_error`` / ``max_abs_error``: floats over all elements,
        ``block_rms_error``: float32 tensor (n_blocks,), RMS error per block,
        ``block_absmax``: float32 tensor (n_blocks,), absmax of the original
        block - divide by it to compare blocks of different magnitude,
        ``abs_error``: float32 tensor with the weight's shape.
    Errors are measured in float32 against the original weight (after its own
    dtype rounding), so they include the final cast of the dequantized value.
    """
    original = weight.detach().reshape(-1).float()
    restored = dequantize_nf4(q).reshape(-1).float()
    n, bs = q.numel, q.blocksize
    err = restored - original
    pad = q.n_blocks * bs - n
    sq = torch.nn.functional.pad(err.square(), (0, pad)).view(q.n_blocks, bs)
    counts = torch.full((q.n_blocks,), float(bs))
    counts[-1] = bs - pad
    block_absmax = torch.nn.functional.pad(original.abs(), (0, pad)).view(q.n_blocks, bs).amax(dim=1)
    abs_err = err.abs()
    return {
        "mean_abs_error": abs_err.mean().item(),
        "max_abs_error": abs_err.max().item(),
        "block_rms_error": (sq.sum(dim=1) / counts).sqrt(),
        "block_absmax": block_absmax,
        "abs_error": abs_err.reshape(q.shape),
    }


def plot_quantization_error(weight: torch.Tensor, q: NF4Tensor, name: str = "weight") -> Figure:
    """Where NF4's 16 levels fall on a real weight, and how the round-trip error grows with a
    block's absmax.

    Left: the weight histogram over its central 99.9% (a few outliers would otherwise squeeze
    the bulk into one bar) with the levels of the median block drawn as lines. Right: RMS
    error per block of ``q.blocksize`` against that block's absmax.
    """
    err = quantization_error(weight, q)
    values = weight.detach().flatten().float()
    sorted_values = values.sort().values  # torch.quantile refuses tensors above 16M elements
    lo = sorted_values[int(0.0005 * (len(values) - 1))].item()
    hi = sorted_values[int(0.9995 * (len(values) - 1))].item()
    typical = err["block_absmax"].median().item()
    fig, (left, right) = new_figure((11, 3.6), ncols=2)
    left.hist(values.clamp(lo, hi).numpy(), bins=120, density=True, color=MEMORY_COLORS["weights"],
              alpha=0.7, label="original weights")
    levels = [v for v in (nf4_code() * typical).tolist() if lo <= v <= hi]
    for i, level in enumerate(levels):
        left.axvline(level, color=MEMORY_COLORS["activations"], lw=0.8,
                     label=f"NF4 levels x median block absmax ({typical:.3f})" if i == 0 else None)
    left.set(title=f"{name}: values and the NF4 levels", xlabel="value", xlim=(lo, hi))
    left.legend(fontsize=8, loc="upper left")
    right.scatter(err["block_absmax"].numpy(), err["block_rms_error"].numpy(), s=2)
    right.set(title=f"round-trip error per block of {q.blocksize}", xlabel="block absmax", ylabel="RMS error")
    right.grid(alpha=0.3)
    return fig
