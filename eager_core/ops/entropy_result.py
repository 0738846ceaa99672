"""The result type of the entropy gate (shared by the compiled op and the reference)."""

from __future__ import annotations

from typing import NamedTuple

import torch


class EntropyGateResult(NamedTuple):
    """Per-row outputs of entropy_gate for logits [B, V]. All on the logits' device.

    entropy        [B] float32  Shannon entropy (nats) of softmax(logits), untempered
    entropy_topk   [B] float32  entropy of the top_k tokens' probabilities renormalised
                                (equal to entropy when top_k >= V)
    top2_ids       [B, 2] int64 the two most likely token ids, best first; equal logits
                                resolve to the lower id in the compiled kernels; -1 pads V = 1
    top2_logprobs  [B, 2] float32 their log-probabilities under the full distribution
                                (-inf for the -1 pad)
    logsumexp      [B] float32  log of the softmax normaliser
    branch         [B] bool     chosen entropy (kind) > threshold; False for has_nan rows and
                                rows of only -inf
    has_nan        [B] bool     the row holds a NaN or +inf logit; its float outputs are NaN
    topk_ids       [B, r] int64 the r = return_topk most likely ids, best first (ties: lower id
                                first in every backend); -1 pads a vocabulary smaller than r
    topk_logprobs  [B, r] float32 their log-probabilities under the full distribution, from the
                                same pass (-inf for the pad, NaN for has_nan rows)
    """

    entropy: torch.Tensor
    entropy_topk: torch.Tensor
    top2_ids: torch.Tensor
    top2_logprobs: torch.Tensor
    logsumexp: torch.Tensor
    branch: torch.Tensor
    has_nan: torch.Tensor
    topk_ids: torch.Tensor
    topk_logprobs: torch.Tensor
