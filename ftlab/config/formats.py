"""Storage formats of quantized weights and 8-bit optimizer state, as the numbers that price them.

The optimizer table and the memory predictor need only sizes: how many values share one
scale, how many entries a code book has. The code books themselves, and how values are
quantized with them, are a lesson (:mod:`ftlab.lessons.quant`), which imports these
numbers from here and checks them against bitsandbytes in its tests, so the training path
never imports a lesson.
"""
from __future__ import annotations

NF4_BLOCKSIZE = 64
"""Values per 4-bit block: one absmax scale each (bitsandbytes' default for NF4 weights)."""
ABSMAX_BLOCKSIZE = 256
"""Block size bitsandbytes uses for the second-level (absmax) quantization."""
NF4_CODE_ENTRIES = 16
"""Levels of the NF4 code book (4 bits), each kept as one fp32 value in every quant state."""
DYNAMIC_CODE_ENTRIES = 256
"""Levels of bitsandbytes' signed dynamic 8-bit code book, kept as fp32 values."""
FP32_BYTES = 4
