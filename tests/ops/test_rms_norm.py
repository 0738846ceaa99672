"""The compiled RMSNorm (csrc/rms_norm_cpu.cpp) against its PyTorch formula and float64."""

from __future__ import annotations

import pytest
import torch
from kernel_support import need_op

from eager_core.ops.norm import rms_norm, rms_norm_reference

DTYPES = [torch.bfloat16, torch.float16]


def _ulp(t: torch.Tensor) -> torch.Tensor:
    """One step of ``t``'s dtype at each value's magnitude."""
    eps = torch.finfo(t.dtype).eps   # 2^-mantissa bits
    return torch.exp2(torch.floor(torch.log2(t.float().abs().clamp_min(1e-30)))) * eps


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 576), (37, 64), (3, 5, 128), (2, 1), (0, 16)])
def test_op_keeps_the_formulas_two_roundings(dtype, shape):
    need_op("rms_norm")
    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=g) * 4).to(dtype)
    w = torch.randn(shape[-1], generator=g).to(dtype)
    got = torch.ops.eager_core.rms_norm(x, w, 1e-5)
    ref = rms_norm_reference(x, w, 1e-5)
    assert got.shape == x.shape and got.dtype == dtype
    # The same roundings; only the last bit of r may differ (the sum of squares is summed in double).
    assert ((got.float() - ref.float()).abs() <= _ulp(ref)).all()
    if got.numel():
        assert (got == ref).float().mean() > 0.99
    exact = x.double() / torch.sqrt(x.double().pow(2).mean(-1, keepdim=True) + 1e-5) * w.double()
    # Two roundings, each at most half a step (2^-8 relative in bf16): together one eps relative.
    assert ((got.double() - exact).abs() <= 1.01 * torch.finfo(dtype).eps * exact.abs() + 1e-6).all()


def test_dispatch_and_fallback(monkeypatch):
    x, w = torch.randn(4, 32), torch.randn(32)
    torch.testing.assert_close(rms_norm(x, w, 1e-6), torch.nn.functional.rms_norm(x, (32,), w, 1e-6), rtol=0, atol=0)
    xb, wb = x.bfloat16(), w.bfloat16()
    monkeypatch.setenv("EAGER_CORE_DISABLE_EXT", "1")
    assert torch.equal(rms_norm(xb, wb, 1e-6), rms_norm_reference(xb, wb, 1e-6))


def test_op_rejects_bad_inputs():
    need_op("rms_norm")
    x = torch.randn(2, 8).bfloat16()
    for bad in ((x.float(), torch.randn(8)), (x, torch.randn(8)), (x, torch.randn(7).bfloat16())):
        with pytest.raises(RuntimeError, match="rms_norm"):
            torch.ops.eager_core.rms_norm(*bad, 1e-5)
