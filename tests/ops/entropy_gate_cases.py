"""Shared helpers of the entropy-gate tests: logits generators, backend forcing, and the
comparison against the float64 oracle every property is checked against.

The oracle (``oracle``) is NumPy float64 code written for the tests, not
``entropy_gate_reference``: the PyTorch reference is itself one of the implementations under test
(the "torch" backend), so checking it against its own float64 run would only compare it with itself
in another precision. ``test_entropy_oracle.py`` checks the oracle against closed forms.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from eager_core.ops import backend
from eager_core.ops._extension import DISABLE_ENV, load_extension

REQUIRE_EXT = os.environ.get("EAGER_CORE_REQUIRE_EXT", "") == "1"
BACKENDS = ("cpp", "torch")
# Absolute tolerance (nats; plus 1e-5 relative, see _close) of every float output against the oracle.
# The same for every input dtype: bf16 (8 significant bits) and fp16 (11) widen to float32 (24)
# exactly, every implementation computes in float32 from the widened values, and the oracle reads the
# same values in float64. So the input dtype adds no error; only float32 rounding does.
# Error model: H = log S - T/S with S = sum e^d, T = sum e^d d (d = x - max). A relative error e in
# S and T moves H by at most (1 + 2|T/S|) e, and |T/S| = log S - H <= ln V (12.2 at V = 2e5), so
# |dH| <= 25 e. Sums kept as partial sums merged pairwise (PyTorch's cascade sum; the kernels' lanes
# and segments) have e ~ log2(n) u with u = 2^-24 = 6e-8, plus a few u from each exp (CUDA's __expf
# included): |dH| <= 25 * 20 * 6e-8 = 3e-5 at V = 2e5. Measured: at most 7e-6 (torch backend, flat
# rows of 2e5 to 1e6 logits, any dtype), 1e-6 elsewhere. 1e-4 is that bound with a 3x margin, and it
# is 100x below what computing in bf16 itself would give (u = 2^-9: 25 * 2e-3 = 5e-2 nats), an error
# that the former bf16/fp16 tolerance of 1e-2 nats could not tell from a correct kernel.
TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-4, torch.float16: 1e-4}
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


class Oracle:
    """The gate's outputs in float64, as tensors with EntropyGateResult's field names."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


