"""Weight-only int8: quantize_int8, Int8Weight, and the int8_linear op against float64.

The compiled CPU kernel (csrc/int8_linear_cpu.cpp) must equal x @ dequant(W)^T + b computed in
float64 from the same int8 values and scales, up to float32 summation; bf16 / f16 inputs within
one output rounding. It runs whatever instruction set the CPU has (or EAGER_CORE_CPU_ISA allows:
.ci/run repeats this file under the avx2 and baseline caps; test_int8_isa.py runs every level in
one go). Where the extension is missing, int8_linear is the PyTorch reference and is tested as such.
"""

from __future__ import annotations

import pytest
import torch
from kernel_support import need_op

from eager_core.ops import Int8Weight, linear, quantize_int8
from eager_core.ops import int8_linear as int8_linear_module
from eager_core.ops._extension import extension_disabled
from eager_core.ops.int8_linear import (INT8_SMALL_M, int8_isa, int8_linear, int8_linear_reference, int8_swiglu,
                                        use_int8_kernel)


def need_kernel() -> None:
    """The compiled op must be built (need_op's rules) and not switched off by EAGER_CORE_DISABLE_EXT."""
    __tracebackhide__ = True
    need_op("int8_linear")
    if extension_disabled():
        pytest.skip("EAGER_CORE_DISABLE_EXT=1: int8_linear is the PyTorch reference here")


def exact(x: torch.Tensor, w: Int8Weight, b: torch.Tensor | None) -> torch.Tensor:
    return torch.nn.functional.linear(x.double(), w.dequantize(torch.float64), None if b is None else b.double())


def make(N: int, K: int, group: int | None, seed: int, asymmetric: bool = False) -> Int8Weight:
    """Symmetric by default; asymmetric: rows shifted off zero (so the offsets matter), with offsets
    wherever the group allows them (a multiple of 16)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(N, K, generator=g)
    if asymmetric:
        w = w + torch.linspace(-2, 3, N)[:, None]
    return quantize_int8(w, group, asymmetric=asymmetric)


# --- the quantizer ------------------------------------------------------------------------------

@pytest.mark.parametrize("N,K,group,groups", [(5, 64, 32, 2), (5, 64, None, 1), (3, 40, 32, 1), (2, 96, 16, 6)])
def test_quantize_layout_and_error(N, K, group, groups):
    w = torch.randn(N, K) * torch.logspace(-3, 1, N)[:, None]   # rows of very different size
    q = quantize_int8(w, group, asymmetric=False)
    assert q.qweight.dtype == torch.int8 and q.scales.dtype == torch.float16
    assert q.scales.shape == (N, groups) and q.group_size == K // groups
    assert q.qweight.abs().max() <= 127
    err = (q.dequantize() - w).abs().view(N, groups, -1)
    s = q.scales.float()
    amax = w.abs().view(N, groups, -1).amax(-1)
    torch.testing.assert_close(s, amax / 127, rtol=2.0 ** -11, atol=2.0 ** -25)   # max|w| / 127, in float16
    # Round to nearest against the stored scale; a scale rounded down clips the largest weight by at
    # most 127 times the rounding.
    assert (err <= s[..., None] * 0.5 * (1 + 1e-6) + (amax - 127 * s).clamp(min=0)[..., None]).all()
    assert (q.qweight.view(N, groups, -1).abs().amax(-1) >= 126).all()


def test_quantize_zero_group_and_bad_input():
    w = torch.zeros(2, 64)
    w[1, 40] = 3.0
    q = quantize_int8(w, 32, asymmetric=False)
    assert q.scales[0].eq(1).all() and q.scales[1, 0] == 1 and q.qweight[1, 40] == 127
    torch.testing.assert_close(q.dequantize(), w, rtol=2.0 ** -11, atol=0)   # 3 / 127 rounded to float16
    with pytest.raises(ValueError, match="float16's range"):
        quantize_int8(torch.tensor([[1.0, 7e4]]), None)
    with pytest.raises(ValueError, match="float16's range"):
        Int8Weight(torch.zeros(1, 32, dtype=torch.int8), torch.full((1, 1), 1e5))
    with pytest.raises(ValueError, match="NaN or infinite"):
        quantize_int8(torch.tensor([[1.0, float("nan")]]), None)
    with pytest.raises(ValueError, match="2-D floating"):
        quantize_int8(torch.ones(4, dtype=torch.float32), 32)


def test_int8_weight_holder():
    a, b = make(3, 64, 32, 0), make(5, 64, 32, 1)
    c = Int8Weight.cat([a, b])
    assert c.shape == (8, 64) and torch.equal(c.dequantize(), torch.cat([a.dequantize(), b.dequantize()]))
    assert c.nbytes == 8 * 64 + 8 * 2 * 2                                    # float16 scales
    assert c.scales.dtype == torch.float16
    with pytest.raises(ValueError, match="group sizes"):
        Int8Weight.cat([a, make(2, 64, None, 2)])
    with pytest.raises(ValueError, match="do not fit"):
        Int8Weight(a.qweight, torch.ones(3, 3))
    assert a.dequantize(torch.bfloat16).dtype == torch.bfloat16


def q4_1_grid(N: int, K: int, seed: int) -> torch.Tensor:
    """Weights as llama.cpp's Q4_1 leaves them: per 32, d * q + m with q in 0..15 spanning the group
    (m its minimum, d a fifteenth of its range), d and m float16."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(N, K // 32, 32, generator=g) + torch.randn(N, K // 32, 1, generator=g)
    lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    d, m = ((hi - lo) / 15).half().float(), lo.half().float()
    return (torch.round((w - m) / d).clamp(0, 15) * d + m).view(N, K)


