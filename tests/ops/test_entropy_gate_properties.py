"""Property tests: entropy_gate equals the float64 reference on random logits, for both the
compiled CPU kernel ("cpp") and the PyTorch fallback ("torch").

Hypothesis draws the shape (B in 1..64, V in 1..200k), dtype, top_k (including top_k >= V),
kind, threshold form, how many top entries are returned (return_topk), and the logits' character
(scale, -inf masks, ties, huge magnitudes);
the logits themselves come from a seeded generator (drawing 10^5 floats through hypothesis
would be slow and shrink badly). B * V is capped so the float64 oracle stays fast.
"""

from __future__ import annotations

import torch
from entropy_gate_cases import (BACKENDS, assert_matches_reference, assert_topk_matches, forced_backend,
                                make_logits, need_backend)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pytest
from eager_core.ops import entropy_gate

MAX_ELEMENTS = 600_000
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@st.composite
def gate_cases(draw, vocabs):
    vocab = draw(vocabs)
    rows = draw(st.one_of(st.just(1), st.integers(1, max(1, min(64, MAX_ELEMENTS // vocab)))))
    top_k = draw(st.one_of(st.sampled_from([1, 2, 20]), st.integers(1, vocab + 3)))
    return {
        "rows": rows,
        "vocab": vocab,
        "dtype": draw(st.sampled_from(DTYPES)),
        "top_k": top_k,
        "kind": draw(st.sampled_from(["topk", "full"])),
        "per_row_threshold": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**31 - 1)),
        "scale": draw(st.sampled_from([0.01, 1.0, 3.0, 30.0])),
        "mask_frac": draw(st.sampled_from([0.0, 0.0, 0.3, 0.99])),
        "ties": draw(st.booleans()),
        "huge": draw(st.sampled_from([False, False, False, True])),
        "peaked": draw(st.booleans()),
        # More threads than rows makes the CPU kernel split rows into segments and merge them.
        "threads": draw(st.sampled_from([1, 2, 4])),
        # The list asked back (logprobs, confidence): 0 = none, up to the kernels' 32.
        "return_topk": draw(st.sampled_from([0, 0, 1, 2, 5, 20, 32])),
    }


def _run_case(case: dict, backend_name: str) -> None:
    logits = make_logits(
        case["rows"], case["vocab"], seed=case["seed"], dtype=case["dtype"], scale=case["scale"],
        mask_frac=case["mask_frac"], ties=case["ties"], huge=case["huge"], peaked=case["peaked"],
    )
    g = torch.Generator().manual_seed(case["seed"] + 1)
    top = torch.log(torch.tensor(float(case["vocab"]) + 1.0))
    if case["per_row_threshold"]:
        threshold = torch.rand(case["rows"], generator=g) * top
    else:
        threshold = float(torch.rand(1, generator=g) * top)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(case["threads"])
    try:
        with forced_backend(backend_name):
            res = entropy_gate(logits, threshold, top_k=case["top_k"], kind=case["kind"],
                               return_topk=case["return_topk"])
    finally:
        torch.set_num_threads(old_threads)
    assert_matches_reference(res, logits, threshold, case["top_k"], case["kind"],
                             exact_ties=backend_name == "cpp")
    assert_topk_matches(res, logits, case["return_topk"])


@pytest.mark.parametrize("backend_name", BACKENDS)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=gate_cases(st.one_of(st.integers(1, 40), st.integers(41, 5000), st.integers(5001, 20_000))))
def test_matches_float64_reference_small_vocab(backend_name: str, case: dict) -> None:
    need_backend(backend_name)
    _run_case(case, backend_name)


@pytest.mark.parametrize("backend_name", BACKENDS)
@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=gate_cases(st.integers(20_001, 200_000)))
def test_matches_float64_reference_large_vocab(backend_name: str, case: dict) -> None:
    need_backend(backend_name)
    _run_case(case, backend_name)
