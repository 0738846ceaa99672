"""Shared helpers of the entropy-gate tests: logits generators, backend forcing, and the
comparison against the float64 reference (the oracle every property is checked against)."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator

import pytest
import torch

from eager_core.ops import backend, entropy_gate_reference
from eager_core.ops._extension import DISABLE_ENV, load_extension

REQUIRE_EXT = os.environ.get("EAGER_CORE_REQUIRE_EXT", "") == "1"
BACKENDS = ("cpp", "torch")
TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float16: 1e-2}
HUGE = {torch.float32: 1e30, torch.bfloat16: 1e30, torch.float16: 2e4}  # fp16 tops out at 65504


def need_backend(name: str) -> None:
    """Skip (or, under EAGER_CORE_REQUIRE_EXT=1, fail) when the compiled extension is absent."""
    __tracebackhide__ = True                             # report the skip at the calling test
    if name == "cpp" and load_extension() is None:
        if REQUIRE_EXT:
            pytest.fail("EAGER_CORE_REQUIRE_EXT=1 but eager_core._C is not importable")
        pytest.skip("eager_core._C is not built")


@contextlib.contextmanager
def forced_backend(name: str) -> Iterator[None]:
    """Run the body with entropy_gate using `name` ("cpp" or "torch") on CPU tensors."""
    old = os.environ.get(DISABLE_ENV)
    os.environ[DISABLE_ENV] = "1" if name == "torch" else "0"
    try:
        assert backend("cpu") == name
        yield
    finally:
        if old is None:
            os.environ.pop(DISABLE_ENV, None)
        else:
            os.environ[DISABLE_ENV] = old


def make_logits(
    rows: int,
    vocab: int,
    *,
    seed: int,
    dtype: torch.dtype = torch.float32,
    scale: float = 3.0,
    mask_frac: float = 0.0,
    ties: bool = False,
    peaked: bool = True,
    huge: bool = False,
) -> torch.Tensor:
    """Random logits with a spread of entropies: some rows flat, some peaked on a random token.

    mask_frac of the entries become -inf (never a whole row: each row keeps one finite token);
    ties rounds values to integers so many logits are equal; huge scales to ~1e30 (2e4 for fp16).
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, vocab, generator=g, dtype=torch.float64) * scale
    if peaked:
        boost = torch.rand(rows, generator=g, dtype=torch.float64) * 4 * scale
        x[torch.arange(rows), torch.randint(vocab, (rows,), generator=g)] += boost * math.log(vocab + 1)
    if ties:
        x = x.round()
    if huge:
        x = x / x.abs().amax(-1, keepdim=True).clamp_min(1e-30) * HUGE[dtype]
    if mask_frac > 0:
        mask = torch.rand(rows, vocab, generator=g) < mask_frac
        mask[torch.arange(rows), torch.randint(vocab, (rows,), generator=g)] = False
        x = x.masked_fill(mask, float("-inf"))
    return x.to(dtype)


def _close(got: torch.Tensor, want: torch.Tensor, tol: float, what: str) -> None:
    got, want = got.double(), want.double()
    assert torch.equal(torch.isneginf(got), torch.isneginf(want)), f"{what}: -inf positions differ"
    finite = torch.isfinite(want)
    assert torch.isfinite(got[finite]).all(), f"{what}: non-finite where the reference is finite"
    err = (got[finite] - want[finite]).abs()
    bound = tol + 1e-5 * want[finite].abs()  # relative part for logsumexp of huge logits
    worst = (err - bound).max().item() if err.numel() else -1.0
    assert worst <= 0, f"{what}: max abs error {err.max().item():.3g} above tolerance {tol}"


def assert_matches_reference(
    res, logits: torch.Tensor, threshold, top_k: int, kind: str, *, exact_ties: bool
) -> None:
    """Check an EntropyGateResult against the float64 reference on the same logits.

    Floats within TOL[dtype]; top2 ids equal up to ties (same logit value), or exactly equal
    to the lowest-id-first order when exact_ties; has_nan equal; branch equal wherever the
    reference entropy is more than 1e-3 from the threshold; rows with has_nan: branch False
    and float outputs NaN.
    """
    ref = entropy_gate_reference(logits, threshold, top_k, kind, compute_dtype=torch.float64)
    n_rows, vocab = logits.shape
    tol = TOL[logits.dtype]
    assert res.entropy.shape == (n_rows,) and res.entropy.dtype == torch.float32
    assert res.entropy_topk.shape == (n_rows,) and res.entropy_topk.dtype == torch.float32
    assert res.top2_ids.shape == (n_rows, 2) and res.top2_ids.dtype == torch.int64
    assert res.top2_logprobs.shape == (n_rows, 2) and res.top2_logprobs.dtype == torch.float32
    assert res.logsumexp.shape == (n_rows,) and res.logsumexp.dtype == torch.float32
    assert res.branch.dtype == torch.bool and res.has_nan.dtype == torch.bool
    assert torch.equal(res.has_nan, ref.has_nan)

    bad = ref.has_nan
    if bad.any():
        assert not res.branch[bad].any()
        for field in ("entropy", "entropy_topk", "logsumexp", "top2_logprobs"):
            assert torch.isnan(getattr(res, field)[bad]).all(), f"{field} of a NaN row is not NaN"
    ok = ~bad
    for field in ("entropy", "entropy_topk", "logsumexp", "top2_logprobs"):
        _close(getattr(res, field)[ok], getattr(ref, field)[ok], tol, field)

    ids, ref_ids = res.top2_ids[ok], ref.top2_ids[ok]
    x = logits[ok].double()
    if vocab == 1:
        assert (ids[:, 0] == 0).all() and (ids[:, 1] == -1).all()
    elif ids.numel():
        assert ((ids >= 0) & (ids < vocab)).all() and (ids[:, 0] != ids[:, 1]).all()
        assert torch.equal(x.gather(1, ids), x.gather(1, ref_ids)), "top2 ids differ beyond ties"
        if exact_ties:
            order = torch.sort(x, dim=1, descending=True, stable=True).indices[:, :2]
            assert torch.equal(ids, order), "ties not resolved to the lower id"

    chosen = (ref.entropy_topk if kind == "topk" else ref.entropy)[ok].double()
    thr = threshold if not isinstance(threshold, torch.Tensor) else threshold.double().expand(n_rows)[ok]
    clear = (chosen - thr).abs() > 1e-3
    assert torch.equal(res.branch[ok][clear], ref.branch[ok][clear])