def test_quantize_asymmetric_layout_and_error():
    w = torch.randn(6, 96) * torch.logspace(-3, 1, 6)[:, None] + torch.linspace(-1, 4, 6)[:, None]
    q = quantize_int8(w, 32, asymmetric=True)
    assert q.offsets is not None and q.offsets.shape == q.scales.shape == (6, 3)
    g = w.view(6, 3, 32)
    lo, hi = g.amin(-1), g.amax(-1)
    s, z = q.scales.float(), q.offsets.float()
    # About (max - min) / 255; more where float16 cannot place the offset of a narrow group far from
    # zero (row 0: a spread of ~0.006 around -1) to within a step.
    assert (s >= (hi - lo) / 255 * (1 - 2.0 ** -11)).all()
    torch.testing.assert_close(s[1:], ((hi - lo) / 255)[1:], rtol=0.01, atol=0)
    ends = torch.maximum((z - lo) / s / 128, (hi - z) / s / 127)   # the tighter end at -128 or 127
    rounding = 2.0 ** -11 + 2.0 ** -25 / s                          # float16's, subnormal scales included
    assert ((ends - 1).abs() <= rounding).all()
    err = (q.dequantize() - w).abs().view(6, 3, -1)
    assert (err <= s[..., None] * 0.5 * (1 + 1e-5) + 1e-6 * w.abs().view(6, 3, -1)).all()   # nothing clipped
    sym = quantize_int8(w, 32, asymmetric=False)
    assert sym.offsets is None and (q.dequantize() - w).square().sum() < (sym.dequantize() - w).square().sum()
    const = quantize_int8(torch.full((2, 32), -0.75), 32, asymmetric=True)   # a constant group: exact
    assert const.scales.eq(1).all() and torch.equal(const.dequantize(), torch.full((2, 32), -0.75))
    assert quantize_int8(torch.randn(3, 40), 32, asymmetric=True).offsets is None   # one group of 40: no offsets


