"""The small-M linear kernel (csrc/small_linear_cpu.cpp) against F.linear in float64.

The kernel needs AVX-512F (float32) or AVX512-BF16 (bfloat16). Where the CPU lacks them, or
EAGER_CORE_CPU_ISA caps them off, its tests skip naming the missing instruction set and
test_dispatch_follows_instruction_set checks that ops.linear is F.linear there (kernel_support.py).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kernel_support import isa_cap, need_small_linear, small_linear_missing_isa

from eager_core.ops import linear
from eager_core.ops.linear import SMALL_M, use_small_linear


@pytest.mark.parametrize("M", [1, 2, 3, 7, 8, 9, 16, 17, 31, 32])
@pytest.mark.parametrize("N,K", [(1, 1), (3, 5), (7, 16), (33, 17), (130, 576), (1001, 40)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_matches_float64(M, N, K, with_bias):
    need_small_linear(torch.float32)
    g = torch.Generator().manual_seed(M * 1000 + N + K)
    x, w = torch.randn(M, K, generator=g), torch.randn(N, K, generator=g)
    b = torch.randn(N, generator=g) if with_bias else None
    assert use_small_linear(x, w) == (M <= SMALL_M[torch.float32])
    ref = F.linear(x.double(), w.double(), None if b is None else b.double())
    # The kernel itself at any row count, and linear() whichever path it takes (oneDNN above SMALL_M).
    for y in (torch.ops.eager_core.small_linear(x, w, b), linear(x, w, b)):
        assert y.dtype == torch.float32 and y.shape == (M, N)
        torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5 * K ** 0.5)


@pytest.mark.parametrize("M", [1, 2, 7, 8, 9, 16])
@pytest.mark.parametrize("N,K", [(1, 1), (3, 5), (33, 31), (130, 576), (1001, 64)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_bf16_matches_oneDNN(M, N, K, with_bias):
    """bfloat16: products of bf16 pairs summed in float32, then one rounding, like F.linear's
    oneDNN path; so the two agree to within one bf16 rounding (plus summation order)."""
    need_small_linear(torch.bfloat16)
    g = torch.Generator().manual_seed(M * 1000 + N + K)
    x, w = torch.randn(M, K, generator=g).bfloat16(), torch.randn(N, K, generator=g).bfloat16()
    b = torch.randn(N, generator=g).bfloat16() if with_bias else None
    assert use_small_linear(x, w) == (M <= SMALL_M[torch.bfloat16])
    y = torch.ops.eager_core.small_linear(x, w, b)   # the kernel itself, at any row count
    assert y.dtype == torch.bfloat16 and y.shape == (M, N)
    exact = F.linear(x.double(), w.double(), None if b is None else b.double())
    assert ((y.double() - exact).abs() <= exact.abs() * 2 ** -8 + 1e-5 * K).all()   # within one bf16 rounding
    torch.testing.assert_close(y, F.linear(x, w, b), rtol=2 ** -7, atol=1e-4 * K)


def test_bf16_nan_and_inf_propagate():
    need_small_linear(torch.bfloat16)
    x = torch.ones(2, 40).bfloat16()
    w = torch.ones(3, 40).bfloat16()
    w[1, 5], w[2, 7] = float("nan"), float("inf")
    y = linear(x, w)
    assert y[:, 0].eq(40).all() and y[:, 1].isnan().all() and y[:, 2].eq(float("inf")).all()


def test_every_output_written_and_threads_agree():
    need_small_linear(torch.float32)
    x, w = torch.randn(5, 300), torch.randn(4099, 300)   # odd N: the last row is a single-row tail
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = linear(x, w)
        torch.set_num_threads(2)
        two = linear(x, w)
    finally:
        torch.set_num_threads(before)
    assert torch.isfinite(one).all()
    assert torch.equal(one, two)   # each output is one thread's work: same order of sums


def test_leading_dims_and_strided_input():
    need_small_linear(torch.float32)
    w = torch.randn(64, 48)
    x = torch.randn(3, 2, 96)[..., ::2]     # [3, 2, 48], last dim strided
    y = linear(x, w)
    assert y.shape == (3, 2, 64)
    torch.testing.assert_close(y, F.linear(x.contiguous(), w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("M", [17, 40, 300])
def test_float32_above_the_kernel_takes_onednn_and_matches_float64(M):
    from eager_core.ops.linear import use_onednn_f32
    from eager_core.ops.onednn import onednn_linear
    g = torch.Generator().manual_seed(M)
    x, w, b = torch.randn(M, 96, generator=g), torch.randn(50, 96, generator=g), torch.randn(50, generator=g)
    if not torch.backends.mkldnn.is_available():
        pytest.skip("torch built without oneDNN")
    assert use_onednn_f32(x, w)
    # Few rows: the small kernel where the CPU runs it, else oneDNN too.
    assert use_onednn_f32(x[:SMALL_M[torch.float32]], w) == (not need_kernel_f32())
    ref = F.linear(x.double(), w.double(), b.double())
    torch.testing.assert_close(linear(x, w, b).double(), ref, rtol=1e-5, atol=1e-4)
    y3 = onednn_linear(x.reshape(1, M, 96), w)   # leading dimensions kept
    assert y3.shape == (1, M, 50)
    assert not use_onednn_f32(x.bfloat16(), w.bfloat16()) and not use_onednn_f32(x.double(), w.double())


def need_kernel_f32() -> bool:
    return small_linear_missing_isa(torch.float32) is None


def test_falls_back_to_f_linear_outside_its_domain(monkeypatch):
    w = torch.randn(8, 16)
    assert not use_small_linear(torch.randn(SMALL_M[torch.float32] + 1, 16), w)  # too many rows
    assert not use_small_linear(torch.randn(SMALL_M[torch.bfloat16] + 1, 16).bfloat16(), w.bfloat16())
    assert not use_small_linear(torch.randn(2, 16, dtype=torch.float64), w.double())
    assert not use_small_linear(torch.randn(2, 16).half(), w.half())
    assert not use_small_linear(torch.randn(2, 16).bfloat16(), w)                 # mixed dtypes
    assert not use_small_linear(torch.randn(2, 32), torch.randn(32, 16).t())     # non-contiguous weight
    monkeypatch.setenv("EAGER_CORE_DISABLE_EXT", "1")
    assert not use_small_linear(torch.randn(2, 16), w)
    x = torch.randn(2, 16)
    assert torch.equal(linear(x, w), F.linear(x, w))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dispatch_follows_instruction_set(dtype):
    """The kernel runs exactly where the CPU has its instruction set. Elsewhere (or under an
    EAGER_CORE_CPU_ISA cap, which must reach the kernel) ops.linear is F.linear and the op refuses."""
    missing = small_linear_missing_isa(dtype)           # needs the op: fails under REQUIRE_EXT without it
    if isa_cap() is not None:
        assert missing is not None, f"EAGER_CORE_CPU_ISA={isa_cap()} did not turn the kernel off"
    g = torch.Generator().manual_seed(3)
    x, w, b = torch.randn(4, 64, generator=g), torch.randn(32, 64, generator=g), torch.randn(32, generator=g)
    x, w, b = x.to(dtype), w.to(dtype), b.to(dtype)
    assert use_small_linear(x, w) == (missing is None)
    if missing is None:
        rtol, atol = (1e-5, 1e-4) if dtype == torch.float32 else (2 ** -7, 1e-2)
        torch.testing.assert_close(linear(x, w, b), F.linear(x, w, b), rtol=rtol, atol=atol)
    else:
        assert torch.equal(linear(x, w, b), F.linear(x, w, b))
        with pytest.raises(RuntimeError, match="this CPU lacks"):
            torch.ops.eager_core.small_linear(x, w, b)


def test_op_rejects_bad_inputs():
    need_small_linear(torch.float32)
    op = torch.ops.eager_core.small_linear
    with pytest.raises(RuntimeError, match="float32"):
        op(torch.randn(2, 4).double(), torch.randn(3, 4).double(), None)
    with pytest.raises(RuntimeError, match="both"):
        op(torch.randn(2, 4).bfloat16(), torch.randn(3, 4), None)
    with pytest.raises(RuntimeError, match="last dimension"):
        op(torch.randn(2, 5), torch.randn(3, 4), None)
    with pytest.raises(RuntimeError, match="rows"):
        op(torch.randn(65, 4), torch.randn(3, 4), None)
    with pytest.raises(RuntimeError, match="bias"):
        op(torch.randn(2, 4), torch.randn(3, 4), torch.randn(4))
