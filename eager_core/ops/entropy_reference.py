"""Pure-PyTorch reference of the fused entropy gate.

It is three things at once: the fallback when the compiled extension is missing, the baseline the
benchmark measures against, and (with compute_dtype=torch.float64) the oracle of the tests. It
follows exactly the conventions of the compiled kernels, documented in entropy_gate.py:
  * a row holding NaN or +inf is flagged in has_nan, its branch is False and its float outputs
    are NaN;
  * a row of only -inf has logsumexp -inf, entropies 0, top-2 log-probs -inf, branch False;
  * top2 of a one-column row pads the second slot with id -1 and log-prob -inf.
Everything is computed relative to the row max (x - m), so logits of magnitude 1e30 lose nothing
to the subtraction x - logsumexp.
"""

from __future__ import annotations

import torch

from eager_core.ops.entropy_result import EntropyGateResult


def _entropy_of(shifted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(entropy, log S) of rows of logits already shifted so that each row's max is 0."""
    log_s = torch.logsumexp(shifted, dim=-1)
    logp = shifted - log_s.unsqueeze(-1)
    p = logp.exp()
    # A -inf logit has p = 0 and logp = -inf: its term is 0, not 0 * -inf.
    h = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)
    return h.clamp_min(0.0), log_s


def entropy_gate_reference(
    logits: torch.Tensor,
    threshold: float | torch.Tensor,
    top_k: int = 20,
    kind: str = "topk",
    compute_dtype: torch.dtype = torch.float32,
    return_topk: int = 0,
) -> EntropyGateResult:
    """The entropy gate in plain PyTorch ops (log-softmax, topk, sums); see entropy_gate().

    Arguments are assumed validated by entropy_gate(). compute_dtype sets the precision of
    the arithmetic (float64 for a test oracle); outputs are float32 / int64 / bool.
    """
    x = logits.to(compute_dtype)
    n_rows, vocab = x.shape
    bad = torch.isnan(x).any(-1) | (x == float("inf")).any(-1)
    m = x.amax(-1)
    empty = (m == float("-inf")) & ~bad
    m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    shifted = x - m_safe.unsqueeze(-1)
    h, log_s = _entropy_of(shifted)

    if top_k >= vocab:
        hk = h
    else:
        top_vals = torch.topk(shifted, top_k, dim=-1).values
        hk, _ = _entropy_of(top_vals)

    # Ranks come from the logits themselves: x - max rounds, so two logits a few ulps apart can
    # become equal shifted values and swap places (a randomized test found one, 3 ulps apart).
    n2 = min(2, vocab)
    ids2 = torch.topk(x, n2, dim=-1).indices
    logp2 = shifted.gather(-1, ids2) - log_s.unsqueeze(-1)
    if n2 == 1:
        ids2 = torch.cat([ids2, torch.full_like(ids2, -1)], dim=-1)
        logp2 = torch.cat([logp2, torch.full_like(logp2, float("-inf"))], dim=-1)

    # The returned list: a stable sort puts equal logits in id order, as the kernels do.
    r = min(return_topk, vocab)
    topk_ids = torch.sort(x, dim=-1, descending=True, stable=True).indices[:, :r]
    topk_logp = shifted.gather(-1, topk_ids) - log_s.unsqueeze(-1)
    if r < return_topk:
        pad = return_topk - r
        topk_ids = torch.cat([topk_ids, torch.full((n_rows, pad), -1, dtype=topk_ids.dtype, device=x.device)], -1)
        topk_logp = torch.cat([topk_logp, torch.full((n_rows, pad), float("-inf"), dtype=x.dtype, device=x.device)], -1)
    topk_logp = torch.where(empty.unsqueeze(-1), torch.full_like(topk_logp, float("-inf")), topk_logp)
    topk_logp = torch.where(bad.unsqueeze(-1), torch.full_like(topk_logp, float("nan")), topk_logp)

    lse = m_safe + log_s
    zero = torch.zeros_like(h)
    h = torch.where(empty, zero, h)
    hk = torch.where(empty, zero, hk)
    lse = torch.where(empty, torch.full_like(lse, float("-inf")), lse)
    logp2 = torch.where(empty.unsqueeze(-1), torch.full_like(logp2, float("-inf")), logp2)

    if isinstance(threshold, torch.Tensor):
        thr = threshold.to(device=x.device, dtype=torch.float32).reshape(-1).expand(n_rows)
    else:
        thr = torch.full((n_rows,), float(threshold), dtype=torch.float32, device=x.device)
    chosen = (hk if kind == "topk" else h).float()
    branch = ~bad & ~empty & (chosen > thr)

    nan = torch.full_like(h, float("nan"))
    h = torch.where(bad, nan, h)
    hk = torch.where(bad, nan, hk)
    lse = torch.where(bad, nan, lse)
    logp2 = torch.where(bad.unsqueeze(-1), torch.full_like(logp2, float("nan")), logp2)
    return EntropyGateResult(
        entropy=h.float(),
        entropy_topk=hk.float(),
        top2_ids=ids2.long(),
        top2_logprobs=logp2.float(),
        logsumexp=lse.float(),
        branch=branch,
        has_nan=bad,
        topk_ids=topk_ids.long(),
        topk_logprobs=topk_logp.float(),
    )
