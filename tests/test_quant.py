"""NF4 from scratch (ftlab.lessons.quant) versus bitsandbytes on CPU: bit-exact checks."""

from __future__ import annotations

import math

import pytest
import torch

from ftlab.lessons import quant

bnb_F = pytest.importorskip("bitsandbytes.functional")


@pytest.fixture(autouse=True)
def _no_torch_compile():
    # bitsandbytes wraps its pure-torch fallback kernels (used e.g. for an odd
    # last dimension) in torch.compile; compiling costs ~15 s on CPU and does
    # not change the float32 arithmetic, so run them eagerly.
    with torch._dynamo.config.patch(disable=True):
        yield


def bnb_nf4(w: torch.Tensor, blocksize: int = 64, double_quant: bool = False):
    packed, state = bnb_F.quantize_4bit(
        w, blocksize=blocksize, compress_statistics=double_quant, quant_type="nf4"
    )
    return packed, state, bnb_F.dequantize_4bit(packed, state)


def assert_matches_bnb(w: torch.Tensor, blocksize: int = 64, double_quant: bool = False) -> quant.NF4Tensor:
    q = quant.quantize_nf4(w, blocksize=blocksize, double_quant=double_quant)
    packed, state, deq = bnb_nf4(w, blocksize, double_quant)

    assert q.packed.dtype == torch.uint8
    assert torch.equal(q.packed, packed.reshape(-1))
    if double_quant:
        assert q.absmax is None
        assert torch.equal(q.absmax_codes, state.absmax)
        assert torch.equal(q.absmax_scale, state.state2.absmax)
        assert torch.equal(q.absmax_offset, state.offset)
        assert q.absmax_offset.dtype == torch.float32
    else:
        assert torch.equal(q.absmax, state.absmax)
        assert q.absmax.dtype == torch.float32

    mine = quant.dequantize_nf4(q)
    assert mine.shape == w.shape and mine.dtype == w.dtype
    # bnb returns (1, n) for a 1-D input; the values are what must be equal.
    assert torch.equal(mine, deq.reshape(w.shape))
    return q


# --------------------------------------------------------------------------- #
# Code books
# --------------------------------------------------------------------------- #
def test_nf4_levels_derived_from_normal_quantiles_match_bnb_table():
    table = bnb_F.get_4bit_type("nf4", device="cpu")
    derived = quant.nf4_levels()
    assert derived.shape == (16,)
    # Structure from the paper: 7 negative, exact 0, 8 positive, spans [-1, 1].
    assert (derived < 0).sum() == 7 and (derived > 0).sum() == 8
    assert derived[7] == 0.0 and derived[0] == -1.0 and derived[-1] == 1.0
    assert torch.all(derived[1:] > derived[:-1])
    # Agrees with the published table to ~1-2 float32 ulps.
    assert (derived - table).abs().max() < 2.5e-7
    # With the table's own 7-digit offset the agreement is within one ulp.
    assert (quant.nf4_levels(offset=0.9677083) - table).abs().max() <= 1.2e-7


def test_nf4_code_table_is_bnb_table_exactly():
    assert torch.equal(quant.nf4_code(), bnb_F.get_4bit_type("nf4", device="cpu"))


def test_dynamic_8bit_code_matches_bnb():
    code = quant.dynamic_8bit_code()
    assert code.shape == (256,) and code.dtype == torch.float32
    assert torch.equal(code, bnb_F.create_dynamic_map())


# --------------------------------------------------------------------------- #
# Bit-exact NF4 quantize / dequantize
# --------------------------------------------------------------------------- #
SHAPES = [(128, 64), (7, 33), (4096,), (320, 128), (129, 333)]


@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_bit_exact_gaussian(shape, dtype, double_quant):
    g = torch.Generator().manual_seed(hash(shape) % 1000)
    w = (torch.randn(shape, generator=g) * 0.02).to(dtype)
    assert_matches_bnb(w, double_quant=double_quant)


@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("in_out", [(128, 48), (33, 7), (256, 320)])
def test_bit_exact_nn_linear_init(in_out, dtype, double_quant):
    torch.manual_seed(sum(in_out))
    w = torch.nn.Linear(*in_out).weight.detach().to(dtype)
    assert_matches_bnb(w, double_quant=double_quant)


