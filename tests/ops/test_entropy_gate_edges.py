"""Edge cases of entropy_gate, each checked on the compiled kernel and the PyTorch fallback
against the float64 reference, plus the documented conventions checked by value."""

from __future__ import annotations

import math

import torch
from entropy_gate_cases import BACKENDS, HUGE, assert_matches_reference, forced_backend, make_logits, need_backend

import pytest
from eager_core.ops import entropy_gate

INF = float("inf")


@pytest.fixture(params=BACKENDS)
def backend_name(request) -> str:
    need_backend(request.param)
    with forced_backend(request.param):
        yield request.param


def check(logits: torch.Tensor, threshold=1.0, top_k: int = 20, kind: str = "topk", exact: bool = False):
    res = entropy_gate(logits, threshold, top_k=top_k, kind=kind)
    assert_matches_reference(res, logits, threshold, top_k, kind, exact_ties=exact)
    return res


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_single_token_vocab_pads_second_slot(backend_name, dtype) -> None:
    res = check(torch.tensor([[3.0], [-2.0], [float("-inf")]], dtype=dtype))
    assert res.top2_ids.tolist() == [[0, -1], [0, -1], [0, -1]]
    assert torch.isneginf(res.top2_logprobs[:, 1]).all()
    assert res.top2_logprobs[:2, 0].tolist() == [0.0, 0.0]
    assert res.entropy.tolist() == [0.0, 0.0, 0.0] and not res.branch.any()


def test_all_neg_inf_but_one(backend_name) -> None:
    x = torch.full((3, 1000), -INF)
    x[0, 17] = 5.0
    x[1, 999] = -1e6
    x[2, 0] = 0.0
    res = check(x, threshold=-1.0)
    assert res.entropy.tolist() == [0.0, 0.0, 0.0] and res.entropy_topk.tolist() == [0.0, 0.0, 0.0]
    assert res.top2_ids[:, 0].tolist() == [17, 999, 0]
    assert res.top2_logprobs[:, 0].tolist() == [0.0, 0.0, 0.0]
    assert torch.isneginf(res.top2_logprobs[:, 1]).all()
    assert res.branch.all()  # 0 > -1: a valid row still compares against the threshold


def test_row_of_only_neg_inf_is_not_a_distribution(backend_name) -> None:
    x = torch.randn(2, 300)
    x[1] = -INF
    res = check(x, threshold=-1.0)
    assert torch.isneginf(res.logsumexp[1]) and res.entropy[1] == 0 and res.entropy_topk[1] == 0
    assert torch.isneginf(res.top2_logprobs[1]).all()
    assert res.branch.tolist() == [True, False] and not res.has_nan.any()


@pytest.mark.parametrize("poison", [float("nan"), INF])
def test_nan_and_pos_inf_are_reported_not_decided(backend_name, poison) -> None:
    x = make_logits(4, 5000, seed=3)
    x[1, 123] = poison
    x[3, 4999] = poison
    res = check(x, threshold=-1.0)
    assert res.has_nan.tolist() == [False, True, False, True]
    assert res.branch.tolist() == [True, False, True, False]


def test_equal_logits(backend_name) -> None:
    vocab = 4096
    res = check(torch.zeros(2, vocab), top_k=20, exact=backend_name == "cpp")
    assert res.entropy == pytest.approx([math.log(vocab)] * 2, abs=1e-4)
    assert res.entropy_topk == pytest.approx([math.log(20)] * 2, abs=1e-4)
    if backend_name == "cpp":
        assert res.top2_ids.tolist() == [[0, 1], [0, 1]]


def test_ties_resolve_to_lower_id_across_segments() -> None:
    need_backend("cpp")
    # Two maxima far apart: with 4 threads a B=1 row is split in segments, the tie crosses them.
    x = torch.randn(1, 151936)
    x[0, 150000] = x[0, 70000] = x[0, 5] = 50.0
    old = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        with forced_backend("cpp"):
            res = check(x, exact=True)
    finally:
        torch.set_num_threads(old)
    assert res.top2_ids.tolist() == [[5, 70000]]
    assert res.top2_logprobs[0, 0] == pytest.approx(res.top2_logprobs[0, 1].item())


@pytest.mark.parametrize("threads", [1, 3, 4])
def test_split_rows_merge_exactly(threads) -> None:
    need_backend("cpp")
    # B < threads: the CPU kernel splits each row into segments whose maxima differ.
    x = make_logits(2, 151936, seed=9, scale=1.0, peaked=False)
    x[0, 140000] += 2.0
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with forced_backend("cpp"):
            check(x, top_k=40, exact=True)
            check(x[:1], top_k=100, exact=True)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_huge_magnitudes(backend_name, dtype) -> None:
    x = make_logits(5, 3000, seed=5, dtype=dtype, huge=True)
    x[0] = -x[0].abs()
    x[0, :2] = HUGE[dtype]  # two tied maxima, the rest ~1e30 below: entropy ln 2
    res = check(x)
    assert res.entropy[0] == pytest.approx(math.log(2), abs=1e-4)
    assert res.top2_logprobs[0].tolist() == pytest.approx([-math.log(2)] * 2, abs=1e-4)


@pytest.mark.parametrize("top_k", [1, 2, 64, 65, 300, 2999, 3000, 5000])
def test_top_k_sizes(backend_name, top_k) -> None:
    # 64/65 straddle the CPU list capacity; 65..2999 use selection; >= V means the full vocab.
    x = make_logits(6, 3000, seed=top_k, mask_frac=0.3, ties=top_k % 2 == 0)
    res = check(x, top_k=top_k, kind="topk")
    if top_k >= 3000:
        assert torch.equal(res.entropy_topk, res.entropy)
    if top_k == 1:
        assert (res.entropy_topk == 0).all()


def test_threshold_forms_and_kinds(backend_name) -> None:
    x = make_logits(8, 2000, seed=11, peaked=True)
    res = check(x, threshold=0.5)
    per_row = res.entropy_topk.clone()
    per_row[::2] += 0.1   # even rows: threshold above the entropy -> no branch
    per_row[1::2] -= 0.1  # odd rows: below -> branch
    res_t = check(x, threshold=per_row)
    assert res_t.branch.tolist() == [False, True] * 4
    res_full = check(x, threshold=torch.tensor(0.5), kind="full")
    assert torch.equal(res_full.branch, res_full.entropy > 0.5)


def test_non_contiguous_and_strided_rows(backend_name) -> None:
    wide = make_logits(5, 3001, seed=2)
    check(wide[:, 1:])      # rows with a stride > V, starting unaligned
    check(wide[::2, :2000])  # every other row
    check(wide.t().contiguous().t()[:, :777])  # last dimension not contiguous


def test_empty_batch(backend_name) -> None:
    res = entropy_gate(torch.zeros(0, 10), 1.0)
    assert res.entropy.shape == (0,) and res.top2_ids.shape == (0, 2)
