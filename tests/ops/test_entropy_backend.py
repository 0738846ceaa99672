"""Backend selection, the fallback and its warning, argument validation, and the reference
itself against closed-form entropies."""

from __future__ import annotations

import math
import warnings

import torch
from entropy_gate_cases import REQUIRE_EXT, forced_backend, make_logits, need_backend

import pytest
from eager_core.errors import EagerError, RequestError
from eager_core.ops import _extension, backend, entropy_gate, entropy_gate_reference


def test_compiled_extension_is_used_when_built() -> None:
    """CI sets EAGER_CORE_REQUIRE_EXT=1, so a broken build fails here instead of falling back."""
    if _extension.load_extension() is None and not REQUIRE_EXT:
        pytest.skip("eager_core._C is not built")
    with forced_backend("cpp"):
        assert backend("cpu") == "cpp"
        assert backend() in ("cpp", "cuda")
        assert torch.ops.eager_core.entropy_gate.default is not None


def test_env_var_forces_fallback_at_call_time(monkeypatch) -> None:
    need_backend("cpp")
    x = make_logits(4, 1000, seed=0)
    monkeypatch.setenv(_extension.DISABLE_ENV, "1")
    assert backend("cpu") == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a requested fallback does not warn
        forced = entropy_gate(x, 1.0)
    monkeypatch.setenv(_extension.DISABLE_ENV, "0")
    assert backend("cpu") == "cpp"
    compiled = entropy_gate(x, 1.0)
    torch.testing.assert_close(forced.entropy, compiled.entropy, atol=1e-4, rtol=0)


def test_missing_extension_warns_once_and_falls_back(monkeypatch) -> None:
    monkeypatch.delenv(_extension.DISABLE_ENV, raising=False)
    monkeypatch.setattr(_extension, "load_extension", lambda: None)
    _extension._warn_once.cache_clear()
    assert backend() == "torch" and backend("cpu") == "torch"
    x = make_logits(2, 100, seed=1)
    with pytest.warns(RuntimeWarning, match="not built"):
        res = entropy_gate(x, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        entropy_gate(x, 1.0)  # second call: silent
    want = entropy_gate_reference(x, 1.0)
    assert torch.equal(res.entropy, want.entropy)
    _extension._warn_once.cache_clear()


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((torch.zeros(3), 1.0), EagerError, r"\[B, V\]"),
        ((torch.zeros(2, 3, dtype=torch.float64), 1.0), EagerError, "float32, bfloat16 or float16"),
        ((torch.zeros(2, 0), 1.0), EagerError, "no vocabulary"),
        ((torch.zeros(2, 3), 1.0, 0), RequestError, "top_k"),
        ((torch.zeros(2, 3), 1.0, 5, "mean"), RequestError, "kind"),
        ((torch.zeros(2, 3), torch.zeros(3)), RequestError, "threshold"),
        ((torch.zeros(2, 3), "high"), RequestError, "threshold"),
    ],
)
def test_bad_arguments_name_what_is_wrong(args, error, match) -> None:
    with pytest.raises(error, match=match):
        entropy_gate(*args)


def test_reference_closed_forms() -> None:
    vocab = 1000
    x = torch.zeros(3, vocab, dtype=torch.float64)
    x[1, 7] = 1e4                     # one-hot
    x[2, :] = float("-inf")
    x[2, :2] = math.log(3.0)          # p = 1/2, 1/2
    res = entropy_gate_reference(x.float(), 0.5, top_k=10, compute_dtype=torch.float64)
    assert res.entropy.tolist() == pytest.approx([math.log(vocab), 0.0, math.log(2)], abs=1e-6)
    assert res.entropy_topk.tolist() == pytest.approx([math.log(10), 0.0, math.log(2)], abs=1e-6)
    assert res.logsumexp.tolist() == pytest.approx([math.log(vocab), 1e4, math.log(6)], rel=1e-6)
    assert res.top2_logprobs[2].tolist() == pytest.approx([-math.log(2)] * 2, abs=1e-6)
    assert res.top2_ids[1, 0] == 7
    assert res.branch.tolist() == [True, False, True]