@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(192, 128), (7, 33), (4096,)])
def test_bit_exact_heavy_tailed(shape, dtype, double_quant):
    torch.manual_seed(3)
    w = torch.distributions.StudentT(torch.tensor(2.0)).sample(shape)
    w.view(-1)[:: 97] *= 50.0  # a few big outliers, absmax varies a lot across blocks
    assert_matches_bnb(w.to(dtype), double_quant=double_quant)


@pytest.mark.parametrize("blocksize", [32, 128, 256])
def test_bit_exact_other_blocksizes(blocksize):
    torch.manual_seed(blocksize)
    w = torch.randn(96, 100)
    assert_matches_bnb(w, blocksize=blocksize)
    assert_matches_bnb(w, blocksize=blocksize, double_quant=True)


@pytest.mark.parametrize("shape", [(5, 48), (3, 32), (40, 96)])
def test_rows_not_aligned_with_blocks_match_bnb_reference_kernel(shape):
    # Blocks run over the flattened weight, so they may straddle rows.  With a
    # last dimension that is a multiple of 16 but not of the block size, bnb's
    # AVX-512 CPU dequantize kernel indexes absmax per row and returns wrong
    # values (bitsandbytes 0.50.2); its pure-torch reference kernel and its
    # scalar kernel use flat blocks.  We compare against the reference kernel.
    ops = pytest.importorskip("bitsandbytes.backends.default.ops")
    torch.manual_seed(7)
    w = torch.randn(shape)
    for double_quant in (False, True):
        q = quant.quantize_nf4(w, double_quant=double_quant)
        packed, state, _ = bnb_nf4(w, double_quant=double_quant)
        assert torch.equal(q.packed, packed.reshape(-1))
        if double_quant:
            absmax = bnb_F.dequantize_blockwise(state.absmax, state.state2) + state.offset
        else:
            absmax = state.absmax
        assert torch.equal(q.block_absmax(), absmax)
        ref = ops._dequantize_4bit_compute(packed.reshape(-1), absmax, state.code, 64, w.shape, w.dtype)
        assert torch.equal(quant.dequantize_nf4(q), ref)


def test_zero_blocks_and_exact_zeros():
    w = torch.randn(8, 64)
    w[2] = 0.0  # a whole block of zeros
    w[5, ::3] = 0.0
    q = assert_matches_bnb(w)
    assert_matches_bnb(w, double_quant=True)
    assert torch.all(quant.dequantize_nf4(q)[w == 0] == 0)


def test_ties_on_thresholds_go_to_lower_code():
    th = quant.nf4_thresholds()
    up = torch.nextafter(th, torch.full_like(th, 2.0))
    down = torch.nextafter(th, torch.full_like(th, -2.0))
    block = torch.cat([torch.ones(1), th, up, down, -torch.ones(1), torch.zeros(17)])  # 64 values
    w = torch.cat([block, block[:50]])  # second copy is a partial block (division path)
    q = assert_matches_bnb(w)
    codes = quant._unpack(q.packed, w.numel())
    assert torch.equal(codes[1:16].long(), torch.arange(15))  # exactly on threshold k -> code k
    assert torch.equal(codes[16:31].long(), torch.arange(1, 16))
    assert torch.equal(codes[31:46].long(), torch.arange(15))


def test_partial_block_uses_division_not_reciprocal():
    # Values where x * (1/a) and x / a fall on different sides of a threshold:
    # bnb scales full blocks by the reciprocal, the trailing partial block by
    # division, and so must we.
    th = quant.nf4_thresholds()
    a = torch.tensor(1.588769793510437)
    cand = th * a
    ups, downs = [cand], [cand]
    for _ in range(4):
        ups.append(torch.nextafter(ups[-1], torch.full_like(cand, 10.0)))
        downs.append(torch.nextafter(downs[-1], torch.full_like(cand, -10.0)))
    cand = torch.cat(ups + downs[1:])
    recip = torch.searchsorted(th, cand * (1.0 / a))
    div = torch.searchsorted(th, cand / a)
    critical = cand[recip != div][:31]
    assert critical.numel() > 0
    block = torch.zeros(64)
    block[0] = a
    block[1 : 1 + critical.numel()] = critical
    w = torch.cat([block, block[:32]])
    q = assert_matches_bnb(w)
    codes = quant._unpack(q.packed, w.numel())
    k = critical.numel()
    assert not torch.equal(codes[1 : 1 + k], codes[65 : 65 + k])