def oracle(logits: torch.Tensor, threshold, top_k: int, kind: str) -> Oracle:
    """The entropy gate in NumPy float64, from the definitions (independent of eager_core.ops).

    With d = x - max(x), S = sum exp(d), log p_i = d_i - log S:  H = -sum p log p = log S - sum(p d) / S
    (terms with p = 0 count 0); the top-k entropy is the same over the k largest logits; logsumexp is
    max + log S; top-2 ids are the two largest logits, lower id first among equal values. Conventions
    of entropy_gate.py: a row with NaN or +inf is has_nan (floats NaN, no branch); a row of only -inf
    has logsumexp -inf, entropies 0 and top-2 log-probs -inf; a one-column row pads with id -1, -inf.
    """
    x = logits.detach().cpu().double().numpy()           # bf16 / fp16 / fp32 -> float64 is exact
    rows, vocab = x.shape
    with np.errstate(all="ignore"):
        bad = np.isnan(x).any(1) | (x == np.inf).any(1)
        m = x.max(1, initial=-np.inf)
        empty = (m == -np.inf) & ~bad
        m0 = np.where(np.isfinite(m), m, 0.0)
        d = x - m0[:, None]

        def entropy_and_log_s(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            p = np.exp(v)
            s = p.sum(1)
            t = np.where(p > 0, p * v, 0.0).sum(1)
            return np.maximum(np.log(s) - t / s, 0.0), np.log(s)

        h, log_s = entropy_and_log_s(d)
        k = min(top_k, vocab)
        hk = h if k == vocab else entropy_and_log_s(np.partition(d, vocab - k, axis=1)[:, vocab - k:])[0]
        ids = np.full((rows, 2), -1, dtype=np.int64)
        ids[:, 0] = np.argmax(np.where(np.isnan(x), -np.inf, x), 1)       # argmax: first (lowest) id of the max
        if vocab > 1:
            rest = np.where(np.isnan(x), -np.inf, x)
            rest[np.arange(rows), ids[:, 0]] = -np.inf
            second = np.argmax(rest, 1)
            # a row of only -inf after removing the first: any other id has the same (-inf) value
            ids[:, 1] = np.where(second == ids[:, 0], (ids[:, 0] + 1) % vocab, second)
        logp2 = np.where(ids >= 0, np.take_along_axis(d, np.maximum(ids, 0), 1) - log_s[:, None], -np.inf)
        lse = m0 + log_s
    h[empty], hk[empty], lse[empty], logp2[empty] = 0.0, 0.0, -np.inf, -np.inf
    for field in (h, hk, lse):
        field[bad] = np.nan
    logp2[bad] = np.nan
    thr = (threshold.double().cpu().numpy().reshape(-1) if isinstance(threshold, torch.Tensor)
           else np.float64(np.float32(threshold)))
    chosen = hk if kind == "topk" else h
    branch = ~bad & ~empty & (chosen > thr)
    t = torch.from_numpy
    return Oracle(entropy=t(h), entropy_topk=t(hk), top2_ids=t(ids), top2_logprobs=t(logp2), logsumexp=t(lse),
                  branch=t(branch), has_nan=t(bad))


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
    """Check an EntropyGateResult against the float64 oracle on the same logits.

    Floats within TOL[dtype]; top2 ids equal up to ties (same logit value), or exactly equal
    to the lowest-id-first order when exact_ties; has_nan equal; branch equal wherever the
    reference entropy is more than 1e-3 from the threshold; rows with has_nan: branch False
    and float outputs NaN.
    """
    ref = oracle(logits, threshold, top_k, kind)
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


def assert_topk_matches(res, logits: torch.Tensor, r: int) -> None:
    """Check topk_ids / topk_logprobs ([B, r]) against NumPy float64: the r largest logits in
    descending order with equal values in id order, log-probabilities d - log S; -1 / -inf pad
    past the vocabulary; NaN for has_nan rows; -inf (any id) where the logit itself is -inf."""
    n_rows, vocab = logits.shape
    assert res.topk_ids.shape == (n_rows, r) and res.topk_ids.dtype == torch.int64
    assert res.topk_logprobs.shape == (n_rows, r) and res.topk_logprobs.dtype == torch.float32
    if r == 0 or n_rows == 0:
        return
    x = logits.detach().cpu().double().numpy()
    tol = TOL[logits.dtype]
    got_ids, got_lp = res.topk_ids.cpu().numpy(), res.topk_logprobs.cpu().double().numpy()
    n = min(r, vocab)
    for row in range(n_rows):
        v = x[row]
        if np.isnan(v).any() or (v == np.inf).any():
            assert np.isnan(got_lp[row]).all(), "topk_logprobs of a NaN row are not NaN"
            continue
        assert (got_ids[row, n:] == -1).all() and np.isneginf(got_lp[row, n:]).all(), "pad past the vocabulary"
        order = np.argsort(-v, kind="stable")[:n]           # descending, equal values by id
        m = v.max()
        if m == -np.inf:
            assert np.isneginf(got_lp[row, :n]).all()
            continue
        with np.errstate(all="ignore"):
            want_lp = (v[order] - m) - np.log(np.exp(v - m).sum())
        finite = np.isfinite(want_lp)
        assert np.array_equal(got_ids[row, :n][finite], order[finite]), \
            f"row {row}: top ids {got_ids[row, :n].tolist()} != {order.tolist()}"
        assert np.array_equal(np.isneginf(got_lp[row, :n]), ~finite), f"row {row}: -inf positions differ"
        err = np.abs(got_lp[row, :n][finite] - want_lp[finite])
        assert (err <= tol + 1e-5 * np.abs(want_lp[finite])).all(), f"row {row}: logprob error {err.max():.3g}"