def test_auto_choice_is_exact_on_a_q4_1_grid_and_symmetric_otherwise():
    """asymmetric=None: a Q4_1 grid is represented exactly, bit for bit (each group on its own grid:
    scale d, offset m, values 0..15) and takes offsets; a Q8_0 grid is exact symmetric and does not;
    plain Gaussian weights gain less than ASYMMETRIC_GAIN from offsets and stay symmetric (fewer bytes)."""
    w = q4_1_grid(40, 128, 3)
    q = quantize_int8(w)
    assert q.offsets is not None
    assert torch.equal(q.dequantize(), w)
    assert q.qweight.min() >= 0 and q.qweight.max() <= 15
    assert (quantize_int8(w, asymmetric=False).dequantize() - w).abs().max() > 1e-3   # symmetric is not exact
    d = (torch.rand(40, 4, 1) + 0.1).half().float()
    q8 = torch.randint(-127, 128, (40, 4, 32)).float()
    q8[..., 0] = 127
    w = (q8 * d).view(40, 128)
    q = quantize_int8(w)
    assert q.offsets is None and torch.equal(q.dequantize(), w)
    assert quantize_int8(torch.randn(64, 256, generator=torch.Generator().manual_seed(0))).offsets is None


@pytest.mark.parametrize("asymmetric", [False, True, None])
def test_quantize_in_row_blocks_equals_one_block(asymmetric, monkeypatch):
    w = torch.randn(37, 64, generator=torch.Generator().manual_seed(1)) + 0.5
    whole = quantize_int8(w, 32, asymmetric)
    monkeypatch.setattr(int8_linear_module, "_CHUNK_WEIGHTS", 5 * 64)   # blocks of 5 rows, a short last one
    blocks = quantize_int8(w, 32, asymmetric)
    assert torch.equal(whole.qweight, blocks.qweight) and torch.equal(whole.scales, blocks.scales)
    assert (whole.offsets is None) == (blocks.offsets is None)
    assert whole.offsets is None or torch.equal(whole.offsets, blocks.offsets)
    assert quantize_int8(torch.zeros(0, 64), 32, asymmetric).shape == (0, 64)
    bad = w.clone()
    bad[33, 3] = float("inf")                                            # in the last block
    with pytest.raises(ValueError, match="NaN or infinite"):
        quantize_int8(bad, 32, asymmetric)


def test_int8_weight_with_offsets():
    a, b = make(3, 64, 32, 0, asymmetric=True), make(5, 64, 32, 1)
    c = Int8Weight.cat([a, b])           # a symmetric part gets offsets of 0: the same weights
    assert c.offsets is not None and c.offsets[3:].eq(0).all()
    assert torch.equal(c.dequantize(), torch.cat([a.dequantize(), b.dequantize()]))
    assert c.nbytes == 8 * 64 + 2 * 8 * 2 * 2
    q, s, z = c.kernel_tensors
    assert q is c.qweight and s is c.scales and z is c.offsets and c.kernel_tensors is c.kernel_tensors
    assert b.kernel_tensors[2].numel() == 0
    assert c.to("cpu").offsets is not None
    with pytest.raises(ValueError, match="shaped like"):
        Int8Weight(a.qweight, a.scales, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="multiple of 16"):
        Int8Weight(torch.zeros(2, 24, dtype=torch.int8), torch.ones(2, 3), torch.zeros(2, 3))


# --- the op -------------------------------------------------------------------------------------

@pytest.mark.parametrize("M", [1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 33, 64])   # every block of x rows: 1..8
@pytest.mark.parametrize("N,K,group", [(1, 1, None), (3, 5, None), (7, 16, None), (33, 17, None), (130, 576, 32),
                                       (130, 576, None), (1001, 64, 32), (9, 96, 16), (64, 1536, 32)])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("asym", [False, True])