def test_nibble_order_high_first():
    w = torch.tensor([-1.0, 1.0, 0.0, 1.0])  # codes 0, 15, 7, 15
    q = quant.quantize_nf4(w)
    assert q.packed.tolist() == [0x0F, 0x7F]
    assert torch.equal(q.packed, bnb_nf4(w)[0].reshape(-1))
    w_odd = torch.tensor([1.0, -1.0, 1.0])  # padded with the zero code 7
    assert quant.quantize_nf4(w_odd).packed.tolist() == [0xF0, 0xF7]


# --------------------------------------------------------------------------- #
# The 8-bit (double quant) quantizer
# --------------------------------------------------------------------------- #
def test_blockwise_8bit_matches_bnb_including_grid_edge_cases():
    torch.manual_seed(0)
    x = torch.randn(3 * 256 + 17) * torch.rand(3 * 256 + 17)
    x[256:512] = 0.0  # all-zero block
    codes, absmax = quant.quantize_blockwise_8bit(x)
    ref_codes, ref_state = bnb_F.quantize_blockwise(x, blocksize=256)
    assert torch.equal(codes, ref_codes) and torch.equal(absmax, ref_state.absmax)
    assert torch.equal(
        quant.dequantize_blockwise_8bit(codes, absmax), bnb_F.dequantize_blockwise(ref_codes, ref_state)
    )

    # Values just around the half-way points of the 65,536-point grid: here the
    # float32 rounding of floor((v+1)/2*65535 + 0.5) decides the code.
    k = torch.arange(1, 65536, 61, dtype=torch.float64)
    v = ((k - 0.5) / 65535).float() * 2 - 1
    vals = [v]
    for direction in (2.0, -2.0):
        cur = v
        for _ in range(3):
            cur = torch.nextafter(cur, torch.full_like(cur, direction))
            vals.append(cur)
    v = torch.cat(vals)
    v = v.view(-1)[: (v.numel() // 255) * 255].view(-1, 255)
    x = torch.cat([torch.ones(v.shape[0], 1), v], dim=1).reshape(-1)  # absmax exactly 1
    codes, _ = quant.quantize_blockwise_8bit(x)
    ref_codes, _ = bnb_F.quantize_blockwise(x, blocksize=256)
    assert torch.equal(codes, ref_codes)


# --------------------------------------------------------------------------- #
# Storage cost and error
# --------------------------------------------------------------------------- #
def test_bits_per_parameter():
    w = torch.randn(512, 512)  # 4096 blocks -> 16 groups of 256 for double quant
    q = quant.quantize_nf4(w)
    qd = quant.quantize_nf4(w, double_quant=True)
    bpp, bpp_dq = quant.bits_per_parameter(q), quant.bits_per_parameter(qd)
    assert round(bpp, 3) == 4.5
    assert round(bpp_dq, 3) == 4.127
    # Computed from the tensors themselves, not from a formula.
    assert bpp == 8 * (q.packed.nbytes + q.absmax.nbytes) / w.numel()
    n = w.numel()
    assert math.isclose(bpp_dq, 4 + 8 / 64 + 32 / (64 * 256) + 32 / n)
    # Odd sizes: the padding nibble and partial blocks are paid for too.
    small = quant.quantize_nf4(torch.randn(7, 33))
    assert quant.bits_per_parameter(small) == 8 * (116 + 4 * 4) / 231


@pytest.mark.parametrize("double_quant", [False, True])
def test_round_trip_error_bounds(double_quant):
    torch.manual_seed(1)
    w = torch.randn(256, 200)
    q = quant.quantize_nf4(w, double_quant=double_quant)
    stats = quant.quantization_error(w, q)
    absmax = stats["block_absmax"]
    assert stats["block_rms_error"].shape == (q.n_blocks,)
    assert torch.all(stats["block_rms_error"] < absmax / 7)
    assert stats["mean_abs_error"] < stats["max_abs_error"]

    # Per element the worst case is half the widest gap between levels
    # (between -1 and -0.696: 0.152 * absmax, a bit more than absmax / 7),
    # plus, with double quant, the error of the reconstructed scale itself.
    code = quant.nf4_code()
    half_gap = (code[1:] - code[:-1]).max() / 2
    scale = q.block_absmax()
    block_of = torch.arange(w.numel()) // q.blocksize
    bound = half_gap * scale[block_of] + (scale - absmax).abs()[block_of]
    err = stats["abs_error"].reshape(-1)
    assert torch.all(err <= bound * (1 + 1e-6))
    if not double_quant:
        assert torch.equal(scale, absmax)
        assert stats["max_abs_error"] < absmax.max() / 6.5
