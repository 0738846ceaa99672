"""The float64 oracle of the entropy-gate tests (entropy_gate_cases.oracle) against closed forms,
the PyTorch reference against the oracle, and the tolerance against an implementation that
computes in bf16 (which it must reject).

Every implementation (CPU kernel, CUDA kernel, PyTorch fallback) is compared with the oracle, so
the oracle is checked here on its own, by values known in closed form.
"""

from __future__ import annotations

import math

import pytest
import torch
from entropy_gate_cases import TOL, assert_matches_reference, make_logits, oracle

from eager_core.ops import entropy_gate_reference

INF = float("inf")


def test_oracle_closed_forms() -> None:
    vocab = 1000
    x = torch.full((6, vocab), -INF, dtype=torch.float64)
    x[0] = 0.0                                   # uniform: H = ln V, top-10 H = ln 10
    x[1, :] = -1e4
    x[1, 7] = 0.0                                # one-hot (the rest e^-10000 = 0): H = 0
    x[2, [3, 900]] = math.log(3.0)               # two equal: ln 2, logsumexp ln 6, ids 3 then 900
    x[3, [5, 6, 7]] = torch.tensor([math.log(2.0), 0.0, 0.0], dtype=torch.float64)   # p = 1/2, 1/4, 1/4
    x[4, 10] = float("nan")                      # NaN: reported, not decided
    # row 5: only -inf
    o = oracle(x.float(), 0.5, 10, "topk")   # ln 2 rounded to float32: 1e-7 below
    assert o.entropy[:4].tolist() == pytest.approx([math.log(vocab), 0.0, math.log(2), 1.5 * math.log(2)], abs=1e-7)
    assert o.entropy_topk[:4].tolist() == pytest.approx([math.log(10), 0.0, math.log(2), 1.5 * math.log(2)], abs=1e-7)
    assert o.logsumexp[:4].tolist() == pytest.approx([math.log(vocab), 0.0, math.log(6), math.log(4)], abs=1e-7)
    assert o.top2_ids[:4].tolist() == [[0, 1], [7, 0], [3, 900], [5, 6]]
    assert o.top2_logprobs[2].tolist() == pytest.approx([-math.log(2)] * 2, abs=1e-12)
    assert o.top2_logprobs[3].tolist() == pytest.approx([-math.log(2), -math.log(4)], abs=1e-7)
    assert o.has_nan.tolist() == [False, False, False, False, True, False]
    assert torch.isnan(o.entropy[4]) and torch.isnan(o.top2_logprobs[4]).all()
    assert o.entropy[5] == 0 and o.entropy_topk[5] == 0 and o.logsumexp[5] == -INF
    assert (o.top2_logprobs[5] == -INF).all()
    assert o.branch.tolist() == [True, False, True, True, False, False]
    one = oracle(torch.tensor([[2.0], [-INF]]), 0.0, 20, "full")
    assert one.top2_ids.tolist() == [[0, -1], [0, -1]] and one.entropy.tolist() == [0.0, 0.0]
    assert one.top2_logprobs.tolist() == [[0.0, -INF], [-INF, -INF]]


def test_oracle_per_row_thresholds_and_kinds() -> None:
    x = torch.zeros(2, 8)
    x[1, :4] = -INF                               # H = ln 4; the other row ln 8
    full = oracle(x, torch.tensor([2.0, 1.0]), 2, "full")
    assert full.branch.tolist() == [True, True]    # ln 8 = 2.08 > 2, ln 4 = 1.39 > 1
    topk = oracle(x, torch.tensor([2.0, 1.0]), 2, "topk")
    assert topk.entropy_topk.tolist() == pytest.approx([math.log(2)] * 2)
    assert topk.branch.tolist() == [False, False]  # ln 2 below both


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["topk", "full"])
def test_pytorch_reference_in_float64_matches_the_oracle(dtype, kind) -> None:
    """The reference's float64 mode (documented as a test oracle) agrees with the independent one."""
    x = make_logits(12, 3001, seed=4, dtype=dtype, mask_frac=0.3, ties=True)
    x[3, 17] = float("nan")
    x[5] = -INF
    res = entropy_gate_reference(x, 2.0, 20, kind, compute_dtype=torch.float64)
    assert_matches_reference(res, x, 2.0, 20, kind, exact_ties=False)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_tolerance_rejects_arithmetic_in_the_input_dtype(dtype) -> None:
    """TOL[bf16/fp16] is float32's: an implementation that computed in the input's own precision
    (as the former 1e-2 nats allowed) fails it; the same code in float32 passes."""
    assert TOL[dtype] == TOL[torch.float32] == 1e-4
    x = make_logits(8, 5000, seed=2, dtype=dtype, scale=1.0, peaked=False)
    good = entropy_gate_reference(x, 2.0, 20, "topk", compute_dtype=torch.float32)
    assert_matches_reference(good, x, 2.0, 20, "topk", exact_ties=False)
    low = entropy_gate_reference(x, 2.0, 20, "topk", compute_dtype=dtype)
    with pytest.raises(AssertionError, match="above tolerance"):
        assert_matches_reference(low, x, 2.0, 20, "topk", exact_ties=False)


def test_reference_defaults_are_the_papers_top_20_entropy():
    x = make_logits(6, 500, seed=12, scale=1.0, peaked=False)
    explicit = entropy_gate_reference(x, 2.0, 20, "topk")
    default = entropy_gate_reference(x, 2.0)
    for a, b in zip(default, explicit):
        assert torch.equal(a, b)
    # a threshold between each row's top-20 entropy and its full entropy: only kind "full" branches
    between = (explicit.entropy + explicit.entropy_topk) / 2
    assert (explicit.entropy_topk < between).all() and (between < explicit.entropy).all()
    assert not entropy_gate_reference(x, between).branch.any()
    assert entropy_gate_reference(x, between, kind="full").branch.all()


def test_branch_needs_an_entropy_strictly_above_the_threshold():
    x = torch.full((2, 50), -1e4)
    x[:, 3] = 0.0                               # one-hot: entropy exactly 0
    assert entropy_gate_reference(x, 0.0).branch.tolist() == [False, False]
    assert entropy_gate_reference(x, torch.tensor([0.0, -1e-6])).branch.tolist() == [False, True]