def test_float32_matches_float64(M, N, K, group, with_bias, asym):
    need_kernel()
    w = make(N, K, group, M * 1000 + N + K, asym)
    assert (w.offsets is not None) == (asym and w.group_size % 16 == 0)
    g = torch.Generator().manual_seed(M + N)
    x = torch.randn(M, K, generator=g)
    b = torch.randn(N, generator=g) if with_bias else None
    assert use_int8_kernel(x, w)
    y = int8_linear(x, w, b)
    assert y.dtype == torch.float32 and y.shape == (M, N)
    torch.testing.assert_close(y.double(), exact(x, w, b), rtol=1e-5, atol=1e-5 * K ** 0.5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M", [1, 4, 9, 40])
@pytest.mark.parametrize("N,K,group", [(3, 5, None), (130, 576, 32), (257, 96, 16)])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("asym", [False, True])
def test_half_types_round_once(dtype, M, N, K, group, with_bias, asym):
    """x and bias widen to float32 exactly, the sum runs in float32, and the output is rounded
    once: within half a unit of the last place of the exact result (plus float32 summation).
    bfloat16 on a CPU with AVX512-BF16 (the dot-product kernel) also rounds each scaled weight to
    bfloat16, as F.linear on the weight dequantized to bfloat16 does: a relative 2^-9 per product."""
    need_kernel()
    w = make(N, K, group, M + N, asym)
    g = torch.Generator().manual_seed(K)
    x = torch.randn(M, K, generator=g).to(dtype)
    b = torch.randn(N, generator=g).to(dtype) if with_bias else None
    y = int8_linear(x, w, b)
    assert y.dtype == dtype and y.shape == (M, N)
    ref = exact(x, w, b)
    ulp = 2.0 ** (-8 if dtype == torch.bfloat16 else -11)
    tol = ref.abs() * ulp + 1e-5 * K ** 0.5
    if dtype == torch.bfloat16:
        tol += 2.0 ** -9 * torch.nn.functional.linear(x.double().abs(), w.dequantize(torch.float64).abs())
    assert ((y.double() - ref).abs() <= tol).all()


@pytest.mark.parametrize("M", [1, 3, 8, 13, 64])
@pytest.mark.parametrize("group", [32, 64, None])
@pytest.mark.parametrize("asym", [False, True])
def test_bfloat16_dot_kernel_equals_bf16_dequantized_linear(M, group, asym):
    """The AVX512-BF16 kernel computes F.linear(x, W dequantized to bfloat16) up to float32 summation
    and one output rounding (per-channel: closer still, its int8 values are exact in bfloat16)."""
    need_kernel()
    if not torch.ops.eager_core.int8_linear_bf16_dot():
        pytest.skip("no AVX512-BF16 here (or EAGER_CORE_CPU_ISA caps it): bfloat16 x is widened to float32")
    w = make(300, 576, group, M, asym)
    x = torch.randn(M, 576, generator=torch.Generator().manual_seed(M)).bfloat16()
    y = int8_linear(x, w).double()
    ref = torch.nn.functional.linear(x.double(), w.dequantize(torch.bfloat16).double())
    if group is None and not asym:
        ref = exact(x, w, None)
    assert ((y - ref).abs() <= ref.abs() * 2.0 ** -8 + 1e-4).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("M", [1, 5, 64, INT8_SMALL_M + 3])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("asym", [False, True])
def test_fused_swiglu(dtype, M, with_bias, asym):
    """int8_swiglu = silu(gate) * up of the fused [gate; up] matmul: one compiled call for decode
    rows, int8_linear + torch ops beyond; both against float64."""
    need_kernel()
    w = make(2 * 72, 96, 32, M, asym)
    g = torch.Generator().manual_seed(M)
    x = torch.randn(M, 96, generator=g).to(dtype)
    b = torch.randn(2 * 72, generator=g).to(dtype) if with_bias else None
    y = int8_swiglu(x, w, b)
    assert y.dtype == dtype and y.shape == (M, 72)
    gate, up = exact(x, w, b).chunk(2, dim=-1)
    ref = torch.nn.functional.silu(gate) * up
    # gate and up move by up to rel |x|.|w| (float32 sums; bf16 also rounds each weight, 2^-9), the
    # result rounds once; shifted (asymmetric) rows make |x|.|w| large next to the result.
    ag, au = torch.nn.functional.linear(x.double().abs(), w.dequantize(torch.float64).abs()).chunk(2, dim=-1)
    rel, atol = (1e-5, 1e-4) if dtype == torch.float32 else (2.0 ** -8, 1e-3)
    tol = rel * (ref.abs() + up.abs() * ag + gate.abs() * au + ag * au) + atol
    assert ((y.double() - ref).abs() <= tol).all()


def test_every_output_written_and_threads_agree():
    need_kernel()
    w, x = make(4099, 320, 32, 7), torch.randn(5, 320)   # odd N: the last row is a single-row tail
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = int8_linear(x, w)
        torch.set_num_threads(2)
        two = int8_linear(x, w)
    finally:
        torch.set_num_threads(before)
    assert torch.isfinite(one).all()
    assert torch.equal(one, two)   # each output is one thread's work: same order of sums


def test_leading_dims_strided_input_and_linear_dispatch():
    need_kernel()
    w = make(64, 48, 16, 3)
    x = torch.randn(3, 2, 96)[..., ::2]     # [3, 2, 48], last dim strided
    y = linear(x, w)                        # ops.linear sends an Int8Weight here
    assert y.shape == (3, 2, 64)
    torch.testing.assert_close(y.double(), exact(x.reshape(6, 48), w, None).view(3, 2, 64), rtol=1e-5, atol=1e-5)


def test_nan_and_inf_in_x_propagate():
    need_kernel()
    w = make(3, 64, 32, 0)
    x = torch.ones(3, 64)
    x[1, 5], x[2, 7] = float("nan"), float("inf")
    y = int8_linear(x, w)
    assert torch.isfinite(y[0]).all() and y[1].isnan().all() and (y[2].isnan() | y[2].isinf()).all()


def test_many_rows_and_disabled_extension_take_the_reference(monkeypatch):
    w = make(40, 64, 32, 5)
    x = torch.randn(INT8_SMALL_M + 1, 64)
    assert not use_int8_kernel(x, w)
    torch.testing.assert_close(int8_linear(x, w).double(), exact(x, w, None), rtol=1e-5, atol=1e-4)
    assert not use_int8_kernel(torch.randn(2, 64, dtype=torch.float64), w)
    monkeypatch.setenv("EAGER_CORE_DISABLE_EXT", "1")
    assert not use_int8_kernel(x[:2], w) and int8_isa() == "torch"
    assert torch.equal(int8_linear(x[:2], w), int8_linear_reference(x[:2], w))


def test_isa_is_reported():
    need_kernel()
    assert int8_isa() in ("avx512", "avx2", "baseline")


def test_op_rejects_bad_inputs():
    need_kernel()
    op = torch.ops.eager_core.int8_linear
    q, s = torch.zeros(3, 64, dtype=torch.int8), torch.ones(3, 2, dtype=torch.float16)
    h = {"dtype": torch.float16}
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        op(torch.randn(2, 64).double(), q, s, None)
    with pytest.raises(RuntimeError, match="int8"):
        op(torch.randn(2, 64), q.float(), s, None)
    with pytest.raises(RuntimeError, match="scales"):
        op(torch.randn(2, 64), q, torch.ones(3, 3, **h), None)
    with pytest.raises(RuntimeError, match="scales must be a contiguous float16"):
        op(torch.randn(2, 64), q, torch.ones(3, 2), None)             # float32 scales: the layout before
    with pytest.raises(RuntimeError, match="multiple of 16"):
        op(torch.randn(2, 64), q, torch.ones(3, 8, **h), None)
    with pytest.raises(RuntimeError, match="last dimension"):
        op(torch.randn(2, 65), q, s, None)
    with pytest.raises(RuntimeError, match="rows"):
        op(torch.randn(INT8_SMALL_M + 1, 64), q, s, None)
    with pytest.raises(RuntimeError, match="bias"):
        op(torch.randn(2, 64), q, s, torch.randn(4))
    with pytest.raises(RuntimeError, match="even number of rows"):
        torch.ops.eager_core.int8_swiglu(torch.randn(2, 64), q, s, None)
    with pytest.raises(RuntimeError, match="offsets"):
        op(torch.randn(2, 64), q, s, None, torch.zeros(3, 3, **h))
    with pytest.raises(RuntimeError, match="offsets"):
        op(torch.randn(2, 64), q, s, None, torch.zeros(3, 2))            # float32 offsets
    with pytest.raises(RuntimeError, match="multiple of 16"):
        op(torch.randn(2, 24), q[:, :24].contiguous(), torch.ones(3, 3, **h), None, torch.zeros(3, 3, **h))
