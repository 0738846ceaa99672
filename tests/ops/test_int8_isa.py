"""Every instruction-set level of the int8 kernel in one run: EAGER_CORE_CPU_ISA=avx2 and =baseline
are read once per process, so each level runs in a fresh process and must match float64 (same
shapes as the main test, tails and groups included) and name itself in int8_linear_isa()."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from kernel_support import need_op

SCRIPT = textwrap.dedent(
    """
    import itertools, sys, torch
    torch.set_num_threads(2)
    from eager_core.ops import quantize_int8
    from eager_core.ops.int8_linear import int8_isa, int8_linear, use_int8_kernel
    want = sys.argv[1]
    assert int8_isa() == want, (int8_isa(), want)
    g = torch.Generator().manual_seed(0)
    shapes = ((3, 5, None), (33, 17, None), (130, 576, 32), (9, 96, 16), (65, 1536, None))
    # asym: rows shifted off zero and asymmetric groups (offsets) wherever the group allows them
    for M, (N, K, group), asym in itertools.product((1, 3, 4, 5, 8, 9, 33), shapes, (False, True)):
        w = quantize_int8(torch.randn(N, K, generator=g) + (1.5 if asym else 0.0), group, asymmetric=asym)
        for dtype in (torch.float32, torch.bfloat16):
            x, b = torch.randn(M, K, generator=g).to(dtype), torch.randn(N, generator=g).to(dtype)
            assert use_int8_kernel(x, w)
            y = int8_linear(x, w, b).double()
            ref = torch.nn.functional.linear(x.double(), w.dequantize(torch.float64), b.double())
            tol = ref.abs() * (1e-5 if dtype == torch.float32 else 2 ** -8) + 1e-5 * K ** 0.5
            if dtype == torch.bfloat16:   # the AVX512-BF16 kernel rounds scaled weights to bf16
                tol += 2 ** -9 * torch.nn.functional.linear(x.double().abs(), w.dequantize(torch.float64).abs())
            assert ((y - ref).abs() <= tol).all(), (want, M, N, K, group, asym, dtype, (y - ref).abs().max())
    print("ok", want)
    """
)


@pytest.mark.parametrize("cap", ["avx2", "baseline"])
def test_isa_level_matches_float64(cap):
    need_op("int8_linear")
    if cap == "avx2":
        import torch
        if torch.ops.eager_core.int8_linear_isa() == "baseline":
            pytest.skip("this CPU (or EAGER_CORE_CPU_ISA) has no AVX2 + FMA: the avx2 level cannot run here")
    env = {**os.environ, "EAGER_CORE_CPU_ISA": cap}
    out = subprocess.run([sys.executable, "-c", SCRIPT, cap], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"ok {cap}" in out.stdout
