"""The CUDA entropy-gate kernel against the float64 oracle and the CPU kernel (skipped without CUDA).

The cases follow tools/device_check_entropy.py (which also benchmarks): shapes from one column to a
million, the three dtypes, top_k on both sides of the kernel's 32-entry list, -inf masks, ties,
huge values, NaN / +inf rows, per-row thresholds, strided rows. tools/gpu_check.sh runs this file
with EAGER_CORE_REQUIRE_CUDA=1, where a build without the CUDA kernel fails instead of skipping.
"""

from __future__ import annotations

import os

import pytest
import torch
from entropy_gate_cases import assert_matches_reference, forced_backend, make_logits, need_backend

from eager_core.ops import backend, entropy_gate
from eager_core.ops.entropy_result import EntropyGateResult

SHAPES = [(1, 1), (3, 2), (7, 17), (5, 2047), (64, 49152), (64, 151936), (5, 200003), (300, 32000), (2, 1_000_003)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.fixture(scope="module", autouse=True)
def cuda_kernel():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if backend("cuda") != "cuda":
        message = "eager_core._C has no CUDA kernel (built without nvcc or without a CUDA torch)"
        if os.environ.get("EAGER_CORE_REQUIRE_CUDA", "") == "1":
            pytest.fail(f"EAGER_CORE_REQUIRE_CUDA=1 but {message}")
        pytest.skip(message)


def on_cpu(res: EntropyGateResult) -> EntropyGateResult:
    assert all(t.device.type == "cuda" for t in res), "the CUDA kernel returned tensors off the GPU"
    return EntropyGateResult(*(t.cpu() for t in res))


def check(x: torch.Tensor, threshold=2.0, top_k: int = 20, kind: str = "topk") -> EntropyGateResult:
    """The CUDA result of logits ``x`` (given on CPU): oracle within TOL, ids exact (ties to the lower
    id), and the same ids and NaN flags as the CPU kernel on the same logits."""
    thr = threshold.cuda() if isinstance(threshold, torch.Tensor) else threshold
    res = on_cpu(entropy_gate(x.cuda(), thr, top_k=top_k, kind=kind))
    assert_matches_reference(res, x, threshold, top_k, kind, exact_ties=True)
    need_backend("cpp")
    with forced_backend("cpp"):
        cpu = entropy_gate(x, threshold, top_k=top_k, kind=kind)
    ok = ~cpu.has_nan
    assert torch.equal(res.has_nan, cpu.has_nan)
    assert torch.equal(res.top2_ids[ok], cpu.top2_ids[ok]), "ids differ from the CPU kernel"
    return res


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("rows,vocab", SHAPES, ids=[f"{r}x{v}" for r, v in SHAPES])
def test_matches_the_oracle_over_shapes_and_top_k(rows, vocab, dtype):
    for top_k in sorted({1, 2, 20, 32, 33, 100, vocab}):
        # (the float64 oracle costs ~1 s per case at 10M logits: big shapes get the list's edges only)
        if top_k > vocab + 1 or (vocab > 20_000 and top_k not in (20, 32, 33)):
            continue
        x = make_logits(rows, vocab, seed=rows * 7 + top_k, dtype=dtype, mask_frac=0.3 * (top_k % 2),
                        ties=top_k == 32, huge=top_k == 100)
        check(x, top_k=top_k)


def test_special_rows():
    x = make_logits(8, 5000, seed=7)
    x[1, 10] = float("nan")
    x[2, 4999] = float("inf")
    x[3] = float("-inf")
    x[4] = float("-inf")
    x[4, 123] = 1.0
    x[5] = 0.0
    res = check(x, threshold=1.0)
    assert res.has_nan.tolist() == [False, True, True, False, False, False, False, False]
    assert torch.isnan(res.entropy[1:3]).all() and not res.branch[1:3].any()
    assert res.logsumexp[3] == float("-inf") and res.entropy[3] == 0 and res.entropy[4] == 0
    assert res.top2_ids[4, 0] == 123 and res.top2_ids[5].tolist() == [0, 1]


def test_per_row_thresholds_full_kind_and_strided_rows():
    check(make_logits(16, 3000, seed=8), torch.rand(16, generator=torch.Generator().manual_seed(8)) * 8, kind="full")
    wide = make_logits(9, 3001, seed=9, dtype=torch.bfloat16)
    check(wide[:, 1:])                 # rows with a stride > V, starting unaligned
    check(wide.t().contiguous().t())   # last dimension not contiguous


def test_empty_batch_and_device_of_the_outputs():
    res = entropy_gate(torch.zeros(0, 10, device="cuda"), 1.0)
    assert res.entropy.shape == (0,) and res.top2_ids.shape == (0, 2)
    assert all(t.device.type == "cuda" for t in res)
